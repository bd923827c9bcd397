"""`janssen reconstruct`: run an engine on a dataset, save the result and figures.

The command is parsing plus public calls: `_settings` (flags over the config, checked),
`_inputs` (data, probe, starting microscope), `_engines` (the engine by name),
`_resume`, `_run`, `_output` (the result file and figures) and `_summary` (what is printed).
"""

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

import janssen.invert as jinv
import janssen.io as jio

from ._args import DEFAULT_ITERATIONS
from ._engines import make_engine, trainable_names
from ._errors import EXIT_TERMINATED, UsageError
from ._inputs import check_modes, load_data, near_field_geometry, object_grid, start_microscope
from ._memory import release_memory
from ._output import figures, output_lock, output_path
from ._resume import check_frame_count, cli_record, read_saved, resume_command, resumed
from ._run import refine_geometry, run_engine, save_verdict, verdict_of, write_uncertainty
from ._settings import ReconstructSettings, read_settings
from ._signals import command, received, signal_exit, signal_name
from ._stream import reconstruct_streamed
from ._summary import data_line, stopped, summary


def run_reconstruct(args: argparse.Namespace) -> int:
    """Load, reconstruct, save and summarise; the exit code says how the run ended (`EXIT_*`).

    Bad input gives one line on stderr and exit 2, before anything is written.
    """

    def body(kept: dict[str, Any]) -> int:
        settings = read_settings(args)
        out = output_path(settings)
        with output_lock(out):
            return _reconstruct(settings, out, kept)

    return command("reconstruct", body)


def _reconstruct(settings: ReconstructSettings, out: pathlib.Path, kept: dict[str, Any]) -> int:
    if settings.stream:
        return reconstruct_streamed(settings, out, kept)
    data, engine, start, trainable, records, notes = _prepare(settings)
    if settings.iterations is None and settings.resume is not None:
        # The saved run's engine goes on for the usual count.
        settings = dataclasses.replace(settings, iterations=DEFAULT_ITERATIONS)
    first = start.iteration if isinstance(start, jinv.Solution) else 0
    iterations = settings.iterations
    # The default schedule runs for at most the sum of its stages' caps.
    wanted = sum(stage.max_iterations for stage in engine) if iterations is None else iterations
    planned = engine if isinstance(engine, tuple) else None
    interrupted = False
    if settings.geometry:
        start, interrupted = refine_geometry(start, data, settings.seed)
        if interrupted:  # keep what the geometry stage reached: a result file with no engine iterations
            iterations = 0
    release_memory()  # the probe search's programs and pages
    solution, seconds, engine = run_engine(
        start, data, engine, iterations, settings.seed, out, kept, trainable=trainable, records=records
    )
    release_memory()  # the engines' programs, before the verdict and figures
    interrupted = interrupted or solution.result == jinv.RESULTS.interrupted or bool(received)
    verdict, written = None, []
    # After SIGTERM the scheduler's kill follows, and a second Ctrl-C (or one during the final
    # save) asks to end now: no verdict, no figures.
    stopped_by_signal = solution.result == jinv.RESULTS.interrupted
    hurry = signal_exit() == EXIT_TERMINATED or len(received) > int(stopped_by_signal)
    if not (received and hurry):
        verdict = verdict_of(solution, data)
        release_memory()
        if settings.uncertainty and not interrupted:
            write_uncertainty(solution, data, engine, settings.noise_std, settings.seed, out, records, verdict)
        elif verdict is not None:
            save_verdict(solution, data, engine, out, records, verdict)
        written = figures(solution, out, verdict, data, data_path=settings.data)
    for note in notes:
        print(note)
    total = sum(count for _, count, _ in kept["stages"]) if kept.get("stages") else None
    print(summary(solution, seconds, out, written, verdict, iterations=total))
    if not interrupted:
        return stopped("reconstruct", solution, out)
    remaining = max(wanted - (solution.iteration - first), 0)
    note = ""
    if planned is not None and kept.get("stages"):
        # `--resume` continues the interrupted stage's engine, for what that stage had left.
        stages = kept["stages"]
        left = planned[len(stages) - 1].max_iterations - stages[-1][1]
        remaining = max(min(left, wanted - sum(count for _, count, _ in stages)), 0)
        note = f" (the {stages[-1][0]} stage; later stages of the schedule are not run by --resume)"
    if remaining == 0 or not (stopped_by_signal or iterations == 0):
        print(f"interrupted ({signal_name()}) after the run had ended: {out} holds its result")
    else:
        hint = resume_command(settings, out, remaining)
        print(f"interrupted ({signal_name()}): checkpoint saved; continue with `{hint}`{note}")
    return signal_exit()


def _prepare(settings: ReconstructSettings):
    """The data, engine, starting point, trainable names, file records and notes of a run."""
    path = settings.data
    if settings.resume is not None and settings.geometry:
        raise UsageError("--geometry cannot be combined with --resume (the saved run already has its geometry)")
    # Refused before the data are read.
    saved = None if settings.resume is None else read_saved(settings.resume, stream=False, data=path)
    data, bundled = load_data(path)
    check_modes(settings.modes, data.num_positions, path)
    near_pixel = None
    if settings.near_field:  # the sample pixel, not the far-field one
        geometry = near_field_geometry(settings, data)
        try:
            near_pixel = jinv.near_field_pixel_size(
                data, distance=geometry["distance"], focus_to_sample=geometry["focus_to_sample"]
            )
        except jio.GeometryError as error:
            raise UsageError(f"data file {str(path)!r}: {error}") from error
    grid = object_grid(path, data, near_pixel)
    print(data_line(data, grid, settings.near_field), file=sys.stderr, flush=True)
    if settings.near_field and bundled is not None:
        raise UsageError("--near-field needs a CXI file: the Siemens-star data are far field")
    if settings.resume is not None:
        check_frame_count(saved, settings.resume, path, data.num_positions)
        engine, start, records = resumed(settings.resume, saved, data, settings)
        return data, engine, start, None, records, []
    start, notes = start_microscope(settings, data, bundled)
    trainable = trainable_names(settings, settings.engine, start)
    try:
        paths = jinv.trainable_paths(start, trainable)
    except ValueError as error:
        raise UsageError(f"--refine: {error}") from error
    engine, record = make_engine(settings.engine, settings.engine_parameters, settings, start, paths)
    cli = {**cli_record(settings, data, start), "data": str(path.resolve())}  # `janssen report` reads it back
    return data, engine, start, trainable, (record, cli), notes
