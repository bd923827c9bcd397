"""The seed API's record types: parameters, reconstructions, ePIE inputs, Gauss-Newton state.

These are the types that scripts written for the original janssen pass around. Here
they are `eqx.Module`s that validate themselves at construction. The reconstruction
history is kept as sparse snapshots (every `save_every` iterations) plus the full loss
history, not as one array per iteration.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Int, Real

from ..._custom_types import PairLike, ScalarLike
from ..._validate import (
    check_finite,
    check_nonnegative,
    check_positive,
    is_concrete,
    pair,
    real_array,
)
from ...optics._sample import SampleFunction
from ...optics._wavefront import OpticalWavefront
from .._solution import Solution

#: `(min, max)` bounds: an array, or nested tuples/lists of numbers.
BoundsLike: TypeAlias = Real[ArrayLike, "..."] | Sequence[Any]

# The original stored these as integer codes; the position in each tuple is that code.
LOSS_CODES = ("mse", "mae", "poisson")
LOSS_NAMES = (*LOSS_CODES, "rmse", "amplitude", "intensity")
OPTIMIZER_CODES = ("adam", "adagrad", "rmsprop", "sgd")


def _named_choice(name: str, value, codes: tuple[str, ...], names: tuple[str, ...]) -> str:
    """A lower-case name from a name or from the original janssen's integer code."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(codes):
            return codes[int(value)]
        raise ValueError(f"`{name}` as an integer code must lie in [0, {len(codes) - 1}] ({codes}), got {value}")
    if isinstance(value, str) and value.lower() in names:
        return value.lower()
    raise ValueError(f"`{name}` must be one of {names} or an integer code into {codes}, got {value!r}")


def _count(name: str, value, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _bounds(name: str, value, shape: tuple[int, ...]) -> Float[Array, "..."] | None:
    """`(min, max)` bounds as an array of `shape`, or None (no bounds)."""
    if value is None:
        return None
    arr = real_array(name, value)
    if shape == (2, 2) and arr.shape == (2,):
        # One (min, max) pair applies to both the x and the y coordinate.
        arr = jnp.stack([jnp.full(2, arr[0]), jnp.full(2, arr[1])])
    if arr.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape} (rows min, max), got shape {arr.shape}")
    return arr


def _check_bounds(name: str, arr) -> None:
    """Bounds may be infinite (unbounded side) but not NaN, and need min <= max."""
    if arr is None or not is_concrete(arr):
        return
    values = np.asarray(arr)
    if np.any(np.isnan(values)):
        raise ValueError(f"`{name}` must not contain NaN, got {values.tolist()}")
    if np.any(values[0] > values[1]):
        raise ValueError(f"`{name}` must have min <= max, got min {values[0].tolist()} > max {values[1].tolist()}")


_BOUND_FIELDS = ("zoom_factor_bounds", "aperture_diameter_bounds", "travel_distance_bounds", "aperture_center_bounds")


class PtychographyParams(eqx.Module):
    """Settings of one call to a seed reconstruction function (`simple_microscope_epie`, ...).

    **Arguments:**

    - `camera_pixel_size`: detector pixel in metres, scalar or `(x, y)`, > 0.
    - `num_iterations`: iterations (sweeps over all positions) per call, >= 0.
    - `learning_rate`: step size, > 0. For the PIE functions it is the object step
      (values near 1 are normal); for gradient optimisers it is the optimiser's rate.
      The default, 1e-3, is the original's and suits gradient optimisers.
    - `loss_type`: `"mse"`, `"mae"`, `"poisson"` (the original's codes 0, 1, 2, also
      accepted), `"rmse"`, `"amplitude"` or `"intensity"`; stored as its name.
    - `optimizer_type`: `"adam"`, `"adagrad"`, `"rmsprop"` or `"sgd"` (or the codes 0-3).
    - `zoom_factor_bounds`, `aperture_diameter_bounds`, `travel_distance_bounds`:
      `(min, max)`, or `None` (the default) for no bounds. An infinite side is allowed.
    - `aperture_center_bounds`: `[[min_x, min_y], [max_x, max_y]]` in metres, a single
      `(min, max)` pair for both coordinates, or `None`.
    - `save_every`: keep a snapshot of the sample and probe every so many iterations
      (0: none). Not in the original, which kept every iteration.
    """

    camera_pixel_size: Float[Array, "2"]
    num_iterations: int = eqx.field(static=True)
    learning_rate: Float[Array, ""]
    loss_type: str = eqx.field(static=True)
    optimizer_type: str = eqx.field(static=True)
    zoom_factor_bounds: Float[Array, "2"] | None
    aperture_diameter_bounds: Float[Array, "2"] | None
    travel_distance_bounds: Float[Array, "2"] | None
    aperture_center_bounds: Float[Array, "2 2"] | None
    save_every: int = eqx.field(static=True)

    def __init__(
        self,
        camera_pixel_size: PairLike,
        num_iterations: int,
        learning_rate: ScalarLike = 1e-3,
        loss_type: str | int = "mse",
        optimizer_type: str | int = "adam",
        zoom_factor_bounds: BoundsLike | None = None,
        aperture_diameter_bounds: BoundsLike | None = None,
        travel_distance_bounds: BoundsLike | None = None,
        aperture_center_bounds: BoundsLike | None = None,
        *,
        save_every: int = 10,
    ):
        self.camera_pixel_size = pair("camera_pixel_size", camera_pixel_size)
        self.num_iterations = _count("num_iterations", num_iterations)
        self.learning_rate = real_array("learning_rate", learning_rate, shape=())
        self.loss_type = _named_choice("loss_type", loss_type, LOSS_CODES, LOSS_NAMES)
        self.optimizer_type = _named_choice("optimizer_type", optimizer_type, OPTIMIZER_CODES, OPTIMIZER_CODES)
        self.zoom_factor_bounds = _bounds("zoom_factor_bounds", zoom_factor_bounds, (2,))
        self.aperture_diameter_bounds = _bounds("aperture_diameter_bounds", aperture_diameter_bounds, (2,))
        self.travel_distance_bounds = _bounds("travel_distance_bounds", travel_distance_bounds, (2,))
        self.aperture_center_bounds = _bounds("aperture_center_bounds", aperture_center_bounds, (2, 2))
        self.save_every = _count("save_every", save_every)

    def __check_init__(self):
        check_positive("camera_pixel_size", self.camera_pixel_size)
        check_positive("learning_rate", self.learning_rate)
        for name in _BOUND_FIELDS:
            _check_bounds(name, getattr(self, name))


class PtychographyReconstruction(eqx.Module):
    """A reconstruction in progress: what the seed functions take, return and resume from.

    Pass it back to the function that produced it to continue: when `solution` holds
    that engine's state, N + M iterations in two calls give the same result as N + M
    in one (the engine state, iteration counter and random key carry over).

    **Arguments:**

    - `sample`: the object estimate on the field of view (FOV).
    - `lightwave`: the probe estimate, on the probe grid, with the sample's pitch.
    - `translated_positions`: `(npos, 2)` scan positions `(x, y)` in metres relative to
      the FOV's centre pixel (janssen's microscope convention; see
      `compute_fov_and_positions` for the same positions in FOV pixels).
    - `zoom_factor`, `aperture_diameter`, `travel_distance`: the `SimpleMicroscope`'s
      optics (metres), > 0.
    - `aperture_center`: `(x, y)` in metres in the zoomed plane; `None` means on axis.
    - `losses`: `(rows, 2)` history, each row `(iteration, loss)`; the loss is the RMS
      amplitude residual (`sqrt(counts)`) over all frames and valid pixels.
    - `snapshots`: `(iteration, SampleFunction, OpticalWavefront)` triples kept every
      `save_every` iterations.
    - `solution`: the engine's `Solution` from the last call (None before any), used to
      resume exactly.
    - `step_scales`: `(name, size)` pairs: the size of each part that
      `simple_microscope_optim` scaled its steps by in the run `solution` continues
      (empty after any other function). A resumed run keeps them, so that its steps are
      those of an uninterrupted run.
    """

    sample: SampleFunction
    lightwave: OpticalWavefront
    translated_positions: Float[Array, "npos 2"]
    zoom_factor: Float[Array, ""]
    aperture_diameter: Float[Array, ""]
    aperture_center: Float[Array, "2"]
    travel_distance: Float[Array, ""]
    losses: Float[Array, "rows 2"]
    snapshots: tuple = ()
    solution: Solution | None = None
    step_scales: tuple[tuple[str, float], ...] = eqx.field(default=(), static=True)

    def __init__(
        self,
        sample: SampleFunction,
        lightwave: OpticalWavefront,
        translated_positions: Real[ArrayLike, "npos 2"],
        zoom_factor: ScalarLike,
        aperture_diameter: ScalarLike,
        aperture_center: PairLike | None,
        travel_distance: ScalarLike,
        losses: Real[ArrayLike, "rows 2"],
        snapshots: tuple = (),
        solution: Solution | None = None,
        step_scales: Sequence[tuple[str, float]] = (),
    ):
        self.sample = sample
        self.lightwave = lightwave
        self.translated_positions = real_array("translated_positions", translated_positions)
        self.zoom_factor = real_array("zoom_factor", zoom_factor, shape=())
        self.aperture_diameter = real_array("aperture_diameter", aperture_diameter, shape=())
        center = jnp.zeros(2) if aperture_center is None else aperture_center
        self.aperture_center = pair("aperture_center", center)
        self.travel_distance = real_array("travel_distance", travel_distance, shape=())
        self.losses = real_array("losses", losses)
        self.snapshots = tuple(snapshots)
        self.solution = solution
        self.step_scales = tuple((str(name), float(size)) for name, size in step_scales)

    def __check_init__(self):
        if self.translated_positions.ndim != 2 or self.translated_positions.shape[1] != 2:
            raise ValueError(
                f"`translated_positions` must have shape (npos, 2), got shape {self.translated_positions.shape}"
            )
        if self.losses.ndim != 2 or self.losses.shape[1] != 2:
            raise ValueError(f"`losses` must have shape (rows, 2) of (iteration, loss), got shape {self.losses.shape}")
        for name in ("zoom_factor", "aperture_diameter", "travel_distance"):
            check_positive(name, getattr(self, name))
        check_finite("translated_positions", self.translated_positions)
        check_finite("aperture_center", self.aperture_center)
        if is_concrete(self.sample.dx) and is_concrete(self.lightwave.dx):
            if not np.allclose(np.asarray(self.sample.dx), np.asarray(self.lightwave.dx), rtol=1e-5, atol=0):
                raise ValueError(
                    "`lightwave.dx` must equal `sample.dx` (the probe multiplies the sample pixel by pixel), "
                    f"got {np.asarray(self.lightwave.dx).tolist()} and {np.asarray(self.sample.dx).tolist()}"
                )

    @property
    def iteration(self) -> int:
        """The last iteration recorded in `losses` (0 for a fresh start)."""
        return int(self.losses[-1, 0]) if self.losses.shape[0] else 0

    @property
    def intermediate_samples(self) -> Complex[Array, "Y X snapshots"]:
        """The snapshots' samples stacked on a last axis (the original's layout)."""
        return jnp.stack([s.sample for _, s, _ in self.snapshots], axis=-1)

    @property
    def intermediate_lightwaves(self) -> Complex[Array, "*modes y x snapshots"]:
        """The snapshots' probe fields stacked on a last axis (the original's layout)."""
        return jnp.stack([w.field for _, _, w in self.snapshots], axis=-1)

    @property
    def snapshot_iterations(self) -> Int[Array, " snapshots"]:
        """The iteration of each snapshot."""
        return jnp.asarray([i for i, _, _ in self.snapshots], dtype=jnp.int32)


class EpieData(eqx.Module):
    """The inputs `init_simple_epie` prepares for a PIE run, in pixel units.

    **Arguments:**

    - `diffraction_patterns`: `(npos, H, W)` measured intensities, as measured (janssen
      predicts camera pixels directly, so nothing is resampled).
    - `probe`: complex `(H, W)` starting probe on the camera-frame grid.
    - `sample`: complex `(Y, X)` starting object on the field of view.
    - `positions`: `(npos, 2)` scan positions `(x, y)` in pixels relative to the field
      of view's centre pixel `(X // 2, Y // 2)`.
    - `effective_dx`: sample-plane pixel `(x, y)` in metres.
    - `wavelength`: metres.
    - `original_camera_pixel_size`: the camera pixel `(x, y)` in metres.
    - `zoom_factor`: the microscope's magnification.
    """

    diffraction_patterns: Float[Array, "npos y x"]
    probe: Complex[Array, "y x"]
    sample: Complex[Array, "Y X"]
    positions: Float[Array, "npos 2"]
    effective_dx: Float[Array, "2"]
    wavelength: Float[Array, ""]
    original_camera_pixel_size: Float[Array, "2"]
    zoom_factor: Float[Array, ""]

    def __check_init__(self):
        npos = self.diffraction_patterns.shape[0]
        if self.positions.shape != (npos, 2):
            raise ValueError(f"`positions` must have shape ({npos}, 2), got shape {self.positions.shape}")
        if self.probe.shape != self.diffraction_patterns.shape[1:]:
            raise ValueError(
                f"`probe` must have the frame shape {self.diffraction_patterns.shape[1:]}, got {self.probe.shape}"
            )
        for name in ("effective_dx", "wavelength", "original_camera_pixel_size", "zoom_factor"):
            check_positive(name, getattr(self, name))
        check_nonnegative("diffraction_patterns", self.diffraction_patterns)


class GaussNewtonState(eqx.Module):
    """The state of a Gauss-Newton / Levenberg-Marquardt reconstruction between iterations.

    **Arguments:**

    - `sample`: the current object.
    - `probe`: the current probe.
    - `iteration`: iterations completed (0-d integer array).
    - `loss`: the current loss (0-d).
    - `damping`: the Levenberg-Marquardt damping, >= 0 (0-d).
    - `converged`: whether the stopping criterion has been met (0-d boolean).
    """

    sample: SampleFunction
    probe: OpticalWavefront
    iteration: Int[Array, ""]
    loss: Float[Array, ""]
    damping: Float[Array, ""]
    converged: Bool[Array, ""]

    def __check_init__(self):
        for name in ("iteration", "loss", "damping", "converged"):
            if jnp.shape(getattr(self, name)) != ():
                raise ValueError(f"`{name}` must be a 0-d array, got shape {jnp.shape(getattr(self, name))}")
        check_nonnegative("damping", self.damping)
