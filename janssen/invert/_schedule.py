"""Schedules: engines run one after another by the one driver, each until it converges."""

import functools
from collections.abc import Callable, Generator, Sequence
from typing import Any

import equinox as eqx
import jax.random as jr
from jaxtyping import PRNGKeyArray

from .._data import MicroscopeData
from ..scopes._base import AbstractMicroscope
from ._checkpoint import result_name
from ._convergence import Convergence
from ._engines.base import AbstractEngine
from ._progress import AbstractProgressMeter, NoProgressMeter
from ._ramp import level_phase_ramp
from ._reconstruct import reconstruct
from ._results import RESULTS
from ._solution import Solution
from ._trainable import refines


class Stage(eqx.Module):
    """One engine of a schedule: at most `max_iterations`, stopped early by `convergence`.

    **Arguments:**

    - `engine`: the engine.
    - `max_iterations`: the most iterations this stage runs, >= 0.
    - `convergence`: when the stage has converged (`None`: it runs all its iterations).
    - `trainable`: what it refines (names, as `reconstruct` takes them; default object
      and probe).
    - `prepare`: a function applied to the schedule's current microscope before the
      stage starts from it (e.g. a trial dilation of the scan); `None`: start as it is.
    - `keep`: whether the stage's result becomes the schedule's current microscope
      (default). A stage with `keep=False` is a *trial*: the schedule goes on from the
      microscope before it, and only Ctrl-C in it stops the schedule (a trial that ends
      non-finite or off the object is just a bad trial).
    """

    engine: AbstractEngine
    max_iterations: int = eqx.field(static=True)
    convergence: Convergence | None = Convergence()
    trainable: Any = eqx.field(default=None, static=True)
    prepare: Callable[[AbstractMicroscope], AbstractMicroscope] | None = eqx.field(default=None, static=True)
    keep: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not (isinstance(self.max_iterations, int) and self.max_iterations >= 0):
            raise ValueError(f"`max_iterations` must be an integer >= 0, got {self.max_iterations!r}")


class ScheduleRun(eqx.Module):
    """What `run_schedule` returns.

    - `solution`: the last stage's `Solution` (pass it to `reconstruct` with that stage's
      engine to continue).
    - `engine`: the last stage's engine.
    - `stages`: `(engine name, iterations run, result name)` for every stage run.
    - `losses`: the losses of all stages, in order (a tuple of floats).
    - `microscope`: where the schedule ended: the last kept stage's microscope (the same
      as `solution.microscope` unless the last stage was a trial, `Stage(keep=False)`).
    """

    solution: Solution
    engine: AbstractEngine
    stages: tuple[tuple[str, int, str], ...] = eqx.field(static=True)
    losses: tuple[float, ...] = eqx.field(static=True)
    microscope: AbstractMicroscope


_STOPS = (RESULTS.nonfinite, RESULTS.diverged, RESULTS.interrupted, RESULTS.positions_off_object)


def run_schedule(
    microscope: AbstractMicroscope,
    data: MicroscopeData,
    stages: Sequence[Stage] | Generator[Stage, Solution, None],
    *,
    max_iterations: int | None = None,
    key: PRNGKeyArray | None = None,
    progress_meter: AbstractProgressMeter = NoProgressMeter(),
    checkpoint: Callable[[Solution, AbstractEngine], None] | None = None,
    checkpoint_every: int = 10,
    level_ramp: bool | None = None,
    after_stage: Callable[[Solution, AbstractEngine], None] | None = None,
) -> ScheduleRun:
    """Run `stages` one after another, each from where the previous one stopped.

    Each stage is one `reconstruct` call (the one driver: progress, checkpoints, Ctrl-C,
    the finite-value guard) with a fresh engine state. A kept stage that stops abnormally
    (interrupted, non-finite, diverged, a probe window off the object) ends the schedule
    there; Ctrl-C between stages ends it as interrupted.

    **Arguments:**

    - `microscope`: the start.
    - `data`: the measurements.
    - `stages`: the `Stage`s, at least one: a sequence, or a *plan*, a generator that
      yields each next stage and is sent each stage's `Solution` (so that it can choose
      the next from the results: `refine_geometry` is such a plan, with trial stages).
    - `max_iterations`: a cap on the iterations of all stages together (`None`: each
      stage's own `max_iterations`); the stages run in order until it is spent.
    - `key`: PRNG key (each stage gets its own, folded from it).
    - `progress_meter`, `checkpoint_every`: as for `reconstruct`.
    - `checkpoint`: called as `checkpoint(solution, engine)` (e.g. to save the stage's
      `Solution` with its engine): during each stage as `reconstruct` calls it, a
      stage's end saved as `RESULTS.running` unless it stopped the schedule, and the
      schedule's end once more as it ended.
    - `level_ramp`: when the last stage ends normally (converged or at its cap) having
      refined the object and the probe together, move the object's mean linear phase
      onto the probe (`level_phase_ramp`; the predictions do not change) and start that
      stage's engine state afresh from the result. `None` (default): where the engines do
      not pin the phase ramp (`microscope.phase_ramp_gauge` is `False`: the near field).
      Measured on janssen's near-field cone beam with a structured probe: object error
      0.075 without, 0.006 once the ramp was removed.
    - `after_stage`: called as `after_stage(solution, engine)` when a stage has ended and
      its checkpoint is saved, before the next stage starts (`janssen reconstruct` drops
      the finished stage's compiled programs there and trims the heap).

    **Returns:**

    A `ScheduleRun`.
    """
    if max_iterations is not None and max_iterations < 0:
        raise ValueError(f"`max_iterations` must be >= 0, got {max_iterations}")
    if isinstance(stages, Generator):
        plan, left = stages, max_iterations
    else:
        stages = tuple(stages)
        if not stages:
            raise ValueError("`stages` must hold at least one Stage, got none")
        plan = iter(stages)
        left = sum(stage.max_iterations for stage in stages) if max_iterations is None else max_iterations
    key = jr.PRNGKey(0) if key is None else key
    current: AbstractMicroscope = microscope
    solution, engine, record, losses, kept = None, None, [], [], True
    try:
        stage = next(plan, None)
        if stage is None:
            raise ValueError("`stages` must hold at least one Stage, got none")
        index = 0
        while True:
            budget = stage.max_iterations if left is None else min(stage.max_iterations, left)
            if budget == 0 and solution is not None:
                break
            engine = stage.engine
            start = current if stage.prepare is None else stage.prepare(current)
            saver = (
                None if checkpoint is None or not stage.keep else functools.partial(_save_running, checkpoint, engine)
            )
            solution = reconstruct(
                start,
                data,
                engine,
                trainable=stage.trainable,
                num_iterations=budget,
                key=jr.fold_in(key, index),
                progress_meter=progress_meter,
                checkpoint=saver,
                checkpoint_every=checkpoint_every,
                convergence=stage.convergence,
            )
            index += 1
            ran = len(solution.losses)
            left = None if left is None else left - ran
            losses += [float(value) for value in solution.losses]
            record.append((type(engine).__name__, ran, result_name(solution.result)))
            if after_stage is not None:
                after_stage(solution, engine)
            kept = stage.keep
            if kept:
                current = solution.microscope
            if solution.result == RESULTS.interrupted or (kept and solution.result in _STOPS):
                break
            try:
                stage = plan.send(solution) if isinstance(plan, Generator) else next(plan)
            except StopIteration:
                break
    except KeyboardInterrupt:
        # Ctrl-C between stages (while a plan chooses the next): stop where the last stage left off.
        if solution is None:
            raise
        solution = eqx.tree_at(lambda s: s.result, solution, RESULTS.interrupted)
    finally:
        if isinstance(plan, Generator):
            plan.close()
    if level_ramp is None:
        level_ramp = not solution.microscope.phase_ramp_gauge
    if level_ramp and kept and solution.result not in _STOPS and _refines_object_and_probe(solution):
        leveled = level_phase_ramp(solution.microscope)
        fresh = engine.init(leveled, data, solution.trainable)
        solution = eqx.tree_at(lambda s: (s.microscope, s.state), solution, (leveled, fresh))
        current = leveled
    if checkpoint is not None and solution.result not in _STOPS:
        checkpoint(solution, engine)  # the schedule's end, as it ended (stage ends were saved as running)
    return ScheduleRun(solution, engine, tuple(record), tuple(losses), current)


def _save_running(checkpoint: Callable[[Solution, AbstractEngine], None], engine, solution: Solution) -> None:
    """A stage's checkpoint: a stage that ended normally is saved as `running` (the schedule goes on)."""
    if solution.result not in _STOPS:
        solution = eqx.tree_at(lambda s: s.result, solution, RESULTS.running)
    checkpoint(solution, engine)


def _refines_object_and_probe(solution: Solution) -> bool:
    return refines(solution.trainable, solution.microscope, "object", "probe")


#: Iteration caps of `default_schedule`'s six stages.
DEFAULT_STAGE_ITERATIONS = (100, 200, 8, 100, 8, 100)


def default_schedule(microscope: AbstractMicroscope) -> tuple[Stage, ...]:
    """The schedule `janssen reconstruct` runs when no engine is named.

    1. Sequential rPIE (`RPIE()`: near-Newton object steps) until the residual stops
       falling: from a data-derived start it removes most of the error in a few tens of
       iterations.
    2. Sequential ePIE with steps of 0.25 (`EPIE(object_step=0.25, probe_step=0.25)`, the
       steps PtyLab uses by default) until it stops falling. Sequential updates leave a
       noise-limited plateau whose height grows with the step: on the real Siemens star
       rPIE levels off at R = 0.0164 and these smaller steps take it to 0.0124, with the
       high spatial frequencies of the peers' images (complex FRC 0.50 at 0.4 cycles/px
       against pty-chi's; rPIE alone: 0.13). From a unit object these small steps alone
       are slow (small preset: object error 0.21 after 60 iterations, rPIE 0.018).
    3. `PhaseFieldSearch(order=phase_field_order(microscope))`: a smooth phase across the
       object (cosines with periods down to about four probe widths) and a quadratic phase
       on the probe, fitted to the data as a few tens of numbers, kept only where the
       residual falls. PIE's local updates shrink such a phase slowly on wide fields: on
       a 620² object scanned at 4000 positions (`simulate(64, 4000, photons=6e4)`) the
       schedule without this stage ended at object error 0.093, a phase of ±0.2 rad
       varying over hundreds of pixels; with it, 0.059 (the truth itself, refined by
       batched mPIE, settles at 0.055). On small fields it changes little.
    4. Batched mPIE (`MomentumPIE(mode="batched")`: every position from the same state,
       heavy momentum), which has no such plateau: on the star it takes R from 0.0124 to
       0.0112 in 25 iterations, the FRC unchanged.
    5. `PhaseFieldSearch` again, for what is left of the smooth phase once mPIE has
       removed the finer errors that hid it (on the 620² field above: 0.066 to 0.059).
    6. Batched mPIE again, last, so that `--resume` continues it.

    The PIE stages stop on `Convergence()` (R falling by less than 0.1 % per 10
    iterations), the phase-field searches after two steps in a row that were rejected or
    lowered the squared residual by less than 1e-5 of it, each at the latest at its cap,
    `DEFAULT_STAGE_ITERATIONS`.

    **Arguments:**

    - `microscope`: the starting microscope: the phase-field searches' order is chosen
      from its object's size and its probe's width (`phase_field_order`); the rest of the
      schedule is the same for every microscope the PIE engines can update today.

    **Returns:**

    A tuple of `Stage`s for `run_schedule`.
    """
    from ._engines.phase_field import PhaseFieldSearch, phase_field_order
    from ._engines.pie import EPIE, RPIE, MomentumPIE

    rpie, epie, field, mpie, field_again, mpie_again = DEFAULT_STAGE_ITERATIONS
    search = PhaseFieldSearch(order=phase_field_order(microscope))
    return (
        Stage(RPIE(), rpie, Convergence()),
        Stage(EPIE(object_step=0.25, probe_step=0.25), epie, Convergence()),
        Stage(search, field, None),
        Stage(MomentumPIE(mode="batched"), mpie, Convergence()),
        Stage(search, field_again, None),
        Stage(MomentumPIE(mode="batched"), mpie_again, Convergence()),
    )
