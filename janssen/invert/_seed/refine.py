"""The seed API's gradient and Gauss-Newton reconstructions of the simple microscope.

`simple_microscope_optim` and `simple_microscope_gn` are thin layers over
`janssen.invert.reconstruct` with the `Gradient` and `GaussNewton` engines, on the same
field of view and `SimpleMicroscope` as `simple_microscope_epie`. Both resume exactly
(engine state included) through `PtychographyReconstruction.solution`.
`profile_gn_memory` measures what one Gauss-Newton iteration costs on the device.
"""

import functools
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from ..._data import MicroscopeData
from ...optics._fixed_power import FixedPowerProbe
from ...scopes._base import AbstractMicroscope
from ...scopes._simple import SimpleMicroscope
from .._engines.gauss_newton import GaussNewton
from .._engines.gradient import Gradient
from .._rates import default_rate_factors
from .._reconstruct import reconstruct
from .._trainable import trainable_spec
from .simple_microscope import _append_history, _microscope
from .types import PtychographyParams, PtychographyReconstruction

# params' bound fields -> the trainable name of the optic they bound (and refine).
_BOUNDED_OPTICS = (
    ("zoom_factor_bounds", "zoom"),
    ("aperture_diameter_bounds", "aperture_diameter"),
    ("aperture_center_bounds", "aperture_center"),
    ("travel_distance_bounds", "distance"),
)
_OPTIMIZERS = {"adam": optax.adam, "adagrad": optax.adagrad, "rmsprop": optax.rmsprop, "sgd": optax.sgd}


def _side(values: Array, open_end: float) -> np.ndarray | None:
    """One side of a bound as `reconstruct` takes it: `None` where it is open throughout.

    `PtychographyParams` allows infinite entries (an open side, e.g. a centre bounded in
    y only); `Bounds` reads them the same way.
    """
    values = np.asarray(values)
    return None if np.all(values == open_end) else values


def _bounds(params: PtychographyParams) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """`{trainable name: (min, max)}` for the driver, for every optic whose bounds are given."""
    return {
        name: (_side(getattr(params, field)[0], -np.inf), _side(getattr(params, field)[1], np.inf))
        for field, name in _BOUNDED_OPTICS
        if getattr(params, field) is not None
    }


def _part_scales(microscope: SimpleMicroscope, names: list[str]) -> dict[str, float]:
    """The typical size of each refined part other than the object (unit amplitude).

    Adam-like optimisers move every parameter by about the learning rate per step, so
    a rate meant for the object must be scaled to the probe's amplitude and to each
    optic's size in metres (or its own units for the zoom).
    """
    sizes = {
        "probe": jnp.max(jnp.abs(microscope.probe.modes)),
        "zoom": jnp.abs(microscope.zoom.zoom_factor),
        "aperture_diameter": microscope.aperture.diameter,
        # The centre is often 0; the diameter sets its scale.
        "aperture_center": microscope.aperture.diameter,
        "distance": microscope.propagator.distance,
    }
    return {name: float(sizes[name]) for name in names}


def _gradient_engine(params: PtychographyParams, microscope: AbstractMicroscope, scales: dict[str, float]) -> Gradient:
    # The sizes of the first call (or `_part_scales`), as factors (squared for SGD).
    factors = default_rate_factors(microscope, list(scales), optimizer=params.optimizer_type, sizes=scales)
    return Gradient(_optimizer(params.optimizer_type, float(params.learning_rate)), params.loss_type, factors)


@functools.lru_cache(maxsize=16)
def _optimizer(name: str, learning_rate: float):
    # The same transformation object on every call: a new one would hold new functions
    # and make the jitted step recompile on each call (each resume).
    return _OPTIMIZERS[name](learning_rate)


def _start(reconstruction: PtychographyReconstruction, microscope, engine, data, trainable):
    """The previous `Solution` if it can continue with this engine and selection, else the microscope."""
    previous = reconstruction.solution
    if previous is None:
        return microscope
    spec = trainable_spec(microscope, trainable)
    # Called, not traced: an engine's state may hold what `init` decides on the host
    # (`GaussNewton`'s `on_grid`), which a traced call cannot decide.
    fresh = engine.init(microscope, data, spec)
    same_state = jax.tree_util.tree_structure(fresh) == jax.tree_util.tree_structure(previous.state)
    same_spec = jax.tree_util.tree_structure(previous.trainable) == jax.tree_util.tree_structure(spec) and (
        jax.tree_util.tree_leaves(previous.trainable) == jax.tree_util.tree_leaves(spec)
    )
    if not (same_state and same_spec):
        return microscope
    # Keep the run's own aperture edge: "pixel" would recompute it from a refined zoom.
    edge = previous.microscope.aperture.edge_width
    microscope = eqx.tree_at(lambda m: m.aperture.edge_width, microscope, edge, is_leaf=lambda x: x is None)
    return eqx.tree_at(lambda s: s.microscope, previous, microscope)


def _power_held(microscope: SimpleMicroscope, reconstruction: PtychographyReconstruction) -> SimpleMicroscope:
    """The microscope with its probe's power held (`FixedPowerProbe`) at the reconstruction's.

    A run that continues one of these takes the previous probe's parameters as they
    were (its modes need not have the held power), so that resuming equals one run.
    """
    fields = microscope.probe.fields()
    held = FixedPowerProbe(fields, microscope.probe.wavelength, None)
    previous = None if reconstruction.solution is None else reconstruction.solution.microscope.probe
    same_kind = previous is not None and jax.tree_util.tree_structure(previous) == jax.tree_util.tree_structure(held)
    if same_kind and previous.modes.shape == fields.shape and bool(jnp.allclose(previous.fields(), fields)):
        held = previous
    return eqx.tree_at(lambda m: m.probe, microscope, held)


def _run(
    data,
    reconstruction,
    engine,
    trainable,
    num_iterations,
    save_every,
    camera_pixel_size,
    *,
    bounds=None,
    scales=(),
    hold_power=False,
):
    microscope = _microscope(reconstruction, camera_pixel_size, data.frame_shape)
    if hold_power:
        microscope = _power_held(microscope, reconstruction)
    start = _start(reconstruction, microscope, engine, data, trainable)
    previous_count = 0 if start is microscope else int(start.losses.shape[0])
    solution = reconstruct(
        start, data, engine, trainable=trainable, bounds=bounds, num_iterations=num_iterations, save_every=save_every
    )
    out = _append_history(reconstruction, solution, previous_count, step_scales=scales)
    refined = solution.microscope
    return eqx.tree_at(
        lambda r: (r.zoom_factor, r.aperture_diameter, r.aperture_center, r.travel_distance),
        out,
        (refined.zoom.zoom_factor, refined.aperture.diameter, refined.aperture.center, refined.propagator.distance),
    )


def simple_microscope_optim(
    experimental_data: MicroscopeData,
    reconstruction: PtychographyReconstruction,
    params: PtychographyParams,
) -> PtychographyReconstruction:
    """Refine object, probe and the bounded optics with a gradient optimiser, resumably.

    Builds the `SimpleMicroscope` the reconstruction describes (same field of view as
    `init_simple_microscope`, camera pixel `params.camera_pixel_size`) and runs
    `params.num_iterations` steps of `janssen.invert.Gradient` through
    `janssen.invert.reconstruct`: the loss `params.loss_type` over all frames, its
    gradient (conjugated for complex leaves, so the optimiser descends; the original
    used the raw gradient, which barely moves), and `params.optimizer_type` at
    `params.learning_rate`.

    **What is refined.** The object and the probe always; an optic only when its bounds
    are given (`zoom_factor_bounds` -> zoom, `aperture_diameter_bounds`,
    `aperture_center_bounds`, `travel_distance_bounds`; an infinite side leaves it
    unbounded on that side). After every step the driver clips each bounded optic into
    its bounds (`reconstruct(..., bounds=...)`). Optics without bounds are held fixed.

    **Step sizes.** `learning_rate` applies to the object (unit amplitude). Every other
    part's step is scaled by its size: the probe's peak amplitude, the zoom factor, the
    aperture diameter (also for its centre) and the distance, so that an Adam step moves
    each by about `learning_rate` relative to its size (for `"sgd"` by the size squared,
    which gives the same relative step). Adam at `0.01 ... 0.05` is a good start; the
    default `1e-3` is slow.

    **Resuming.** The optimiser's state (e.g. Adam's moments), the iteration counter
    and the key carry over through `reconstruction.solution`, and the step sizes of the
    first call through `reconstruction.step_scales` (the bounds come from `params` on
    every call), so two calls of N and M iterations equal one of N + M. If that
    solution comes from another engine, another optimiser or another selection of
    parameters, the run starts afresh from the reconstruction's estimates and the
    history is still appended.

    **Arguments:**

    - `experimental_data`: the measurements.
    - `reconstruction`: from `init_simple_microscope` or a previous call.
    - `params`: all fields are used.

    **Returns:**

    The updated `PtychographyReconstruction` (sample, lightwave and the refined optics),
    with one `(iteration, loss)` row per step (the RMS amplitude residual before that
    step) and a snapshot every `params.save_every` iterations.
    """
    microscope = _microscope(reconstruction, params.camera_pixel_size, experimental_data.frame_shape)
    bounds = _bounds(params)
    names = ["probe", *bounds]
    if reconstruction.solution is not None and {name for name, _ in reconstruction.step_scales} == set(names):
        # The sizes of the first call: recomputing them from refined values would change
        # the step sizes, and a resumed run would differ from an uninterrupted one.
        scales = dict(reconstruction.step_scales)
    else:
        scales = _part_scales(microscope, names)
    return _run(
        experimental_data,
        reconstruction,
        _gradient_engine(params, microscope, scales),
        ["object", *names],
        params.num_iterations,
        params.save_every,
        params.camera_pixel_size,
        bounds=bounds,
        scales=tuple(sorted(scales.items())),
        hold_power=True,
    )


def simple_microscope_gn(
    experimental_data: MicroscopeData,
    reconstruction: PtychographyReconstruction,
    num_iterations: int = 10,
    initial_damping: float = 0.001,
    cg_maxiter: int = -1,
    cg_tol: float = -1.0,
    save_every: int = 10,
) -> PtychographyReconstruction:
    """Refine object and probe by Gauss-Newton (Levenberg-Marquardt), resumably.

    Runs `num_iterations` iterations of `janssen.invert.GaussNewton` on the
    reconstruction's `SimpleMicroscope`, with the camera pixel of the data
    (`experimental_data.camera_pixel_size`). Each iteration solves the damped normal
    equations of the amplitude residuals by conjugate gradients and keeps the step only
    if it lowers the residual, so the recorded loss never rises. The optics are held
    fixed. The damping, iteration counter and key carry over through
    `reconstruction.solution` (two calls of N and M iterations equal one of N + M).

    **Arguments:**

    - `experimental_data`: the measurements.
    - `reconstruction`: from `init_simple_microscope` or a previous call.
    - `num_iterations`: iterations in this call, >= 0.
    - `initial_damping`: the relative Levenberg-Marquardt damping of a fresh run, > 0.
    - `cg_maxiter`: CG iterations per step, or `-1` for automatic (see `GaussNewton`).
    - `cg_tol`: CG's relative tolerance, or `-1.0` for `1e-3`.
    - `save_every`: snapshot every so many iterations (0: none).

    **Returns:**

    The updated `PtychographyReconstruction`, with one `(iteration, loss)` row per
    iteration (the RMS amplitude residual after it).
    """
    engine = GaussNewton(initial_damping=initial_damping, cg_maxiter=cg_maxiter, cg_tol=cg_tol)
    return _run(
        experimental_data,
        reconstruction,
        engine,
        ["object", "probe"],
        num_iterations,
        save_every,
        experimental_data.camera_pixel_size,
    )


def _memory_gb(device) -> tuple[float | None, float | None]:
    """`(bytes in use, peak bytes in use)` in GB, or `(None, None)` where not reported (CPU)."""
    stats = device.memory_stats()
    if not stats:
        return None, None
    in_use, peak = stats.get("bytes_in_use"), stats.get("peak_bytes_in_use")
    return (None if in_use is None else in_use / 1e9), (None if peak is None else peak / 1e9)


def profile_gn_memory(
    experimental_data: MicroscopeData,
    reconstruction: PtychographyReconstruction,
    cg_maxiter: int = 5,
    verbose: bool = True,
) -> dict[str, Any]:
    """The device memory one Gauss-Newton iteration of this problem needs.

    Runs one iteration as a warm-up (compilation and first allocation), then one more,
    and reads `jax.devices()[0].memory_stats()` before, between and after. A failure
    (typically an out-of-memory `XlaRuntimeError` on a GPU) is caught and reported as
    `succeeded = False`.

    **Arguments:**

    - `experimental_data`, `reconstruction`: as for `simple_microscope_gn`.
    - `cg_maxiter`: CG iterations in the profiled step (>= 1).
    - `verbose`: print the figures.

    **Returns:**

    A dict with `baseline`, `after_warmup`, `after_gn`: GB in use on the first device at
    those moments; `peak_per_device_gb`: the device's peak in GB; `succeeded`: whether
    both iterations ran; `seconds`: wall time of the profiled iteration. The memory
    figures are `None` where the backend reports no statistics (the CPU).
    """
    device = jax.devices()[0]
    report: dict[str, Any] = dict(
        baseline=_memory_gb(device)[0], after_warmup=None, after_gn=None, peak_per_device_gb=None, succeeded=False
    )
    report["seconds"] = None
    try:
        warm = simple_microscope_gn(experimental_data, reconstruction, 1, cg_maxiter=cg_maxiter, save_every=0)
        jax.block_until_ready(warm.sample.sample)
        report["after_warmup"] = _memory_gb(device)[0]
        tic = time.perf_counter()
        out = simple_microscope_gn(experimental_data, warm, 1, cg_maxiter=cg_maxiter, save_every=0)
        jax.block_until_ready(out.sample.sample)
        report["seconds"] = time.perf_counter() - tic
        report["after_gn"], report["peak_per_device_gb"] = _memory_gb(device)
        report["succeeded"] = True
    except Exception as error:  # noqa: BLE001 -- any failure (e.g. out of memory) is the answer
        report["error"] = f"{type(error).__name__}: {error}"
    if verbose:
        for name, value in report.items():
            print(f"{name}: {value}")
    return report
