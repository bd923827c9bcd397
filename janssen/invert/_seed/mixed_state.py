"""The seed API for mixed-state (partially coherent) far-field ptychography.

The original janssen's mixed-state functions, rebuilt on janssen's own pieces: the
forward model is `janssen.scopes.FarFieldMicroscope` with a
`janssen.optics.MixedStateProbe`, the losses are `janssen.invert`'s noise models, and
every gradient step goes through `descent_gradient` (complex leaves conjugated).

Geometry. Positions here are in **pixels**, as in the original, ordered `(x, y)` and
measured from the sample's centre pixel `(Hs // 2, Ws // 2)` to the probe's centre
pixel `(H // 2, W // 2)`: position `(0, 0)` cuts the central probe-sized patch. The
sample may be larger than the probe; every probe window must lie inside it. Fractional
positions are applied exactly, as a Fourier shift of the probe (see
`janssen.optics.shift_probe`).

`mixed_state_gradient_step` keeps the original's plain fixed-step gradient descent for
scripts written against it; `mixed_state_reconstruct` runs the `RPIE` engine through
`janssen.invert.reconstruct`, because that descent, at its documented step sizes,
barely moves. The engines (`reconstruct` with `Gradient` or a PIE engine and
`trainable=["object", "probe.modes", "probe.weights"]`) offer the rest: optimisers,
step-size control and resuming.
"""

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Num, Real

from ..._custom_types import PairLike, ScalarLike
from ..._data import MicroscopeData
from ..._validate import check_finite, check_nonnegative, check_positive, complex_array, is_concrete, pair, real_array
from ...optics._coherence import CoherentModeSet, MixedStateProbe, gaussian_schell_modes
from ...optics._sample import SampleFunction
from ...optics._scan import positions_outside
from ...scopes._far_field import FarFieldMicroscope
from .._complex import descent_gradient
from .._engines.pie import RPIE
from .._losses import AmplitudeLoss, loss_from_name
from .._reconstruct import reconstruct
from .._residual import safe_sqrt

_MIXED_LOSSES = ("amplitude", "intensity", "poisson")


class MixedStatePtychoData(eqx.Module):
    """Measured patterns together with the current mixed-state estimate.

    The forward model is `I_j = sum_n w_n |F[phi_n(r - r_j) O(r)]|**2` with `F` the
    centred unitary FFT (`janssen.optics.fft2c`), `phi_n` the probe modes and `w_n`
    their weights (`mixed_state_forward`). Build it with `make_mixed_state_ptycho_data`
    (or this constructor: both validate).

    **Arguments:**

    - `diffraction_patterns`: `(N, H, W)` measured intensities (counts), finite, >= 0.
    - `probe_modes`: the `CoherentModeSet` on the `(H, W)` frame grid. Its `dx` and
      `wavelength` must equal the ones below.
    - `sample`: `(Hs, Ws)` complex object, at least `(H, W)` (it may be larger).
    - `positions`: `(N, 2)` scan positions `(x, y)` in pixels relative to the
      sample's centre pixel; every probe window must lie inside the sample.
    - `wavelength`: metres, > 0.
    - `dx`: sample pixel in metres, > 0: a scalar (kept a scalar, as the original
      documents it) or an `(x, y)` pair.

    **As a NamedTuple.** The original class was a `NamedTuple`, and ported scripts use it
    as one; so does this Module: `data[0]`, `data[-1]`, slices, `len(data)`, unpacking
    (`patterns, modes, obj, pos, wavelength, dx = data`), `data._fields`,
    `data._asdict()` and `data._replace(sample=...)` (which validates, like the
    constructor). It is also a PyTree, as every Module.
    """

    _fields: ClassVar[tuple[str, ...]] = (
        "diffraction_patterns",
        "probe_modes",
        "sample",
        "positions",
        "wavelength",
        "dx",
    )

    diffraction_patterns: Float[Array, "N H W"]
    probe_modes: CoherentModeSet
    sample: Complex[Array, "Hs Ws"]
    positions: Float[Array, "N 2"]
    wavelength: Float[Array, ""]
    dx: Float[Array, "2"]

    def __init__(
        self,
        diffraction_patterns: Real[ArrayLike, "N H W"],
        probe_modes: CoherentModeSet,
        sample: Num[ArrayLike, "Hs Ws"],
        positions: Real[ArrayLike, "_N 2"],
        wavelength: ScalarLike,
        dx: PairLike,
    ):
        self.diffraction_patterns = real_array("diffraction_patterns", diffraction_patterns)
        self.probe_modes = probe_modes
        self.sample = complex_array("sample", sample, ndim=2)
        self.positions = real_array("positions", positions)
        self.wavelength = real_array("wavelength", wavelength, shape=())
        self.dx = real_array("dx", dx)
        if self.dx.shape not in ((), (2,)):
            raise ValueError(f"`dx` must be a scalar or an (x, y) pair in metres, got shape {self.dx.shape}")

    def __check_init__(self):
        check_positive("wavelength", self.wavelength)
        check_positive("dx", self.dx)
        patterns = self.diffraction_patterns
        if patterns.ndim != 3:
            raise ValueError(f"`diffraction_patterns` must have shape (N, H, W), got shape {patterns.shape}")
        check_nonnegative("diffraction_patterns", patterns)
        frame = tuple(patterns.shape[1:])
        if tuple(self.probe_modes.shape) != frame:
            raise ValueError(
                f"`probe_modes` must be on the frame grid {frame} of `diffraction_patterns`, "
                f"got modes of shape {tuple(self.probe_modes.shape)}"
            )
        if self.positions.shape != (patterns.shape[0], 2):
            raise ValueError(
                f"`positions` must have shape ({patterns.shape[0]}, 2) (one (x, y) per pattern), "
                f"got shape {self.positions.shape}"
            )
        sy, sx = self.sample.shape
        if sy < frame[0] or sx < frame[1]:
            raise ValueError(f"`sample` must be at least the probe's size {frame}, got shape {(sy, sx)}")
        check_finite("sample", self.sample)
        check_finite("positions", self.positions)
        _check_same("probe_modes.dx", self.probe_modes.dx, "dx", self.dx)
        _check_same("probe_modes.wavelength", self.probe_modes.wavelength, "wavelength", self.wavelength)
        if is_concrete(self.positions):
            ones = jnp.ones(2, self.positions.dtype)
            bad = positions_outside(self.positions, ones, self.sample.shape, frame)
            if bad.size:
                raise ValueError(
                    f"`positions` must keep every {frame} probe window inside the {self.sample.shape} sample "
                    f"(|x| <= {sx // 2 - frame[1] // 2}, |y| <= {sy // 2 - frame[0] // 2} pixels about its "
                    f"centre, roughly); {bad.size} do not, first index {int(bad[0])} at "
                    f"{np.asarray(self.positions[bad[0]]).tolist()} px"
                )

    @property
    def microscope(self) -> FarFieldMicroscope:
        """The equivalent `FarFieldMicroscope` (positions converted to metres)."""
        return _microscope(
            self.probe_modes.modes, self.probe_modes.weights, self.sample, self.positions, pair("dx", self.dx)
        )

    # ---- the NamedTuple protocol of the original class --------------------------------------

    def __len__(self) -> int:
        return len(self._fields)

    def __iter__(self):
        return (getattr(self, name) for name in self._fields)

    def __getitem__(self, index):
        return tuple(self)[index]

    def _asdict(self) -> dict[str, Any]:
        """The fields by name, in order."""
        return {name: getattr(self, name) for name in self._fields}

    def _replace(self, **changes: Any) -> "MixedStatePtychoData":
        """A copy with the named fields replaced, validated as by the constructor."""
        unknown = sorted(set(changes) - set(self._fields))
        if unknown:
            raise ValueError(
                f"`_replace`: MixedStatePtychoData has no field(s) {unknown}; its fields are {self._fields}"
            )
        return MixedStatePtychoData(**{**self._asdict(), **changes})


def _check_same(name: str, value: Array, other_name: str, other: Array) -> None:
    if is_concrete(value) and is_concrete(other):
        a, b = np.broadcast_arrays(np.asarray(value), np.asarray(other))
        if not np.allclose(a, b, rtol=1e-5, atol=0):
            raise ValueError(f"`{name}` must equal `{other_name}` {b.tolist()}, got {a.tolist()}")


def make_mixed_state_ptycho_data(
    diffraction_patterns: Real[ArrayLike, "N H W"],
    probe_modes: CoherentModeSet,
    sample: Num[ArrayLike, "Hs Ws"],
    positions: Real[ArrayLike, "_N 2"],
    wavelength: ScalarLike,
    dx: PairLike,
) -> MixedStatePtychoData:
    """A validated `MixedStatePtychoData` (the original's factory; it really checks).

    **Arguments:**

    As `MixedStatePtychoData`: patterns `(N, H, W)`, the `CoherentModeSet` on the
    `(H, W)` grid, the `(Hs, Ws)` sample, `(N, 2)` positions `(x, y)` in pixels from the
    sample's centre pixel, wavelength and pixel size in metres.

    **Returns:**

    The `MixedStatePtychoData`. Raises `ValueError` naming the argument, what was
    expected and what was received for a non-positive wavelength or `dx`, mismatched
    shapes, negative or non-finite data, or a position whose probe window leaves the
    sample.
    """
    return MixedStatePtychoData(diffraction_patterns, probe_modes, sample, positions, wavelength, dx)


def _microscope(modes, weights, sample, positions_px, dx) -> FarFieldMicroscope:
    """A far-field microscope for pixel positions: the pitch `dx` converts them to metres."""
    wavelength = jnp.ones((), dx.dtype)  # the far-field intensity does not depend on it
    probe = MixedStateProbe(CoherentModeSet(modes, weights, wavelength, dx))
    return FarFieldMicroscope(probe, SampleFunction(sample, dx), positions_px * dx[None, :])


def mixed_state_forward_single_position(
    probe_modes: Complex[Array, "M H W"],
    mode_weights: Float[Array, " M"],
    obj: Complex[Array, "Hs Ws"],
    shift_x: ScalarLike,
    shift_y: ScalarLike,
) -> Float[Array, "H W"]:
    """The far-field intensity at one scan position: `sum_n w_n |F[phi_n * patch]|**2`.

    `patch` is the probe-sized window of `obj` whose centre pixel sits `(shift_x,
    shift_y)` pixels from `obj`'s centre pixel; a fractional shift moves the probe by
    the remainder (Fourier shift), so the result is differentiable in the shift. `F`
    is the centred unitary FFT. A negative weight counts as 0 (a dark mode).

    **Arguments:**

    - `probe_modes`: `(M, H, W)` complex modes.
    - `mode_weights`: `(M,)` weights (mode powers when the modes have unit power).
    - `obj`: `(Hs, Ws)` complex object, at least `(H, W)`.
    - `shift_x`, `shift_y`: the position in pixels.

    **Returns:**

    The `(H, W)` intensity.
    """
    obj = complex_array("obj", obj, ndim=2)
    position = jnp.stack([jnp.asarray(shift_x), jnp.asarray(shift_y)]).astype(jnp.real(obj).dtype)
    if is_concrete(position):
        bad = positions_outside(position[None], jnp.ones(2), obj.shape, probe_modes.shape[-2:])
        if bad.size:
            raise ValueError(
                f"`shift_x`, `shift_y` must keep the {probe_modes.shape[-2:]} probe window inside the "
                f"{obj.shape} `obj`, got {np.asarray(position).tolist()} px"
            )
    return _single_position(probe_modes, mode_weights, obj, position)


@eqx.filter_jit
def _single_position(modes, weights, obj, position):
    microscope = _microscope(modes, weights, obj, position[None], jnp.ones(2, position.dtype))
    return microscope.intensity(microscope.positions[0])


def mixed_state_forward(data: MixedStatePtychoData) -> Float[Array, "N H W"]:
    """Predicted patterns at every position of `data` (its `FarFieldMicroscope`).

    **Arguments:**

    - `data`: the current state.

    **Returns:**

    `(N, H, W)` intensities.
    """
    return _forward(data)


@eqx.filter_jit
def _forward(data: MixedStatePtychoData) -> Array:
    return data.microscope()


def mixed_state_loss(data: MixedStatePtychoData, loss_type: str = "amplitude") -> Float[Array, ""]:
    """The misfit between `mixed_state_forward(data)` and the measured patterns.

    The loss is a **mean** over all `N * H * W` pixels (janssen's `AmplitudeLoss`,
    `IntensityLoss`, `PoissonLoss`), not the original's sum; its scale therefore does
    not grow with the number of frames.

    **Arguments:**

    - `data`: the current state.
    - `loss_type`: `"amplitude"` (mean `(sqrt(I_meas) - sqrt(I_pred))**2`, default),
      `"intensity"` (mean `(I_meas - I_pred)**2`) or `"poisson"` (Poisson negative
      log-likelihood less its minimum). Anything else raises `ValueError`.

    **Returns:**

    The scalar loss.
    """
    _mixed_loss(loss_type)
    return _loss(data, loss_type)


@eqx.filter_jit
def _loss(data: MixedStatePtychoData, loss_type: str) -> Array:
    return _mixed_loss(loss_type)(data.microscope(), data.diffraction_patterns)


def _mixed_loss(loss_type: str):
    key = loss_type.lower() if isinstance(loss_type, str) else loss_type
    if key not in _MIXED_LOSSES:
        raise ValueError(f"`loss_type` must be one of {_MIXED_LOSSES}, got {loss_type!r}")
    return loss_from_name(key)


def _flags(update_object: bool, update_modes: bool, update_weights: bool) -> tuple[bool, bool, bool]:
    return bool(update_object), bool(update_modes), bool(update_weights)


def _with_parameters(data: MixedStatePtychoData, sample, modes, weights) -> MixedStatePtychoData:
    return eqx.tree_at(lambda d: (d.sample, d.probe_modes.modes, d.probe_modes.weights), data, (sample, modes, weights))


def _value_and_step(data: MixedStatePtychoData, learning_rate, flags, loss_type):
    """The loss at `data` and `data` after one conjugated gradient step on the flagged leaves."""
    params = (data.sample, data.probe_modes.modes, data.probe_modes.weights)
    loss = _mixed_loss(loss_type)

    def objective(free):
        # Leaves that are not flagged are closed over, so JAX never differentiates them.
        merged = tuple(f if flag else p for f, p, flag in zip(free, params, flags))
        trial = _with_parameters(data, *merged)
        return loss(trial.microscope(), trial.diffraction_patterns)

    free = tuple(p if flag else None for p, flag in zip(params, flags))
    value, grads = jax.value_and_grad(objective)(free)
    grads = descent_gradient(grads)
    new = [p - (learning_rate * g).astype(p.dtype) if flag else p for p, g, flag in zip(params, grads, flags)]
    # A weight is a mode's power: project a step that overshoots below zero back onto 0.
    new[2] = jnp.maximum(new[2], 0)
    return value, _with_parameters(data, *new)


@eqx.filter_jit
def _step(data, learning_rate, flags, loss_type):
    return _value_and_step(data, learning_rate, flags, loss_type)[1]


def mixed_state_gradient_step(
    data: MixedStatePtychoData,
    learning_rate: ScalarLike = 0.001,
    update_object: bool = True,
    update_modes: bool = True,
    update_weights: bool = False,
    *,
    loss_type: str = "amplitude",
) -> MixedStatePtychoData:
    """One steepest-descent step `z <- z - learning_rate * G` on the mixed-state loss.

    `G = dL/dRe z + i dL/dIm z` is the descent direction (`descent_gradient`: JAX's
    gradient of a complex leaf is its conjugate, which the original stepped along and
    so barely moved). The flags choose which leaves are differentiated and updated:
    `update_object` -> `sample`, `update_modes` -> `probe_modes.modes`,
    `update_weights` -> `probe_modes.weights` (projected onto >= 0). The engines say
    the same with `trainable=["object", "probe.modes", "probe.weights"]`.

    **Step size.** The loss is a mean over pixels, so `G` scales with the counts: for
    the amplitude loss the curvature along the object is about
    `2 sum_j |P_j|**2 / (N H W)` and along a unit-power mode about
    `2 w_n mean|O|**2 / (H W)`; a fixed step is stable below 2 / (largest curvature),
    so the step that works scales as `1 / (counts per frame)`. For about `1e5` counts
    per `32 x 32` frame the default `1e-3` is stable and `1e-3 ... 3e-3` is a good
    range; divide by 10 for 10x the counts. The weights are mode powers (counts), so
    their gradient is tiny and a useful weight step is many orders of magnitude larger
    than the object's: refine them in a separate call (or with the engines, which
    choose their steps themselves).

    **Arguments:**

    - `data`: the current state.
    - `learning_rate`: the fixed step (> 0, default 1e-3).
    - `update_object`, `update_modes`, `update_weights`: which leaves move (defaults:
      object and modes, not weights).
    - `loss_type`: keyword only, as in `mixed_state_loss` (default `"amplitude"`).

    **Returns:**

    The state after the step (unchanged if no flag is set).
    """
    learning_rate = real_array("learning_rate", learning_rate, shape=())
    check_positive("learning_rate", learning_rate)
    _mixed_loss(loss_type)
    return _step(data, learning_rate, _flags(update_object, update_modes, update_weights), loss_type)


def _measurement(data: MixedStatePtychoData) -> MicroscopeData:
    """The patterns as `MicroscopeData` for `data.microscope` (positions in metres).

    The far-field microscope of `data` is its object pixel alone; the camera pixel and
    distance below are the ones that make that pixel (`wavelength * distance / (N dx)`)
    and are used for nothing else.
    """
    microscope = data.microscope
    shape = jnp.asarray(data.diffraction_patterns.shape[-1:-3:-1], microscope.sample.dx.dtype)
    wavelength = microscope.probe.wavelength
    camera = wavelength / (shape * microscope.sample.dx)
    return MicroscopeData(data.diffraction_patterns, microscope.positions, wavelength, camera, 1.0)


@eqx.filter_jit
def _microscope_loss(microscope: FarFieldMicroscope, patterns, loss_type: str) -> Array:
    return _mixed_loss(loss_type)(microscope(), patterns)


def mixed_state_reconstruct(
    data: MixedStatePtychoData,
    num_iterations: int = 100,
    learning_rate: ScalarLike = 0.001,
    update_object: bool = True,
    update_modes: bool = True,
    update_weights: bool = False,
    *,
    loss_type: str = "amplitude",
) -> tuple[MixedStatePtychoData, Float[Array, " I"]]:
    """Mixed-state reconstruction: `num_iterations` sweeps of the `RPIE` engine.

    The original ran a fixed-step gradient descent, which at its documented step sizes
    barely moves (measured on 25 positions of 32 x 32 frames, 3 modes of powers
    0.57 / 0.29 / 0.14 started at 0.90 / 0.05 / 0.05 from a unit object: object error
    0.559 -> 0.554 in 300 steps of 1e-3, the weights unchanged). This runs
    `janssen.invert.reconstruct` with `janssen.invert.RPIE` (Maiden, Johnson & Li 2017;
    mixed states: Thibault & Menzel 2013) on `data.microscope` instead, with the
    engine's own normalised steps: on the same problem 0.055 after 300 sweeps, the
    powers within 0.004 (`tests/test_seed_mixed.py`). For the plain gradient step, call
    `mixed_state_gradient_step`.

    The flags choose the trainable leaves: `update_object` -> `"object"`,
    `update_modes` or `update_weights` -> `"probe"`. PIE updates the probe's fields and
    rebuilds orthogonal modes from them, whose powers are the weights: the shapes of
    the modes and their weights are refined together, so `update_weights` has no
    separate effect (a probe that is refined has its weights refined).

    **Arguments:**

    - `data`: the starting state.
    - `num_iterations`: sweeps over the positions, >= 0 (default 100).
    - `learning_rate`: validated (> 0) and kept for the original's signature; PIE's
      normalised steps replace it.
    - `update_object`, `update_modes`, `update_weights`: what is refined (above).
    - `loss_type`: keyword only, the loss reported in the history, as in
      `mixed_state_loss` (default `"amplitude"`; PIE itself fits amplitudes).

    **Returns:**

    `(final_data, loss_history)`: `loss_history[i]` is `mixed_state_loss` *before*
    sweep `i`, so `loss_history[0]` is the starting loss. If the engine stops early
    (a non-finite or diverging step) the best state is returned with a shorter history.
    """
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, (int, np.integer)) or num_iterations < 0:
        raise ValueError(f"`num_iterations` must be an integer >= 0, got {num_iterations!r}")
    learning_rate = real_array("learning_rate", learning_rate, shape=())
    check_positive("learning_rate", learning_rate)
    _mixed_loss(loss_type)
    trainable = (["object"] if update_object else []) + (["probe"] if update_modes or update_weights else [])
    patterns = data.diffraction_patterns
    history = [_microscope_loss(data.microscope, patterns, loss_type)]
    if not trainable or num_iterations == 0:
        return data, jnp.full((int(num_iterations),), history[0])

    def record(iteration: int, loss: float, microscope: FarFieldMicroscope) -> None:
        del iteration, loss
        history.append(_microscope_loss(microscope, patterns, loss_type))

    solution = reconstruct(
        data.microscope, _measurement(data), RPIE(), trainable=trainable, num_iterations=int(num_iterations),
        callback=record,
    )  # fmt: skip
    done = int(solution.losses.shape[0])
    refined = solution.microscope
    final = _with_parameters(data, refined.sample.sample, refined.probe.modes, refined.probe.weights)
    return final, jnp.stack(history[:done])


def coherence_parameterized_loss(
    coherence_width: ScalarLike,
    sample: Complex[Array, "Hs Ws"],
    diffraction_patterns: Float[Array, "N H W"],
    positions: Float[Array, "N 2"],
    beam_width: ScalarLike,
    wavelength: ScalarLike,
    dx: ScalarLike,
    num_modes: int = 10,
) -> Float[Array, ""]:
    """The amplitude loss of a Gaussian–Schell-model probe, as a function of its coherence width.

    The probe is `gaussian_schell_modes((H, W), dx, wavelength,
    beam_width=beam_width, coherence_width=coherence_width, num_modes=num_modes)`,
    isotropic and two-dimensional (the original's modes varied along x only). Its
    modes have unit power and its weights sum to 1; the overall power, which the
    signature does not carry, is set to the value that minimises the loss (closed
    form: the amplitude scale `sum(a_meas a_pred) / sum(a_pred**2)`). Differentiable
    in `coherence_width` (and in `beam_width`); minimise it over the coherence width to
    recover the source's coherence.

    **Arguments:**

    - `coherence_width`: rms width of the degree of coherence in metres, > 0.
    - `sample`: `(Hs, Ws)` complex object (known, or the current estimate).
    - `diffraction_patterns`: `(N, H, W)` measured intensities.
    - `positions`: `(N, 2)` positions `(x, y)` in pixels from the sample's centre pixel.
    - `beam_width`: rms width of the probe intensity in metres, > 0.
    - `wavelength`, `dx`: metres, > 0.
    - `num_modes`: Gaussian–Schell modes kept (default 10).

    **Returns:**

    The mean amplitude loss `mean (sqrt(I_meas) - s sqrt(I_pred))**2` at the best `s`.
    """
    patterns = real_array("diffraction_patterns", diffraction_patterns)
    dx = pair("dx", dx)
    for name, value in (("coherence_width", coherence_width), ("beam_width", beam_width), ("wavelength", wavelength)):
        check_positive(name, value)
    check_positive("dx", dx)
    if isinstance(num_modes, bool) or not isinstance(num_modes, (int, np.integer)) or num_modes < 1:
        raise ValueError(f"`num_modes` must be an integer >= 1, got {num_modes!r}")
    obj = complex_array("sample", sample, ndim=2)
    positions = real_array("positions", positions)
    return _coherence_loss(coherence_width, obj, patterns, positions, beam_width, wavelength, dx, int(num_modes))


@eqx.filter_jit
def _coherence_loss(coherence_width, obj, patterns, positions, beam_width, wavelength, dx, num_modes):
    modes = gaussian_schell_modes(
        tuple(patterns.shape[1:]),
        dx,
        wavelength,
        beam_width=beam_width,
        coherence_width=coherence_width,
        num_modes=num_modes,
    )
    predicted = _microscope(modes.modes, modes.weights, obj, positions, dx)()
    measured = safe_sqrt(patterns)
    amplitude = safe_sqrt(predicted)
    scale = jnp.sum(measured * amplitude) / jnp.sum(predicted)
    return AmplitudeLoss()(scale**2 * predicted, patterns)
