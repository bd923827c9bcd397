"""Reconstruction from frames that stay in a file: batches of positions streamed from a CXI file.

For scans whose frames do not fit in memory. Each batch of positions is read from a
`janssen.io.CXIFrames` file (the next batch is read on a thread while the current one is
reconstructed) and refined by one iteration of an engine through `reconstruct`, the one
driver, and the engine's state carries from batch to batch. Memory holds the object, the
probe and two batches of frames, whatever the scan's size.
"""

import concurrent.futures
from collections.abc import Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Num, PRNGKeyArray

from .._data import MicroscopeData, frames_within
from ..io._lazy import CXIFrames
from ..optics._coherence import CoherentModeSet, MixedStateProbe, extend_modes
from ..optics._probe import AbstractProbe
from ..optics._sample import SampleFunction
from ..optics._scan import object_shape_for
from ..scopes._base import AbstractMicroscope
from ._constraints import constrain_step
from ._convergence import Convergence
from ._engines.base import AbstractEngine
from ._engines.curvature import AbstractMarquardtSearch, _Blocks, marquardt_step, marquardt_verdict
from ._init import SEARCH_POSITIONS, _default_padding, central_indices, init_far_field_microscope
from ._progress import AbstractProgressMeter, NoProgressMeter
from ._reconstruct import _DEFAULT_TRAINABLE, DIVERGENCE_FACTOR, reconstruct
from ._residual import AmplitudeResidual
from ._results import RESULTS
from ._schedule import _STOPS
from ._solution import Solution, empty_losses, losses_array
from ._trainable import all_finite, trainable_spec


def init_far_field_from_file(
    frames: CXIFrames,
    *,
    probe: AbstractProbe | Num[ArrayLike, "*modes y x"] | None = None,
    modes: int = 1,
    mode_share: float = 0.05,
    sample_positions: int = SEARCH_POSITIONS,
    padding: int | None = None,
    align: bool = True,
    scale_probe: bool = False,
) -> AbstractMicroscope:
    """The default path's start (`init_far_field_microscope`) for a scan that stays in its file.

    `init_far_field_microscope` runs on the `sample_positions` positions nearest the
    scan's centre, the only frames read: they give the probe guess (side of focus, size,
    bright-field centre), or centre a given `probe` on their bright field, and the
    detector background. The object is a unit object on the grid of the whole scan, and
    the positions are the whole scan's, centred as `positions_in_object_frame` centres them.

    **Arguments:**

    - `frames`: an open `CXIFrames` file.
    - `probe`: the starting probe, in any form `init_far_field_microscope` takes (an
      `AbstractProbe`, or a `(y, x)` / `(modes, y, x)` complex array on the detector's
      grid), checked and used as it uses it. Default: the guess `search_probe` chooses
      from the central frames.
    - `modes`: probe modes of the start (default 1). Above 1 (and above the modes of a
      given `probe`) the probe, guessed or given and centred, becomes a `MixedStateProbe`
      of `extend_modes(fields, modes, share=mode_share)` (Thibault & Menzel 2013): its
      modes plus new ones, the total power unchanged. At most the file's frames: each
      mode has as many unknowns as a frame has pixels.
    - `mode_share`: the fraction of the total power each new mode starts with (see
      `extend_modes`; default 0.05).
    - `sample_positions`: frames read for the guess (default `SEARCH_POSITIONS`, 512).
    - `padding`: object pixels around the scan (default: an eighth of the frame side).
    - `align`: centre a given `probe`'s far field on the central frames' bright field
      (see `init_far_field_microscope`); `False` uses it as given.
    - `scale_probe`: scale a given `probe` to the mean counts per frame of the frames
      read (see `init_far_field_microscope`), so that the file is not read twice for them.

    **Returns:**

    A `FarFieldMicroscope` holding every position of the file.
    """
    if isinstance(sample_positions, bool) or int(sample_positions) != sample_positions or sample_positions < 1:
        raise ValueError(f"`sample_positions` must be an integer >= 1, got {sample_positions!r}")
    if isinstance(modes, bool) or int(modes) != modes or not 1 <= modes <= frames.num_positions:
        raise ValueError(
            f"`modes` must be an integer from 1 to the file's {frames.num_positions} frames, got {modes!r}"
        )
    everywhere = frames.positions
    patch = frames.batch(central_indices(everywhere, sample_positions))
    guess = init_far_field_microscope(patch, probe, padding=padding, align=align, scale_probe=scale_probe)
    if modes > 1:
        # Without a pitch of its own, as every microscope keeps its probe (`probe_on_sample`).
        mixed = _mixed_state(guess.probe, int(modes), mode_share, patch).without_pitch()
        guess = eqx.tree_at(lambda m: m.probe, guess, mixed)
    dx = frames.geometry.object_pixel_size
    centre = (everywhere.max(axis=0) + everywhere.min(axis=0)) / 2  # as `positions_in_object_frame` centres
    positions = jnp.asarray(everywhere - centre, dtype=guess.positions.dtype)
    shape = tuple(frames.frame_shape)
    padding = _default_padding(shape) if padding is None else padding
    grid = object_shape_for(positions, dx, shape, padding)
    sample = SampleFunction(jnp.ones(grid, dtype=guess.sample.sample.dtype), guess.sample.dx)
    return eqx.tree_at(lambda m: (m.sample, m.positions), guess, (sample, positions))


def _mixed_state(probe: AbstractProbe, modes: int, share: float, data: MicroscopeData) -> MixedStateProbe:
    """`probe`'s fields plus new modes (`extend_modes`), as a `MixedStateProbe` on `data`'s object pixel."""
    basis, weights = extend_modes(probe.fields(), modes, share=share)
    return MixedStateProbe(CoherentModeSet(basis, weights, data.wavelength, data.object_pixel_size))


def reconstruct_from_file(
    microscope: AbstractMicroscope | Solution,
    frames: CXIFrames,
    engine: AbstractEngine,
    *,
    epochs: int,
    batch_size: int = 256,
    trainable=None,
    key: PRNGKeyArray | None = None,
    progress_meter: AbstractProgressMeter = NoProgressMeter(),
    callback: Callable[[int, float, AbstractMicroscope], None] | None = None,
    checkpoint: Callable[[Solution], None] | None = None,
    checkpoint_every: int = 1,
    whole_scan: bool = False,
    convergence: Convergence | None = None,
) -> Solution:
    """Refine `microscope` against a file's frames, streamed a batch of positions at a time.

    Every epoch visits every position once, in batches of `batch_size` in a new random
    order; each batch is one `reconstruct` iteration of `engine` on those positions, from
    the previous batch's solution (so the engine's state carries over). With a sequential
    PIE engine an epoch is a PIE iteration whose positions come in blocks: the default
    `RPIE()` converges as it does on the frames in memory. Batched engines see one batch
    per update; use them without loss-based damping (`adapt_alpha=False`, see docs/scale.md).

    With `whole_scan=True` an engine whose step is a sum over positions
    (`engine.sums_over_positions`: the batched PIE engines) takes one step per epoch from
    its sums over every batch, read in the file's order: the run is `reconstruct` on the
    frames in memory, iteration for iteration (the same momentum, damping and gauges),
    holding one batch of frames and the sums (about three objects' worth) at a time.

    Reading overlaps the work: the next batch is read on a thread (h5py decompresses
    outside the GIL's way of JAX's computation). Memory holds the microscope, the
    engine's state and two batches of frames.

    Pass a `Solution` this function returned (or `load_solution` read back from its
    checkpoint) in place of the microscope to continue the run: the engine's state
    (momentum, damping, the probe delay's count), the epoch count, the loss history and
    the key carry over, and epoch `e` keeps its order (`fold_in(key, e)`), so with the
    same `batch_size` N + M epochs in two calls equal N + M in one. A checkpoint written
    when a run was interrupted holds the last completed batch, part way through an
    epoch: continuing from it runs that epoch again from its start (with `whole_scan`, a
    checkpoint holds a completed epoch).

    **Arguments:**

    - `microscope`: the start, holding every position of the file in the file's order
      (e.g. `init_far_field_from_file(frames)`), or a `Solution` to continue (its
      microscope, state, epoch count, losses, key and trainable selection are reused;
      `trainable` and `key` are then ignored).
    - `frames`: an open `janssen.io.CXIFrames`.
    - `engine`: any engine `reconstruct` runs (the one that made the `Solution`, when
      continuing one) but a Marquardt search (`PhaseFieldSearch`, `CurvatureSearch`:
      `search_from_file` runs those on the whole scan).
    - `epochs`: passes over the scan in this call, >= 0. With 0 nothing is refined:
      the start comes back as a `Solution` whose state `engine.init` made on the first
      batch (the one batch read), a template for `load_solution` to read a saved
      streamed run into.
    - `batch_size`: positions per batch, >= 1 (the last batch of an epoch may be
      smaller: every position is visited).
    - `trainable`: what to refine, as for `reconstruct`.
    - `key`: PRNG key for the orders (default `PRNGKey(0)`).
    - `progress_meter`: advanced once per batch.
    - `callback`: called as `callback(epoch, loss, microscope)` after each epoch (the
      microscope holding every position).
    - `checkpoint`, `checkpoint_every`: called with the `Solution` so far every
      `checkpoint_every` epochs (its `result` then `RESULTS.running`) and once when the
      run ends, as `reconstruct` calls them (e.g. `janssen.invert.save_solution` with
      `frames.geometry` as the data).
    - `whole_scan`: one step per epoch over every position (above); `ValueError` for an
      engine whose step is not a sum over positions. A `Solution` to continue must come
      from a run with the same `whole_scan`.
    - `convergence`: e.g. `Convergence()`: also stop, with `RESULTS.converged`, once the
      per-epoch loss has stopped falling (as `reconstruct` tests its iterations' losses;
      an epoch's loss covers every position, so successive ones compare).

    Ctrl-C (a `KeyboardInterrupt`, wherever it lands: in a batch, while a batch is read
    or in a checkpoint) stops the run with `RESULTS.interrupted`, keeping the last
    completed batch.

    **Returns:**

    A `Solution` whose microscope holds every position again, whose `losses` are one per
    epoch (the root mean square of its batches' losses, weighted by their sizes; with
    `whole_scan`, the step's loss over the whole scan) and whose `iteration` counts epochs
    (over all calls). A batch that stops abnormally (non-finite, diverged, interrupted)
    ends the run with that result, keeping what the driver kept; with `whole_scan` as
    `reconstruct` does (the lowest loss's microscope after a non-finite or diverging step).
    """
    if isinstance(engine, AbstractMarquardtSearch):
        raise TypeError(
            f"`engine`: {type(engine).__name__} fits a few numbers to the whole scan, which one batch does not "
            "determine; run it with `search_from_file`, which sums its equations over every batch"
        )
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 0:
        raise ValueError(f"`epochs` must be an integer >= 0 (0: the start as a template), got {epochs!r}")
    if isinstance(checkpoint_every, bool) or int(checkpoint_every) != checkpoint_every or checkpoint_every < 0:
        raise ValueError(f"`checkpoint_every` must be an integer >= 0 (0: only at the end), got {checkpoint_every!r}")
    start = microscope.microscope if isinstance(microscope, Solution) else microscope
    count = _check_batches(start, frames, batch_size)
    if whole_scan:
        if not engine.sums_over_positions:
            raise ValueError(
                f"`whole_scan`: {type(engine).__name__}'s step is not a sum over positions "
                "(`engine.sums_over_positions` is False); the batched PIE engines (`mode='batched'`) take whole-scan "
                "steps"
            )
        return _whole_scan(
            microscope, frames, engine, int(epochs), int(batch_size), trainable, key, progress_meter, callback,
            checkpoint, int(checkpoint_every), convergence,
        )  # fmt: skip
    everywhere = start.positions
    on_host = _on_host(everywhere)
    batches = -(-count // int(batch_size))
    current: AbstractMicroscope | Solution
    if isinstance(microscope, Solution):
        key, losses = microscope.key, [float(loss) for loss in np.asarray(microscope.losses)]
        # The batch driver's own `Solution`: its iteration counts batches, which set each
        # batch's key as in one uninterrupted run; its per-batch losses are not kept (a
        # one-iteration call compares a loss with none of them).
        current = Solution(
            microscope=start,
            state=microscope.state,
            losses=empty_losses(),
            iteration=len(losses) * batches,
            result=RESULTS.running,
            key=key,
            trainable=microscope.trainable,
        )
    else:
        key, losses, current = (jr.PRNGKey(0) if key is None else key), [], microscope
    if epochs == 0:
        if isinstance(microscope, Solution):
            return microscope
        return _template(microscope, frames, engine, int(batch_size), key, trainable)
    first = len(losses)
    progress_meter.start(int(epochs) * batches)
    result, done = None, 0

    def solution(result: RESULTS) -> Solution:
        assert isinstance(current, Solution)  # a file has >= 1 frame: the first batch ran
        return Solution(
            microscope=eqx.tree_at(lambda m: m.positions, current.microscope, everywhere),
            state=current.state,
            losses=losses_array(losses, current.losses.dtype),
            iteration=len(losses),
            result=result,
            key=key,
            trainable=current.trainable,
        )

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
            for epoch in range(first, first + int(epochs)):
                order = np.asarray(jr.permutation(jr.fold_in(key, epoch), count))
                squares, seen = 0.0, 0
                for index, batch in _prefetched(reader, frames, order, int(batch_size)):
                    positions = jax.device_put(on_host[index])
                    if isinstance(current, Solution):
                        current = eqx.tree_at(lambda s: s.microscope.positions, current, positions)
                    else:
                        current = eqx.tree_at(lambda m: m.positions, current, positions)
                    current = reconstruct(current, batch, engine, trainable=trainable, num_iterations=1, key=key)
                    done, loss = done + 1, current.final_loss  # one read of the batch's loss history
                    progress_meter.update(done, loss)
                    if current.result in _STOPS:
                        result = current.result
                        break
                    squares += loss**2 * len(index)
                    seen += len(index)
                if result is not None:
                    break
                losses.append((squares / seen) ** 0.5)
                if _after_epoch(losses, lambda: solution(RESULTS.running), callback, checkpoint, checkpoint_every,
                                convergence):  # fmt: skip
                    result = RESULTS.converged
                    break
    except KeyboardInterrupt:
        # As `reconstruct`: keep the last completed batch. An interrupt before the first
        # batch has run leaves nothing to keep.
        if not isinstance(current, Solution):
            raise
        result = RESULTS.interrupted
    finally:
        progress_meter.close()
    final = solution(RESULTS.max_iterations_reached if result is None else result)
    if checkpoint is not None:
        checkpoint(final)
    return final


def _after_epoch(losses: list[float], running: Callable[[], Solution], callback, checkpoint, every: int,
                 convergence: Convergence | None) -> bool:  # fmt: skip
    """An epoch's end in both streamed loops, as `reconstruct` ends an iteration: the callback (with the
    microscope holding every position), the checkpoint every `every` epochs; whether the run has converged."""
    if callback is not None:
        callback(len(losses), losses[-1], running().microscope)
    if checkpoint is not None and every and len(losses) % every == 0:
        checkpoint(running())
    return convergence is not None and convergence(losses)


def _on_host(positions: Array) -> np.ndarray:
    """The scan's positions on the host, to take a batch's from: indexing the device array with
    a NumPy index runs an eager gather, 30-50 ms a batch on the CPU; a host slice is a transfer."""
    return np.asarray(positions)


@eqx.filter_jit
def _position_sums(engine: AbstractEngine, microscope, state, batch: MicroscopeData, trainable, previous):
    """`engine.position_sums` over a batch, added to the sums of the batches before it (`None`: none)."""
    sums = engine.position_sums(microscope, state, batch, trainable)
    return sums if previous is None else jtu.tree_map(jnp.add, previous, sums)


@eqx.filter_jit
def _step_from_sums(engine: AbstractEngine, microscope, state, sums, trainable):
    """As `reconstruct`'s step: the engine's step from the whole scan's sums, constrained, and whether it is finite."""
    new, new_state, loss = engine.step_from_sums(microscope, state, sums, trainable)
    new = constrain_step(new, microscope, trainable, ramp=not engine.holds_phase_ramp)
    return new, new_state, loss, jnp.isfinite(loss) & all_finite(eqx.filter(new, trainable))


def _whole_scan(
    microscope, frames: CXIFrames, engine: AbstractEngine, epochs: int, batch_size: int, trainable, key,
    progress_meter: AbstractProgressMeter, callback, checkpoint, checkpoint_every: int, convergence,
) -> Solution:  # fmt: skip
    """`reconstruct_from_file(..., whole_scan=True)`: one step per epoch from sums over every batch."""
    order = np.arange(frames.num_positions)
    slices = [order[first : first + batch_size] for first in range(0, len(order), batch_size)]
    if isinstance(microscope, Solution):
        current, state, spec = microscope.microscope, microscope.state, microscope.trainable
        key, losses = microscope.key, [float(loss) for loss in np.asarray(microscope.losses)]
    else:
        current = microscope
        spec = trainable_spec(microscope, _DEFAULT_TRAINABLE if trainable is None else trainable)
        engine.check_detector(microscope, spec)
        # The state of the whole scan (sub-pixel shifts decided over every position); the
        # first batch stands for the data (its frame shape, its devices).
        state = engine.init(microscope, frames.batch(slices[0]), spec)
        key, losses = (jr.PRNGKey(0) if key is None else key), []

    def solution(result: RESULTS) -> Solution:
        return Solution(
            microscope=current,
            state=state,
            losses=losses_array(losses),
            iteration=len(losses),
            result=result,
            key=key,
            trainable=spec,
        )

    if epochs == 0:
        return solution(RESULTS.max_iterations_reached)
    progress_meter.start(epochs * len(slices))
    result, done, best, best_loss = RESULTS.max_iterations_reached, 0, (current, state, len(losses)), np.inf
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as reader:
            for _ in range(epochs):
                sums, on_host = None, _on_host(current.positions)
                for index, batch in _prefetched(reader, frames, order, batch_size):
                    on_batch = eqx.tree_at(lambda m: m.positions, current, jax.device_put(on_host[index]))
                    sums = _position_sums(engine, on_batch, state, batch, spec, sums)
                    done += 1
                    progress_meter.update(done, losses[-1] if losses else float("nan"))
                new, new_state, loss, finite = _step_from_sums(engine, current, state, sums, spec)
                loss = float(loss)
                if loss < best_loss:
                    best, best_loss = (current, state, len(losses)), loss
                ceiling = max(DIVERGENCE_FACTOR * best_loss, losses[0] if losses else loss)
                if not bool(finite) or (best_loss > 0 and not loss <= ceiling):
                    result = RESULTS.nonfinite if not bool(finite) else RESULTS.diverged
                    current, state, length = best
                    del losses[length:]
                    break
                current, state = new, new_state
                losses.append(loss)
                if _after_epoch(losses, lambda: solution(RESULTS.running), callback, checkpoint, checkpoint_every,
                                convergence):  # fmt: skip
                    result = RESULTS.converged
                    break
    except KeyboardInterrupt:
        result = RESULTS.interrupted  # the last completed epoch is kept
    finally:
        progress_meter.close()
    current = engine.postprocess(current, state)
    final = solution(result)
    if checkpoint is not None:
        checkpoint(final)
    return final


def _check_batches(microscope: AbstractMicroscope, frames: CXIFrames, batch_size: int) -> int:
    """Refuse a `batch_size` below 1 and a microscope without one position per frame; the frame count."""
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
    count = int(microscope.positions.shape[0])
    if count != frames.num_positions:
        raise ValueError(
            f"`microscope` must hold one position per frame of the file ({frames.num_positions}), got {count}"
        )
    return count


def _template(
    microscope: AbstractMicroscope, frames: CXIFrames, engine: AbstractEngine, batch_size: int, key, trainable
) -> Solution:
    """`epochs=0`: the start as a `Solution`, its state made by `engine.init` on epoch 0's first batch
    (as a run makes it: the state's static choices, such as sub-pixel shifts, come from that batch)."""
    everywhere = microscope.positions
    index = np.asarray(jr.permutation(jr.fold_in(key, 0), everywhere.shape[0]))[:batch_size]
    on_batch = eqx.tree_at(lambda m: m.positions, microscope, everywhere[index])
    solution = reconstruct(on_batch, frames.batch(index), engine, trainable=trainable, num_iterations=0, key=key)
    return eqx.tree_at(lambda s: s.microscope.positions, solution, everywhere)


def _prefetched(
    reader: concurrent.futures.ThreadPoolExecutor, frames: CXIFrames, order: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, MicroscopeData]]:
    """`(index, batch)` for consecutive slices of `order`, each read while the previous one is used."""
    slices = [order[first : first + batch_size] for first in range(0, len(order), batch_size)]
    pending = reader.submit(frames.batch, slices[0])
    for number, index in enumerate(slices):
        batch = pending.result()
        if number + 1 < len(slices):
            pending = reader.submit(frames.batch, slices[number + 1])
        yield index, batch


#: Frame pixels a streamed search reads at a time, at most (`search_from_file`): 256 frames of
#: 64 x 64, 64 of 128 x 128, 16 of 256 x 256.
SEARCH_BATCH_PIXELS = 64 * 128 * 128


@eqx.filter_jit
def _block_sums(engine, microscope, batch: MicroscopeData, floor: Array, on_grid: bool):
    """A batch's share of a Marquardt search's normal equations, residual and pixel count.

    At module level, so that every search (and every pass of one) runs the same program.
    """
    blocks = _Blocks.of(batch, engine.eps, on_grid, floor)
    return engine.equations(microscope, blocks), blocks.count


def search_from_file(
    microscope: AbstractMicroscope,
    frames: CXIFrames,
    engine: AbstractEngine,
    *,
    max_steps: int,
    batch_size: int = 256,
    progress_meter: AbstractProgressMeter = NoProgressMeter(),
) -> Solution:
    """Run a Marquardt search (`PhaseFieldSearch`, `CurvatureSearch`) on a file's frames, streamed.

    Such a search fits a few numbers to the whole scan: its normal equations and its
    residual are sums over frames, so each step sums them over batches of at most
    `batch_size` positions and `SEARCH_BATCH_PIXELS` frame pixels (16 frames of 256 x 256)
    read from the file (the next read on a thread while the current one is summed) and
    never holds more than two batches of frames. A step reads the file once:
    the pass that scores a trial also sums the equations at the trial, which the next
    step starts from when the trial is kept. The steps, the damping and the stopping rule
    are the engine's own, so the result is the one `reconstruct` reaches with the frames in
    memory, except for the small floor under the linearised residual's square root
    (`eps` times the mean counts), taken here from the first batch.

    **Arguments:**

    - `microscope`: holding every position of the file in the file's order (e.g. from
      `reconstruct_from_file`); its object and probe are moved.
    - `frames`: an open `janssen.io.CXIFrames`.
    - `engine`: a `janssen.invert` Marquardt search.
    - `max_steps`: at most this many steps, >= 1.
    - `batch_size`: positions per batch at most, >= 1.
    - `progress_meter`: advanced once per step.

    **Returns:**

    A `Solution` (trainable: the object and the probe) whose `losses` are the RMS
    amplitude residual after each step and whose `result` is `RESULTS.converged` when the
    engine's stopping rule ended it (as `reconstruct` says), `RESULTS.interrupted` after a
    Ctrl-C (keeping the last completed step), else `RESULTS.max_iterations_reached`.
    """
    if not isinstance(engine, AbstractMarquardtSearch):
        raise TypeError(
            f"`engine` must be a Marquardt search (PhaseFieldSearch, CurvatureSearch), got {type(engine).__name__}"
        )
    if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"`max_steps` must be an integer >= 1, got {max_steps!r}")
    count = _check_batches(microscope, frames, batch_size)
    on_host = _on_host(microscope.positions)
    order = np.arange(count)
    trainable = ["object", "probe"]
    # The sums are the same over any grouping of the frames; a pass reads at most
    # `SEARCH_BATCH_PIXELS` frame pixels at a time, fewer positions than `batch_size` of
    # large frames (reads of 256 frames of 256 x 256, with the next read on its way and
    # their device copies, took a search 480 MB above its start on the large preset).
    read = min(int(batch_size), frames_within(frames.frame_shape, SEARCH_BATCH_PIXELS))
    first = frames.batch(order[:read])
    state = engine.init(microscope, first, trainable_spec(microscope, trainable))
    floor = AmplitudeResidual.of(first, engine.eps).floor
    dtype = first.intensities.dtype
    del first  # not held through the search
    on_grid = state.on_grid

    def sums(candidate) -> tuple[Array, Array, Array, Array]:
        totals = None
        for index, batch in _prefetched(reader, frames, order, read):
            part = eqx.tree_at(lambda m: m.positions, candidate, jax.device_put(on_host[index]))
            (normal, gradient, squares), pixels = _block_sums(engine, part, batch, floor, on_grid)
            new = (normal, gradient, squares, pixels)
            totals = new if totals is None else tuple(a + b for a, b in zip(totals, new, strict=True))
        assert totals is not None
        return totals

    current, losses, result = microscope, [], RESULTS.max_iterations_reached
    progress_meter.start(int(max_steps))
    # One reading thread for the whole search: a new thread a pass grew the resident memory by
    # ~20 MB a pass on a 4000-frame file (each new thread's allocator arena is kept).
    reader = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        equations = sums(microscope)
        for step in range(int(max_steps)):
            pixels = equations[3]
            trial = engine.apply(current, marquardt_step(equations[:3], state.damping))
            trial_equations = sums(trial)
            verdict = marquardt_verdict(current, trial, equations[2] / pixels, trial_equations[2] / pixels, state)
            state, current = engine.advance(state, verdict), verdict.microscope
            if bool(verdict.accept):
                equations = trial_equations
            losses.append(float(verdict.rms))
            progress_meter.update(step + 1, losses[-1])
            if bool(engine.terminate(state, losses_array(losses))):
                result = RESULTS.converged
                break
    except KeyboardInterrupt:
        result = RESULTS.interrupted  # `current` is the last completed step's (the start before the first)
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        progress_meter.close()
    return Solution(
        microscope=current,
        state=state,
        losses=losses_array(losses, dtype),
        iteration=len(losses),
        result=result,
        key=jr.PRNGKey(0),
        trainable=trainable_spec(current, trainable),
    )
