"""`janssen reconstruct --stream`: the frames stay in the CXI file and are read a batch of positions at a time.

Public calls only: `janssen.io.CXIFrames` opens the file, `janssen.invert.init_far_field_from_file`
builds the default path's start from the frames nearest the scan's centre (from `--probe`, loaded
as the in-memory path loads it, when given), and
`janssen.invert.reconstruct_from_file` runs the PIE engine an epoch (a pass over every
position) at a time, checkpointing into the result file after each; with `--resume` the
result's checkpoint is read back (`janssen.invert.load_solution`, into the template that
`reconstruct_from_file(..., epochs=0)` makes) and the run goes on. The verdict reads the
frames again, a block at a time (`janssen.invert.compute_verdict` on the open file), and the
measured-vs-predicted patterns figure reads the three frames it shows.
"""

import contextlib
import dataclasses
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.random as jr
import numpy as np

import janssen.invert as jinv
import janssen.io as jio

from ._engines import make_engine, trainable_names
from ._errors import EXIT_TERMINATED, UsageError
from ._inputs import EXTRA_MODE_POWER, check_data_path, check_modes, check_probe_modes, load_probe, object_grid
from ._memory import release_memory
from ._output import figures
from ._resume import check_frame_count, cli_record, read_saved, resume_command, resumed
from ._run import checkpointer, save_verdict, verdict_of
from ._settings import AUTO, ReconstructSettings
from ._signals import received, signal_exit, signal_name
from ._summary import data_line, stopped, summary

# A sequential engine refines one batch per iteration (docs/scale.md): a loss that rises
# from one batch to the next is no sign of divergence and must not raise rPIE's damping
# (with it, on the small preset in batches of 8, 10 epochs reach object error 0.23;
# without, 0.056, as 10 rPIE iterations on the frames in memory). A batched engine takes
# one step per epoch from sums over every batch (`whole_scan`), the in-memory run's steps,
# and keeps its own defaults.
_STREAM_DEFAULTS = {"adapt_alpha": False}
_STOPS = (jinv.RESULTS.interrupted, jinv.RESULTS.nonfinite, jinv.RESULTS.diverged, jinv.RESULTS.positions_off_object)


@contextlib.contextmanager
def open_frames(path: pathlib.Path) -> Iterator[jio.CXIFrames]:
    """The data file as `CXIFrames` (open while the run lasts); `UsageError` when it cannot be."""
    check_data_path(path, "a CXI file")
    if path.name.endswith((".npz.bz2", ".npz")):
        raise UsageError(
            f"--stream reads CXI files; {str(path)!r} is the Siemens-star archive, which fits in memory: "
            "leave out --stream"
        )
    try:
        frames = jio.CXIFrames(path)
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"cannot read data file {str(path)!r}: {error}") from error
    with frames:
        yield frames


def stream_engine(settings: ReconstructSettings, start) -> tuple[str, jinv.AbstractEngine, dict[str, Any], list[str]]:
    """The engine's name, the engine, its record and the trainable names.

    A named engine (`auto` runs `_stages`); `_STREAM_DEFAULTS` for a sequential engine where
    the engine has them and its `[engine]` table does not say otherwise (a batched one
    streams whole-scan steps).
    """
    name, params = settings.engine, dict(settings.engine_parameters)
    defaults = {} if settings.batched or params.get("mode") == "batched" else _STREAM_DEFAULTS
    allowed = set(jinv.engine_parameter_names(name))
    params = {key: value for key, value in defaults.items() if key in allowed} | params
    trainable = trainable_names(settings, name, start)
    try:
        paths = jinv.trainable_paths(start, trainable)
    except ValueError as error:
        raise UsageError(f"--refine: {error}") from error
    engine, record = make_engine(name, params, settings, start, paths)
    return name, engine, record, trainable


class _EpochLines:
    """The per-epoch progress line on stderr: epoch, loss, seconds it took and time left.

    `first`: the epochs a resumed run had done before (its numbering goes on). The first
    epoch of a run compiles the step (once per batch size: the last batch may be
    smaller), so the time left is measured over the epochs after it.
    """

    def __init__(self, epochs: int, first: int = 0, label: str = ""):
        self.epochs, self.done, self.last, self.started = epochs, first, time.perf_counter(), None
        self.label = f"{label} " if label else ""

    def __call__(self, epoch: int, loss: float, microscope: Any) -> None:
        del microscope
        now = time.perf_counter()
        took, self.last = now - self.last, now
        if self.started is None:
            self.started = now
        eta = "--"
        if epoch > self.done + 1:
            left = round((now - self.started) / (epoch - self.done - 1) * (self.epochs - epoch))
            eta = f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"
        line = f"{self.label}epoch {epoch}/{self.epochs}  loss {loss:.4g}  {took:.1f} s  ETA {eta}"
        print(line, file=sys.stderr, flush=True)


def reconstruct_streamed(settings: ReconstructSettings, out: pathlib.Path, kept: dict[str, Any]) -> int:
    """The streamed run: like `janssen reconstruct`, without ever holding all the frames.

    With `--resume` it continues a streamed run's result from its checkpoint (`_resumed_start`).
    """
    path, epochs, saved = settings.data, settings.iterations, None
    if settings.resume is not None:  # refused before the data file is opened
        saved = read_saved(settings.resume, stream=True, data=path)
    batch = settings.stream_batch or int(saved["cli"]["stream"]["batch_size"])
    with open_frames(path) as frames:
        count = frames.num_positions
        if saved is None:
            check_modes(settings.modes, count, path)
        else:
            check_frame_count(saved, settings.resume, path, count)
        grid = object_grid(path, frames)
        print(data_line(frames, grid, False, stream_batch=batch), file=sys.stderr, flush=True)
        if saved is None:
            start, engine, records, trainable = _fresh_start(settings, frames)
        else:
            start, engine, records, trainable = _resumed_start(settings, saved, frames, batch)
        first = start.iteration if isinstance(start, jinv.Solution) else 0
        staged = isinstance(engine, tuple)  # the default schedule's stages: `_stages`
        # The report leaves the data unread; `--resume` reads the batch size back. A staged run
        # records its cap on epochs and search steps together (`None`: the stages' own caps).
        records[1]["stream"] = {"batch_size": batch, "epochs": epochs if staged else first + epochs}
        went_on = f"continuing {settings.resume} after epoch {first}: " if saved is not None else ""
        if staged:
            cap = "" if epochs is None else f", {epochs} epochs and search steps at most"
            what = (
                "the default schedule's stages (rPIE and ePIE a batch at a time, the phase-field search, batched mPIE "
                f"a whole-scan step an epoch, the search, mPIE again), each until it converges{cap}"
            )
        else:
            what = f"{epochs} epochs of {type(engine).__name__}"
        print(
            f"janssen: streaming {count} positions in batches of {batch}: {went_on}{what}, saved into {out} after "
            "each epoch",
            file=sys.stderr,
            flush=True,
        )
        release_memory()  # the start's programs and pages
        started = time.perf_counter()
        if staged:
            solution, engine, done, remaining, note = _stages(
                settings, start, frames, engine, batch, out, kept, records
            )
        else:
            solution = jinv.reconstruct_from_file(
                start,
                frames,
                engine,
                epochs=epochs,
                batch_size=batch,
                trainable=trainable,
                key=jr.PRNGKey(settings.seed),
                callback=_EpochLines(first + epochs, first),
                checkpoint=checkpointer(out, frames.geometry, engine, records, kept),
                checkpoint_every=1,
                whole_scan=engine.sums_over_positions,
            )
            done = solution.iteration - first
            remaining, note = epochs - done, ""
        seconds = time.perf_counter() - started
        release_memory()
        verdict, written = _after_the_run(solution, frames, engine, out, records)
    print(f"streamed from {path}: {count} positions in batches of {batch}")
    print(summary(solution, seconds, out, written, verdict, unit="epochs and search steps" if staged else "epochs"))
    if not (solution.result == jinv.RESULTS.interrupted or received):
        return stopped("reconstruct", solution, out)
    if solution.result != jinv.RESULTS.interrupted or remaining == 0:
        print(f"interrupted ({signal_name()}) after the run had ended: {out} holds its result")
    else:
        # The checkpoint holds the last completed batch (a whole-scan engine's: epoch); `--resume`
        # runs its epoch again from the start.
        hint = resume_command(settings, out, remaining)
        unit = "epoch" if engine.sums_over_positions else "batch"
        of = "" if staged else f" of {first + epochs}"
        print(
            f"interrupted ({signal_name()}) after {first + done}{of} epochs: {out} holds the last completed {unit}; "
            f"continue with `{hint}`{note}"
        )
    return signal_exit()


def _stages(settings: ReconstructSettings, start, frames: jio.CXIFrames, stages, batch: int, out, kept, records):
    """`--stream` with no engine named: `janssen.invert.default_schedule`'s stages on the file.

    As `janssen.invert.run_schedule` runs them in memory: one after another, each from where
    the last stopped, until it converges (`Stage.convergence` on the per-epoch losses) or
    reaches its cap, `--iterations` capping all of them together (epochs and search steps).
    The PIE stages run through `reconstruct_from_file`, checkpointing into `out` after every
    epoch with their engine (the losses of the stages before them kept in front); the
    searches through `search_from_file` (one read of the file a step). Returns the solution
    (every stage's losses), the engine a checkpoint names (the last PIE stage's: what
    `--resume` continues), the PIE epochs run, the epochs `--resume` should run (what the
    interrupted stage had left) and a note for the interrupted message; prints the stages run.
    """
    left = sum(stage.max_iterations for stage in stages) if settings.iterations is None else settings.iterations
    history: list[float] = []
    ran: list[tuple[str, int, Any, int]] = []  # (engine, epochs or steps, RESULTS, cap)
    current, solution, last, done = start, None, None, 0
    for number, stage in enumerate(stages):
        budget = min(stage.max_iterations, left)
        if budget == 0:
            break
        if number:
            release_memory(programs=False)  # a later stage may run an earlier one's programs again
        engine = stage.engine
        if isinstance(engine, jinv.AbstractMarquardtSearch):
            print(
                f"janssen: {type(engine).__name__}: at most {budget} steps, one read of the file each",
                file=sys.stderr,
                flush=True,
            )
            run = jinv.search_from_file(current, frames, engine, max_steps=budget, batch_size=batch)
            if solution is None:  # nothing to carry the search's losses yet: a template of the search's result
                solution = run
        else:
            if not engine.sums_over_positions and hasattr(engine, "adapt_alpha"):
                engine = dataclasses.replace(engine, **_STREAM_DEFAULTS)  # batch losses are not comparable
            before = list(history)
            save = checkpointer(out, frames.geometry, engine, records, kept)
            lines = _EpochLines(budget, label=type(engine).__name__)
            run = jinv.reconstruct_from_file(
                current,
                frames,
                engine,
                epochs=budget,
                batch_size=batch,
                trainable=stage.trainable,
                key=jr.fold_in(jr.PRNGKey(settings.seed), number),
                callback=lambda epoch, loss, scope, lines=lines: lines(epoch, loss, scope),
                checkpoint=lambda s, before=before: save(_with_history(s, s.microscope, before + _losses(s), s.result)),
                checkpoint_every=1,
                whole_scan=engine.sums_over_positions,
                convergence=stage.convergence,
            )
            done += run.iteration
            solution, last = run, engine
        history += _losses(run)
        left -= run.iteration
        ran.append((type(engine).__name__, run.iteration, run.result, budget))
        current = run.microscope
        solution = _with_history(solution, current, history, run.result)
        if run.result in _STOPS:
            break
    assert solution is not None and last is not None  # the first stage is a PIE stage of >= 1 epoch
    checkpointer(out, frames.geometry, last, records, kept)(solution)  # the searches after the last checkpoint
    kept["stages"] = tuple((name, count, jinv.result_name(result)) for name, count, result, _ in ran)
    words = ", ".join(
        f"{name} {count} ({jinv.result_name(result).replace('_', ' ')})" for name, count, result, _ in ran
    )
    print(f"stages: {words}", file=sys.stderr, flush=True)
    name, count, result, budget = ran[-1]
    remaining, note = budget - count, f" (the {type(last).__name__} stage; later stages are not run by --resume)"
    return solution, last, done, remaining, note


def _losses(solution: jinv.Solution) -> list[float]:
    return [float(loss) for loss in solution.losses]


def _with_history(solution: jinv.Solution, microscope, history: list[float], result) -> jinv.Solution:
    """A PIE stage's `solution` (its engine state, key, trainable) with `microscope`, all losses and `result`."""
    return jinv.Solution(
        microscope=microscope,
        state=solution.state,
        # A transfer: `jnp.asarray` of a list compiles (and keeps) a program for every new length.
        losses=jax.device_put(np.asarray(history, dtype=solution.losses.dtype)),
        iteration=len(history),
        result=result,
        key=solution.key,
        trainable=solution.trainable,
    )


def _fresh_start(settings: ReconstructSettings, frames: jio.CXIFrames):
    """A new run's start (the microscope), engine (a tuple of stages for `auto`), records and trainable names."""
    path = settings.data
    # `--probe` as the in-memory path loads it (checked before any frame is read), scaled by the
    # start to the counts of the frames it reads and centred on their bright field.
    probe = None if settings.probe is None else load_probe(settings.probe, frames)
    if probe is not None:
        check_probe_modes(probe, settings.modes)
    # `--modes` adds modes to the centred start as the in-memory path does (`extend_modes`, same share).
    start = jinv.init_far_field_from_file(
        frames, probe=probe, modes=settings.modes, mode_share=EXTRA_MODE_POWER, scale_probe=True
    )
    cli = {**cli_record(settings, frames.geometry, start), "data": str(path.resolve())}
    if settings.engine == AUTO:  # as in memory: the default schedule's stages, recorded as `auto`
        stages, record = make_engine(AUTO, settings.engine_parameters, settings, start)
        return start, stages, (record, {**cli, "engine": AUTO}), None
    name, engine, record, trainable = stream_engine(settings, start)
    return start, engine, (record, {**cli, "engine": name}), trainable


def _resumed_start(settings: ReconstructSettings, saved: dict[str, Any], frames: jio.CXIFrames, batch: int):
    """A resumed run's start (the saved `Solution`), engine, records and trainable names (`None`: the saved ones).

    The engine, its parameters, the refined parts and the probe's modes come from the
    result file, as in memory; the engine's state (momentum, damping, the probe delay's
    count), the epoch count, losses and key from its checkpoint.
    """
    engine, start, records = resumed(settings.resume, saved, frames.geometry, settings, stream=(frames, batch))
    return start, engine, records, None


def _after_the_run(solution, frames: jio.CXIFrames, engine, out: pathlib.Path, records) -> tuple[Any, list]:
    """The verdict, read from the file a block at a time and saved, and the figures; none after a second
    signal or SIGTERM (as the normal path: the scheduler's kill follows)."""
    stopped_by_signal = solution.result == jinv.RESULTS.interrupted
    hurry = signal_exit() == EXIT_TERMINATED or len(received) > int(stopped_by_signal)
    if received and hurry:
        return None, []
    print("janssen: the verdict reads the frames again, a block at a time", file=sys.stderr, flush=True)
    verdict = verdict_of(solution, frames)
    if verdict is not None:
        save_verdict(solution, frames.geometry, engine, out, records, verdict)
    release_memory()
    # The patterns figure reads only the frames it shows from the open file.
    return verdict, figures(solution, out, verdict, streamed=frames)
