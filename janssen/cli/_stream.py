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
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax.numpy as jnp
import jax.random as jr

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

#: The engine of `--stream`'s first stage when none is named (see `_stages`): the default
#: schedule's first stage, which converges streamed as it does on the frames in memory (docs/scale.md).
STREAM_DEFAULT_ENGINE = "rpie"
# Each batch is one iteration of the engine (docs/scale.md): a loss that rises from one
# batch to the next is no sign of divergence and must not raise rPIE's damping (with it,
# on the small preset in batches of 8, 10 epochs reach object error 0.23; without, 0.056,
# as 10 rPIE iterations on the frames in memory); batched engines' heavy momentum
# carries one batch's change into the next batch's region.
_STREAM_DEFAULTS = {"adapt_alpha": False}
_BATCHED_DEFAULTS = {"momentum": 0.3}
#: With no engine named, `--stream` runs the default schedule's stages on the file: rPIE, a
#: phase-field search (`janssen.invert.search_from_file`), `AFTER_SEARCH`, the search again,
#: `AFTER_SEARCH` again; `--iterations` epochs split between the three PIE stages by these shares.
STREAM_SHARES = (0.4, 0.4, 0.2)
#: The PIE engine after each search, with its `[engine]` parameters.
AFTER_SEARCH = ("rpie", {"adapt_alpha": False})
#: The most steps of each search (`default_schedule`'s cap for its searches).
SEARCH_STEPS = jinv.DEFAULT_STAGE_ITERATIONS[2]
_STOPS = (jinv.RESULTS.interrupted, jinv.RESULTS.nonfinite, jinv.RESULTS.diverged, jinv.RESULTS.positions_off_object)


def stream_epochs(epochs: int) -> tuple[int, int, int]:
    """The epochs of `--stream`'s three PIE stages for `--iterations` = `epochs` (>= 1): 20, 20, 10 for 50."""
    first = max(1, round(STREAM_SHARES[0] * epochs))
    second = min(round(STREAM_SHARES[1] * epochs), epochs - first)
    return first, second, epochs - first - second


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

    rPIE for `auto`; `_STREAM_DEFAULTS` (and `_BATCHED_DEFAULTS` for a batched engine)
    where the engine has them and its `[engine]` table does not say otherwise.
    """
    name, params = settings.engine, dict(settings.engine_parameters)
    if name == AUTO:
        if params:
            raise UsageError(
                f"with --stream the default engine is {STREAM_DEFAULT_ENGINE} (the default schedule's first stage): "
                f"name it (engine = {STREAM_DEFAULT_ENGINE!r}) to give it [engine] parameters, got {sorted(params)}"
            )
        name = STREAM_DEFAULT_ENGINE
    defaults = _STREAM_DEFAULTS | (_BATCHED_DEFAULTS if settings.batched or params.get("mode") == "batched" else {})
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

    def __init__(self, epochs: int, first: int = 0):
        self.epochs, self.done, self.last, self.started = epochs, first, time.perf_counter(), None

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
        print(f"epoch {epoch}/{self.epochs}  loss {loss:.4g}  {took:.1f} s  ETA {eta}", file=sys.stderr, flush=True)


def reconstruct_streamed(settings: ReconstructSettings, out: pathlib.Path, kept: dict[str, Any]) -> int:
    """The streamed run: like `janssen reconstruct`, without ever holding all the frames.

    With `--resume` it continues a streamed run's result from its checkpoint (`_resumed_start`).
    """
    path, epochs, saved = settings.data, settings.iterations, None
    assert epochs is not None  # `read_settings` sets it with --stream
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
        # The report leaves the data unread; `--resume` reads the batch size back.
        records[1]["stream"] = {"batch_size": batch, "epochs": first + epochs}
        went_on = f"continuing {settings.resume} after epoch {first}: " if saved is not None else ""
        staged = saved is None and settings.engine == AUTO  # `_stages`
        what = f"{epochs} epochs of {type(engine).__name__}"
        if staged:
            rpie, again, last = stream_epochs(epochs)
            after = jinv.engine_class(AFTER_SEARCH[0]).__name__
            what = (
                f"the default stages: {rpie} epochs of RPIE, a phase-field search, {again} of {after}, the search, "
                f"{last} more"
            )
        print(
            f"janssen: streaming {count} positions in batches of {batch}: {went_on}{what}, saved into {out} after "
            "each epoch",
            file=sys.stderr,
            flush=True,
        )
        release_memory()  # the start's programs and pages
        started = time.perf_counter()
        if staged:
            first_stage = (engine, records, trainable)
            solution, engine, records, done = _stages(settings, start, frames, first_stage, batch, out, kept)
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
            )
            done = solution.iteration - first
        seconds = time.perf_counter() - started
        release_memory()
        verdict, written = _after_the_run(solution, frames, engine, out, records)
    print(f"streamed from {path}: {count} positions in batches of {batch}")
    print(summary(solution, seconds, out, written, verdict, unit="epochs and search steps" if staged else "epochs"))
    if not (solution.result == jinv.RESULTS.interrupted or received):
        return stopped("reconstruct", solution, out)
    remaining = epochs - done  # epochs: the searches' steps of the default stages are not counted
    if solution.result != jinv.RESULTS.interrupted or remaining == 0:
        print(f"interrupted ({signal_name()}) after the run had ended: {out} holds its result")
    else:
        # The checkpoint holds the last completed batch; `--resume` runs its epoch again from the start.
        hint = resume_command(settings, out, remaining)
        last = type(engine).__name__
        later = f" (the last stage's engine, {last}; the searches are not run by --resume)" if staged else ""
        print(
            f"interrupted ({signal_name()}) after {first + done} of {first + epochs} epochs: {out} holds the "
            f"last completed batch; continue with `{hint}`{later}"
        )
    return signal_exit()


def _stages(settings: ReconstructSettings, start, frames: jio.CXIFrames, first_stage, batch: int, out, kept):
    """`--stream` with no engine named: rPIE, the phase-field search, `AFTER_SEARCH`, the search, `AFTER_SEARCH`.

    The PIE stages run through `reconstruct_from_file` (their epochs: `stream_epochs`), each
    checkpointing into `out` after every epoch with its engine (the losses of the stages
    before it kept in front); the searches through `search_from_file` (one read of the file
    a step). A search that follows a stage of no epochs is left out. Returns the solution
    (every stage's losses), the last PIE stage's engine and records (what `--resume`
    continues) and prints the stages run.
    """
    engine, records, trainable = first_stage
    name, params = AFTER_SEARCH
    paths = jinv.trainable_paths(start, trainable)
    after, after_record = make_engine(name, params, settings, start, paths)
    after_records = (after_record, {**records[1], "engine": name})
    epochs = stream_epochs(settings.iterations)
    plan = [
        (engine, records, epochs[0]),
        None,
        (after, after_records, epochs[1]),
        None,
        (after, after_records, epochs[2]),
    ]
    lines = _EpochLines(sum(epochs))
    history: list[float] = []
    stages: list[tuple[str, int, Any]] = []  # (engine, epochs or steps, RESULTS)
    current, solution, done, ran = start, None, 0, 0
    for number, stage in enumerate(plan):
        if number:
            release_memory(programs=False)  # the second search and PIE stage run the first's programs again
        if stage is None:  # a search, after a PIE stage that ran
            if not ran:
                continue
            search = jinv.PhaseFieldSearch(order=jinv.phase_field_order(current))
            print(
                f"janssen: phase-field search (order {search.order}): at most {SEARCH_STEPS} steps, one read of "
                "the file each",
                file=sys.stderr,
                flush=True,
            )
            found = jinv.search_from_file(current, frames, search, max_steps=SEARCH_STEPS, batch_size=batch)
            history += _losses(found)
            stages.append(("PhaseFieldSearch", found.iteration, found.result))
            current = found.microscope
            solution = _with_history(solution, current, history, found.result)
            if found.result in _STOPS:
                break
            continue
        engine, records, count = stage
        ran = count
        if not count:
            continue
        before, offset = list(history), done
        save = checkpointer(out, frames.geometry, engine, records, kept)
        run = jinv.reconstruct_from_file(
            current,
            frames,
            engine,
            epochs=count,
            batch_size=batch,
            trainable=trainable,
            key=jr.fold_in(jr.PRNGKey(settings.seed), number),
            callback=lambda epoch, loss, scope, offset=offset: lines(offset + epoch, loss, scope),
            checkpoint=lambda s, before=before: save(_with_history(s, s.microscope, before + _losses(s), s.result)),
            checkpoint_every=1,
        )
        done += run.iteration
        history += _losses(run)
        stages.append((type(engine).__name__, run.iteration, run.result))
        current = run.microscope
        solution = _with_history(run, current, history, run.result)
        last = (engine, records)
        if run.result in _STOPS:
            break
    assert solution is not None  # the first stage has >= 1 epoch
    engine, records = last
    checkpointer(out, frames.geometry, engine, records, kept)(solution)  # the searches after the last checkpoint
    words = ", ".join(f"{name} {count}{' (interrupted)' if result == jinv.RESULTS.interrupted else ''}"
                      for name, count, result in stages)  # fmt: skip
    print(f"stages: {words}", file=sys.stderr, flush=True)
    return solution, engine, records, done


def _losses(solution: jinv.Solution) -> list[float]:
    return [float(loss) for loss in solution.losses]


def _with_history(solution: jinv.Solution, microscope, history: list[float], result) -> jinv.Solution:
    """A PIE stage's `solution` (its engine state, key, trainable) with `microscope`, all losses and `result`."""
    return jinv.Solution(
        microscope=microscope,
        state=solution.state,
        losses=jnp.asarray(history, dtype=solution.losses.dtype),
        iteration=len(history),
        result=result,
        key=solution.key,
        trainable=solution.trainable,
    )


def _fresh_start(settings: ReconstructSettings, frames: jio.CXIFrames):
    """A new run's start (the microscope), engine, records and trainable names."""
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
    name, engine, record, trainable = stream_engine(settings, start)
    cli = {**cli_record(settings, frames.geometry, start), "engine": name, "data": str(path.resolve())}
    return start, engine, (record, cli), trainable


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
