"""`reconstruct`: the one loop that every engine runs in."""

import math
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, PRNGKeyArray

from .._data import MicroscopeData
from ..optics._scan import positions_outside
from ..scopes._base import AbstractMicroscope
from ._constraints import Bounds, constrain_step
from ._convergence import Convergence
from ._engines.base import AbstractEngine
from ._jit import iteration_key
from ._progress import AbstractProgressMeter, NoProgressMeter
from ._results import RESULTS
from ._solution import Solution
from ._trainable import all_finite, refines, trainable_spec

_DEFAULT_TRAINABLE = ("object", "probe")
_FAILURES = (RESULTS.nonfinite, RESULTS.interrupted, RESULTS.positions_off_object, RESULTS.diverged)
#: `reconstruct`'s default `divergence`: a loss this many times its lowest value so far stops the run.
DIVERGENCE_FACTOR = 10.0


def _default_key() -> PRNGKeyArray:
    """`jr.PRNGKey(0)`; for the default Threefry keys made on the host (whose seed 0 is the
    key `[0, 0]`), as `jr.PRNGKey` compiles its seeding function (0.05 s) on first use."""
    if jax.config.jax_default_prng_impl == "threefry2x32":
        return jax.device_put(np.zeros(2, np.uint32))
    return jr.PRNGKey(0)


@eqx.filter_jit
def _step(engine, microscope, state, data, trainable, key, bounds):
    new_microscope, new_state, loss = engine.step(microscope, state, data, trainable, key)
    new_microscope = constrain_step(new_microscope, microscope, trainable, ramp=not engine.holds_phase_ramp)
    if bounds is not None:
        new_microscope = bounds(new_microscope)
    finite = jnp.isfinite(loss) & all_finite(eqx.filter(new_microscope, trainable))
    return new_microscope, new_state, loss, finite


def _strongly_typed(tree: Any) -> Any:
    """`tree` with weakly typed arrays (from Python scalars) made strong.

    An engine's step returns strongly typed leaves; a start with weak ones would make the
    second iteration's arguments differ in type from the first's, and compile again.
    """

    def strong(leaf):
        if eqx.is_array(leaf) and getattr(leaf, "weak_type", False):
            return jnp.array(leaf, dtype=leaf.dtype)
        return leaf

    return jax.tree_util.tree_map(strong, tree)


def _windows_inside(microscope: AbstractMicroscope) -> bool:
    """Whether every probe window lies on the object (slicing inside `jit` would clamp; a periodic one wraps)."""
    sample = microscope.sample
    outside = positions_outside(microscope.positions, sample.dx, sample.shape, microscope.probe_shape, sample.periodic)
    return outside.size == 0


def _check_compatible(microscope: AbstractMicroscope, data: MicroscopeData) -> None:
    if tuple(microscope.detector_shape) != tuple(data.frame_shape):
        raise ValueError(
            f"`data` frames are {tuple(data.frame_shape)} pixels but the microscope's detector is "
            f"{tuple(microscope.detector_shape)}"
        )
    if microscope.num_positions != data.num_positions:
        raise ValueError(
            f"`data` has {data.num_positions} frames but the microscope has {microscope.num_positions} scan positions"
        )


def _check_models_detector(engine: AbstractEngine, microscope: AbstractMicroscope, spec: Any) -> None:
    engine.check_detector(microscope, spec)


def reconstruct(
    microscope: AbstractMicroscope | Solution,
    data: MicroscopeData,
    engine: AbstractEngine,
    *,
    trainable: Any = None,
    bounds: Mapping[str, Any] | None = None,
    num_iterations: int = 50,
    key: PRNGKeyArray | None = None,
    callback: Callable[[int, float, AbstractMicroscope], None] | None = None,
    progress_meter: AbstractProgressMeter = NoProgressMeter(),
    save_every: int = 0,
    checkpoint: Callable[[Solution], None] | None = None,
    checkpoint_every: int = 10,
    throw: bool = False,
    convergence: Convergence | None = None,
    divergence: float | None = DIVERGENCE_FACTOR,
) -> Solution:
    """Refine a microscope against measured data with an engine.

    One jitted `engine.step` per iteration (compiled once per shapes and engine
    configuration, so a second call compiles nothing new). After each step the driver
    checks the loss and the refined leaves: a non-finite value stops the run with
    `RESULTS.nonfinite`, and a loss above `divergence` times the lowest so far and above
    the first (a step size too large for the problem: 3.8 -> 2.7e6) with
    `RESULTS.diverged`. Either way the state with the lowest loss is returned (never NaN
    arrays, nor the last finite state of a blow-up), with its iteration count and the
    losses up to it: the input of the step that reported the lowest loss. The checks
    use the loss the step reports, on the host (no extra work on the device). When
    positions are refined, a step that moves a probe window off the object stops the run
    with `RESULTS.positions_off_object`, again keeping the previous state.

    Two constraints hold after every step, whatever the engine: refined positions keep
    the scan's mean when the object is refined too (a common shift of the scan moves the
    object), and its overall scale when the distance (or zoom) is refined too (a common
    dilation trades off against it; see `janssen.invert.project_scan_step`); and leaves
    named in `bounds` are clipped into their boxes.
    Ctrl-C stops with `RESULTS.interrupted`, keeping the last completed iteration.
    A microscope with a `detector` (background, per-frame scales) needs an engine that
    models it (`AbstractEngine.models_detector`; not the PIE family): `ValueError` otherwise.

    **Arguments:**

    - `microscope`: the starting microscope, or a `Solution` to continue (its state,
      iteration count, key and trainable selection are reused).
    - `data`: the measurements; frames and positions must match the microscope.
    - `engine`: an `AbstractEngine` (e.g. `janssen.invert.RPIE()`).
    - `trainable`: what to refine — names (`["object", "probe"]`, `"positions"`,
      `"aperture.diameter"`…), a function picking leaves, or a filter spec. Defaults to
      object and probe. Ignored when resuming.
    - `bounds`: `{name: (min, max)}` box constraints on refined parameters, by trainable
      name or dotted path (`{"zoom": (0.9, 1.1), "aperture.diameter": (1e-4, 3e-4)}`),
      enforced by clipping after each step (`None`: unbounded side). Not stored in the
      `Solution`: pass them again when resuming.
    - `num_iterations`: iterations to run in this call.
    - `key`: PRNG key (e.g. the order of positions in sequential PIE). Default `PRNGKey(0)`.
    - `callback`: called as `callback(iteration, loss, microscope)` after each iteration.
    - `progress_meter`: e.g. `TextProgressMeter()`; default silent.
    - `save_every`: keep a snapshot of the microscope every so many iterations (0: none).
    - `checkpoint`, `checkpoint_every`: called with the current `Solution` every
      `checkpoint_every` iterations (its `result` then `RESULTS.running`) and when the run
      ends (e.g. `janssen.invert.save_solution`).
    - `throw`: raise `RuntimeError` instead of returning when the run ends abnormally
      (`nonfinite`, `diverged`, `interrupted`, `positions_off_object`).
    - `convergence`: e.g. `Convergence(rtol=1e-3)`: also stop, with `RESULTS.converged`,
      once the data residual has stopped falling (`None`: run every iteration unless the
      engine's own `terminate` stops it).
    - `divergence`: stop with `RESULTS.diverged` when the loss exceeds this factor times
      its lowest value in this call, and the run's first loss too (default 10; `None`:
      never). The loss is the RMS amplitude residual, which a converging run lowers; a
      tenfold rise above the start is a step size the problem cannot take, not noise
      (while a fit at the noise-free floor may wander tenfold between 1e-7 and 1e-6).

    **Returns:**

    A `Solution`.
    """
    if num_iterations < 0:
        raise ValueError(f"`num_iterations` must be >= 0, got {num_iterations}")
    if divergence is not None and not divergence > 1:
        raise ValueError(f"`divergence` must be a factor > 1 (or None), got {divergence}")
    if isinstance(microscope, Solution):
        previous = microscope
        start_microscope, spec, state = previous.microscope, previous.trainable, previous.state
        base_key, first, snapshots = previous.key, previous.iteration, previous.snapshots
        history, dtype = [float(value) for value in np.asarray(previous.losses)], previous.losses.dtype
    else:
        spec = trainable_spec(microscope, _DEFAULT_TRAINABLE if trainable is None else trainable)
        _check_compatible(microscope, data)
        _check_models_detector(engine, microscope, spec)
        start_microscope = microscope
        state = engine.init(microscope, data, spec)
        base_key, first, snapshots = (_default_key() if key is None else key), 0, ()
        history, dtype = [], jnp.result_type(float)
    # The loss history stays on the host (`jnp.concatenate` would compile for every new
    # length) and becomes an array only when handed out.
    recorded = len(history)
    _check_compatible(start_microscope, data)
    _check_models_detector(engine, start_microscope, spec)
    start_microscope, state = _strongly_typed(start_microscope), _strongly_typed(state)
    box = None if not bounds else Bounds(bounds, start_microscope)

    current, result = start_microscope, RESULTS.max_iterations_reached
    refines_positions = refines(spec, start_microscope, "positions")
    snapshots = list(snapshots)
    progress_meter.start(num_iterations)

    def losses_so_far() -> Array:
        # A transfer: `jnp.asarray` of a NumPy array compiles a copy for every new length.
        return jax.device_put(np.asarray(history, dtype=dtype))

    def solution(result: RESULTS) -> Solution:
        return Solution(
            microscope=current,
            state=state,
            losses=losses_so_far(),
            iteration=first + len(history) - recorded,
            result=result,
            key=base_key,
            trainable=spec,
            snapshots=tuple(snapshots),
        )

    # The state with the lowest loss: the step's input (most engines report the loss of
    # the microscope they were given), its loss, and the history and snapshots up to it.
    best, best_loss = (current, state, len(history), len(snapshots)), float("inf")

    def keep_best() -> None:
        nonlocal current, state
        current, state, length, count = best
        del history[length:], snapshots[count:]

    try:
        for i in range(first, first + num_iterations):
            new, new_state, loss, finite = _step(
                engine, current, state, data, spec, iteration_key(base_key, np.int32(i)), box
            )
            loss = float(loss)
            if loss < best_loss:
                best, best_loss = (current, state, len(history), len(snapshots)), loss
            # Above the run's first loss too: a converged noiseless fit may wander between 1e-7 and 1e-6.
            ceiling = max(divergence * best_loss, history[0] if history else loss) if divergence else math.inf
            too_high = best_loss > 0 and not loss <= ceiling
            if not bool(finite) or too_high:
                result = RESULTS.nonfinite if not bool(finite) else RESULTS.diverged
                keep_best()
                break
            if refines_positions and not _windows_inside(new):
                result = RESULTS.positions_off_object
                break
            current, state = new, new_state
            history.append(loss)
            progress_meter.update(i + 1, history[-1])
            if callback is not None:
                callback(i + 1, history[-1], current)
            if save_every and (i + 1) % save_every == 0:
                snapshots.append((i + 1, current))
            if checkpoint is not None and checkpoint_every and (i + 1) % checkpoint_every == 0:
                checkpoint(solution(RESULTS.running))
            if bool(engine.terminate(state, losses_so_far())) or (convergence is not None and convergence(history)):
                result = RESULTS.converged
                break
    except KeyboardInterrupt:
        result = RESULTS.interrupted
    finally:
        progress_meter.close()
    current = engine.postprocess(current, state)
    final = solution(result)
    if checkpoint is not None:
        checkpoint(final)
    if throw and result in _FAILURES:
        raise RuntimeError(RESULTS[result])
    return final
