"""`AbstractMicroscope`: a differentiable forward model written for one scan position."""

import abc
from collections.abc import Collection
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Int

from .._validate import is_concrete
from ..optics._fft import fft2u
from ..optics._probe import AbstractProbe
from ..optics._sample import SampleFunction
from ..optics._scan import (
    patch_corner,
    positions_outside,
    shift_probe,
    shift_probe_spectrum,
    split_corner,
    take_window,
)
from ._detector import DetectorResponse, refines_any

# Frames per block when a CPU predicts many frames (`AbstractMicroscope._frames`). Every frame
# in one vectorised call runs the FFTs of the whole scan out of cache: on the medium preset
# (400 frames of 128 x 128) the prediction took 3.6x the FFT floor that way and 2.1x in
# blocks of 16, and one product by `J^T J` 5.6x against 3.5x (`benchmarks/floor.py`'s floor,
# 2 cores). Accelerators take every frame at once.
_CPU_BLOCK = 16

# The `trainable=` names every microscope answers: its object, its probe's fields, its scan.
_COMMON_ALIASES: dict[str, str | tuple[str, ...]] = {
    "object": "sample.sample",
    "sample": "sample.sample",
    "probe": "probe.modes",
    "positions": "positions",
}


@eqx.filter_jit
def _largest_remainder(microscope: "AbstractMicroscope") -> Array:
    """The largest sub-pixel remainder of any position, in pixels (compiled once per microscope structure)."""
    return jnp.max(jnp.abs(jax.vmap(microscope.locate)(microscope.positions)[1]), initial=0.0)


def probe_on_sample(probe: AbstractProbe, sample: SampleFunction) -> AbstractProbe:
    """`probe` as a microscope keeps it: without a pitch of its own (the sample's is the one).

    Every microscope's constructor calls this, so the sample-plane pitch is stored once,
    as `sample.dx`. A probe given with a pitch must agree with the sample's (checked on
    concrete values; raises `ValueError` naming both).
    """
    if probe.dx is not None and is_concrete(probe.dx) and is_concrete(sample.dx):
        if not np.allclose(np.asarray(probe.dx), np.asarray(sample.dx), rtol=1e-5, atol=0):
            raise ValueError(
                f"`probe.dx` and `sample.dx` must be equal (the probe multiplies the sample pixel by pixel), "
                f"got {np.asarray(probe.dx).tolist()} and {np.asarray(sample.dx).tolist()}"
            )
    return probe.without_pitch()


class AbstractMicroscope(eqx.Module):
    """A ptychographic microscope: probe, sample, scan positions and the optics after the sample.

    Subclasses declare the linear map from the exit plane to the detector
    (`propagate`) and its adjoint (`backpropagate`); everything else — where the
    probe sits, the exit wave, the predicted intensity — is defined here once for a
    **single** scan position. Batches use `jax.vmap`; PIE engines `lax.scan` over the
    same functions.

    Every array field of a microscope (the object, the probe, positions, distances,
    element parameters) can be selected as trainable by the engines.

    `detector` is an optional `DetectorResponse` (a background and per-frame scales)
    applied to the coherent intensity in `intensity`; `None` (every microscope's
    default) predicts the coherent intensity itself.
    """

    probe: eqx.AbstractVar[AbstractProbe]
    sample: eqx.AbstractVar[SampleFunction]
    positions: eqx.AbstractVar[Float[Array, "npos 2"]]
    detector: eqx.AbstractVar[DetectorResponse | None]

    @abc.abstractmethod
    def propagate(
        self, exit_waves: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]
    ) -> Complex[Array, "modes dety detx"]:
        """Linear map from exit waves to detector fields.

        `exit_waves` are computed in the frame of the whole-pixel patch with the probe
        moved by `subpixel` (see `exit_waves`); a microscope whose detector intensity is
        not shift-invariant must move its result back by `-subpixel`.
        """

    @abc.abstractmethod
    def backpropagate(
        self, detector_fields: Complex[Array, "modes dety detx"], subpixel: Float[Array, "2"]
    ) -> Complex[Array, "modes y x"]:
        """The adjoint of `propagate` (for unitary optics, its inverse)."""

    @property
    @abc.abstractmethod
    def detector_shape(self) -> tuple[int, int]:
        """The camera's `(H, W)` in pixels."""

    # ---- concrete, shared by every microscope (never overridden) -------------------------

    @property
    def probe_shape(self) -> tuple[int, int]:
        """`(H, W)` of the probe grid in the sample plane."""
        return self.probe.fields().shape[-2:]

    @property
    def num_positions(self) -> int:
        """Number of scan positions."""
        return self.positions.shape[0]

    def locate(self, position: Float[Array, "2"]) -> tuple[Int[Array, "2"], Float[Array, "2"]]:
        """Whole-pixel patch corner `(x, y)` and the sub-pixel remainder for one position."""
        corner = patch_corner(position, self.sample.dx, self.sample.shape, self.probe_shape)
        return split_corner(corner)

    def split_shift(
        self, subpixel: Float[Array, "*npos 2"]
    ) -> tuple[Float[Array, "*npos 2"], Float[Array, "*npos 2"] | None]:
        """Who takes the sub-pixel remainder `subpixel` from `locate`: `(probe_shift, sample_shift)`.

        The probe (`(subpixel, None)`), unless the sample is `periodic`: then the sample
        is moved (`take_window`) and the probe stays on its grid (`(0, subpixel)`), so the
        exit wave is in the probe's frame and `propagate` gets a zero remainder.
        """
        if self.sample.periodic:
            return jnp.zeros_like(subpixel), subpixel
        return subpixel, None

    def windows(self) -> tuple[Int[Array, "npos 2"], Float[Array, "npos 2"] | None]:
        """Every position's window on the sample: whole-pixel corners and the sample's shifts.

        For `take_window` / `put_window` (`None` shifts unless the sample is periodic).
        """
        corners, subpixel = jax.vmap(self.locate)(self.positions)
        return corners, self.split_shift(subpixel)[1]

    def exit_waves(
        self,
        position: Float[Array, "2"],
        probe_spectrum: Complex[Array, "modes y x"] | None = None,
        *,
        on_grid: bool = False,
    ) -> Complex[Array, "modes y x"]:
        """Probe modes, moved by the sub-pixel remainder, times the whole-pixel object patch.

        For a `periodic` sample: the probe modes times the window of the sample moved by
        the remainder (`split_shift`). `probe_spectrum`, when given, is
        `fft2u(probe.fields())`, transformed once by a caller that needs many positions
        (`__call__`, `predict`): the move then costs one FFT per position instead of two.
        `on_grid=True` (see `on_grid`) leaves the probe where it is: no FFT at all.
        """
        corner, subpixel = self.locate(position)
        probe_shift, sample_shift = self.split_shift(subpixel)
        patch = take_window(self.sample.sample, corner, sample_shift, self.probe_shape)
        if sample_shift is not None or on_grid:
            return self.probe.fields() * patch[None]
        if probe_spectrum is None:
            return shift_probe(self.probe.fields(), probe_shift) * patch[None]
        return shift_probe_spectrum(probe_spectrum, probe_shift) * patch[None]

    def intensity(
        self,
        position: Float[Array, "2"],
        index: Int[Array, ""] | None = None,
        probe_spectrum: Complex[Array, "modes y x"] | None = None,
        *,
        on_grid: bool = False,
    ) -> Float[Array, "dety detx"]:
        """Predicted detector intensity at one scan position: the one forward model.

        The incoherent sum over modes `sum_m |Psi_m|**2`, then the `detector` response
        (`s_index * ... + background`) when the microscope has one. `index` is the frame's
        number in the scan, needed only by per-frame scales (`detector.frame_scale`);
        `probe_spectrum` and `on_grid` as for `exit_waves`.
        """
        _, subpixel = self.locate(position)
        probe_shift = self.split_shift(subpixel)[0]
        if on_grid:
            probe_shift = jnp.zeros_like(probe_shift)
        fields = self.propagate(self.exit_waves(position, probe_spectrum, on_grid=on_grid), probe_shift)
        coherent = jnp.sum(fields.real**2 + fields.imag**2, axis=0)
        if self.detector is None:
            return coherent
        return self.detector(coherent, index)

    def predict(
        self, indices: Int[Array, " batch"] | None = None, *, on_grid: bool = False
    ) -> Float[Array, "batch dety detx"]:
        """Predicted intensities of the frames `indices` (every frame for `None`), `(batch, H, W)`.

        `on_grid` as for `__call__`.
        """
        if indices is None:
            return self(on_grid=on_grid)
        return self._frames(self.positions[indices], indices, on_grid)

    def __call__(self, *, on_grid: bool = False) -> Float[Array, "npos dety detx"]:
        """Predicted intensities at every scan position, `(npos, H, W)`.

        `on_grid=True` skips the sub-pixel move of the probe (one FFT per position): only
        for a caller that has checked, on the host, that every position lies on the
        sample's pixel grid and stays there (`on_grid`; the engines check it once, when
        neither the positions nor the object pixel are refined). Otherwise the prediction
        is the same.
        """
        return self._frames(self.positions, jnp.arange(self.num_positions), on_grid)

    def on_grid(self, tolerance: float = 1e-3) -> bool:
        """Whether every position lies within `tolerance` pixels of the sample's grid (on the host).

        Then the sub-pixel moves of the probe are below `tolerance` pixels, and a caller
        may skip them (`__call__(on_grid=True)`), as the PIE engines do. A `periodic`
        sample takes the remainder itself and is never on the grid in this sense, nor is
        a microscope whose positions are traced.
        """
        if self.sample.periodic or not (is_concrete(self.positions) and is_concrete(self.sample.dx)):
            return False  # Traced (e.g. under `eval_shape`): nothing to decide on.
        return bool(float(_largest_remainder(self)) <= tolerance)

    def _frames(
        self, positions: Float[Array, "batch 2"], indices: Int[Array, " batch"], on_grid: bool = False
    ) -> Float[Array, "batch y x"]:
        """`intensity` at each of `positions` (frame numbers `indices`), the probe transformed once.

        On a CPU the frames go in blocks of `_CPU_BLOCK` (a loop over blocks, each block
        vectorised), elsewhere all at once: see `_CPU_BLOCK`.
        """
        spectrum = None if on_grid else fft2u(self.probe.fields())
        one = lambda position, index: self.intensity(position, index, spectrum, on_grid=on_grid)  # noqa: E731
        if jax.default_backend() == "cpu" and positions.shape[0] > _CPU_BLOCK:
            return jax.lax.map(lambda pair: one(*pair), (positions, indices), batch_size=_CPU_BLOCK)
        return jax.vmap(one)(positions, indices)

    @property
    def fourier_detector(self) -> bool:
        """Whether the detector field is the centred unitary DFT of the exit wave (`fft2c`).

        Such a microscope's geometry is its object pixel alone (`wavelength * distance /
        (N * camera_pixel)`), so refining that pixel refines the distance
        (`trainable=["distance"]`), and engines may take a faster equivalent path (the PIE
        family: an uncentred FFT with a checkerboard). `True` for `FarFieldMicroscope`
        without a propagator; `False` (the default) elsewhere. A subclass that changes
        `propagate` must answer for itself.
        """
        return False

    @property
    def phase_ramp_gauge(self) -> bool:
        """Whether the engines hold the phase-ramp gauge of this microscope.

        `O exp(ik.r)` with `P exp(-ik.r)` changes every exit wave by a constant phase
        only, so no detector sees it, and joint refinement of object and probe can drift
        along it. `True` where the engines pin it by the probe's far-field centroid
        (`janssen.invert`'s `fix_phase_ramp`, the PIE engines' `fix_gauge`): a far-field
        detector, where the drift was measured. `False` (the default) elsewhere.
        """
        return False

    def trainable_aliases(self) -> dict[str, str | tuple[str, ...]]:
        """Short `trainable=` names this microscope answers, mapped to dotted leaf paths.

        Every microscope's `"object"` / `"sample"` (`sample.sample`), `"probe"`
        (`probe.modes`) and `"positions"`; the names of its optics (`optics_aliases`);
        and the detector's `"background"` and `"frame_scale"` (refinable once the
        microscope has a `detector` with that term). A name maps to one path or a tuple.
        """
        detector = {name: f"detector.{path}" for name, path in DetectorResponse.aliases.items()}
        return {**_COMMON_ALIASES, **self.optics_aliases(), **detector}

    def optics_aliases(self) -> dict[str, str | tuple[str, ...]]:
        """The `trainable=` names of the optics between the exit wave and the camera.

        Each microscope declares its own (`"distance"`, `"zoom"`, `"aperture"`…), mapped to
        dotted leaf paths; the engines know none of them. None by default.
        """
        return {}

    def scale_leaves(self) -> tuple[str, ...]:
        """Dotted paths of the leaves that set the scale of the diffraction pattern against the scan.

        Refined together with the object, such a leaf (a distance, a magnification) and a
        uniform dilation of the scan trade off against each other: the dilation is a gauge
        freedom of refined positions, which the engines hold (`scan_gauges`). None by
        default; a microscope whose optics set the scale declares its leaves here.
        """
        return ()

    def scan_gauges(self, refined: Collection[str]) -> tuple[bool, bool]:
        """Which motions of the scan are gauge freedoms when the leaves `refined` are refined.

        `refined` holds dotted leaf paths, the positions among them. Returns
        `(translation, dilation)`: a common shift is one when the object is refined too
        (it moves with the scan; with a known object the shift is measured). A dilation
        about the scan's centre is one when the object and one of `scale_leaves` are
        refined, and whenever the object pixel `sample.dx` is: object and probe are arrays
        of pixels, so the positions enter only as `positions / sample.dx`.
        """
        refined = set(refined)
        translation = "sample.sample" in refined
        dilation = "sample.dx" in refined or (translation and not refined.isdisjoint(self.scale_leaves()))
        return translation, dilation

    def camera_distance(self, wavelength: float, camera_pixel_size: Float[Array, "2"]) -> float | None:
        """The sample-to-camera distance this microscope models, in metres, or `None` where it models none.

        Host side, on concrete values (for result files): the refined distance where the
        microscope carries one. `wavelength` and `camera_pixel_size` are the data's, for
        microscopes whose geometry is their object pixel. `None` (the default): the data's
        own distance holds.
        """
        del wavelength, camera_pixel_size
        return None

    def separable_leaves(self) -> dict[str, tuple[int, ...]]:
        """Leaves each of whose elements moves only its own entries of the predicted frames.

        Maps a dotted leaf path to the axes of the `(npos, H, W)` prediction that the
        leaf's axes index: element `k` of the leaf changes only the predictions whose
        indices along those axes are `k`. The detector's terms are such leaves (a
        background map `(1, 2)`, a scalar background `()`, per-frame scales `(0,)`), so one
        product of the Jacobian with a tangent of ones gives the exact diagonal of `J^T J`
        (used by `GaussNewton`'s scaling).
        """
        if self.detector is None:
            return {}
        return {f"detector.{name}": axes for name, axes in self.detector.separable_axes().items()}

    def project_detector(self, trainable: Any) -> "AbstractMicroscope":
        """This microscope with its refined detector terms back in their domains (after an engine's step).

        A refined background is clipped at 0. Refined frame scales are divided by their mean
        `c` and, when the probe or the object is refined too, the probe's fields (else the
        object) are multiplied by `sqrt(c)`: the predictions do not change, and the gauge
        between a common factor of every frame and the probe's power is held at a mean
        scale of 1. `trainable` is the boolean filter spec of the run.
        """
        if self.detector is None or not refines_any(trainable.detector):
            return self
        probe, obj = refines_any(trainable.probe), refines_any(trainable.sample.sample)
        # With object and probe known, the scales' mean is measured: it is kept.
        detector, factor = self.detector.projected(trainable.detector, hold_mean=probe or obj)
        new = eqx.tree_at(lambda m: m.detector, self, detector)
        if factor is None:
            return new
        root = jnp.sqrt(factor)
        if probe:
            fields = self.probe.fields()
            return eqx.tree_at(lambda m: m.probe, new, self.probe.with_fields(fields * root.astype(fields.real.dtype)))
        sample = self.sample.sample
        return eqx.tree_at(lambda m: m.sample.sample, new, sample * root.astype(sample.real.dtype))

    def with_pixel_size(self, dx: Float[Array, "2"]) -> "AbstractMicroscope":
        """This microscope with the sample-plane pixel `dx` (metres, `(x, y)`), in the sample's dtype.

        The pitch is stored once, as `sample.dx` (the constructors keep the probe without
        one: `probe_on_sample`). A probe swapped in later with a pitch of its own (e.g. by
        `eqx.tree_at`) is set too, so that `check_geometry` still finds them equal. The geometry moves
        (`janssen.invert.dilate_object`, `hold_scan_scale`) build on this.
        """
        dx = jnp.asarray(dx)
        new = eqx.tree_at(lambda m: m.sample.dx, self, dx.astype(self.sample.dx.dtype))
        if self.probe.dx is None:
            return new
        return eqx.tree_at(lambda m: m.probe.dx, new, dx.astype(self.probe.dx.dtype))

    def sample_plane_probe(self) -> AbstractProbe:
        """The probe on its own, with the sample-plane pitch (`sample.dx`) it takes in this microscope.

        Inside a microscope the probe has no pitch of its own (the forward model reads
        `sample.dx` only); use this to propagate, plot or save it apart from the microscope.
        """
        return eqx.tree_at(lambda p: p.dx, self.probe.without_pitch(), self.sample.dx, is_leaf=lambda x: x is None)

    def check_detector(self) -> None:
        """Raise `ValueError` unless `detector` fits the camera and the scan (shapes only: safe under jit)."""
        if self.detector is not None:
            self.detector.check_fits(self.detector_shape, self.num_positions)

    def check_geometry(self) -> None:
        """Raise `ValueError` if probe and sample disagree or a patch runs off a non-periodic object.

        Runs on concrete values only (constructors call it; inside `jit` it is a no-op).
        """
        if not (is_concrete(self.positions) and is_concrete(self.sample.dx)):
            return
        if self.positions.ndim != 2 or self.positions.shape[1] != 2:
            raise ValueError(f"`positions` must have shape (npos, 2) with columns (x, y), got {self.positions.shape}")
        probe_on_sample(self.probe, self.sample)  # a probe swapped in with its own pitch must agree
        sy, sx = self.sample.shape
        py, px = self.probe_shape
        if sy < py or sx < px:
            raise ValueError(f"`sample` {(sy, sx)} must be at least as large as the probe {(py, px)}")
        if not np.all(np.isfinite(np.asarray(self.positions))):
            raise ValueError("`positions` must be finite, got NaN or infinite values")
        bad = positions_outside(
            self.positions, self.sample.dx, self.sample.shape, self.probe_shape, self.sample.periodic
        )
        if bad.size:
            raise ValueError(
                f"`positions`: {bad.size} scan position(s) put the probe partly off the object "
                f"(first: index {int(bad[0])} at {np.asarray(self.positions[bad[0]]).tolist()} m); "
                f"the object is {self.sample.shape} pixels of {np.asarray(self.sample.dx).tolist()} m. "
                f"Pad the object (e.g. `janssen.invert.init_object`) instead of relying on clamping."
            )
