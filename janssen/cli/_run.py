"""Running: the geometry stage, the engine (or schedule) with its checkpoints, and what is added after it."""

import pathlib
import sys
import time

import jax.random as jr
import numpy as np

import janssen.invert as jinv
import janssen.io as jio

from ._args import CHECKPOINT_EVERY
from ._errors import UsageError, WriteError
from ._memory import release_memory
from ._output import save
from ._signals import received


def checkpointer(out: pathlib.Path, data, engine, records, kept):
    """The driver's `checkpoint`: save into `out` (signals wait for the save, then stop the run)."""

    def checkpoint(solution: jinv.Solution, stage_engine: jinv.AbstractEngine = engine) -> None:
        signals = len(received)
        save(out, solution, data, stage_engine, records)
        kept.update(iteration=solution.iteration, out=out)
        if len(received) > signals and solution.result == jinv.RESULTS.running:
            raise KeyboardInterrupt  # the signal that came during the save stops the run now

    return checkpoint


def _release(solution: jinv.Solution, engine: jinv.AbstractEngine) -> None:
    release_memory()


def run_engine(
    microscope_or_solution, data, engine, iterations, seed, out: pathlib.Path, kept, *, trainable=None, records=None
) -> tuple[jinv.Solution, float, jinv.AbstractEngine]:
    """Run one engine, or a schedule's stages (a tuple), checkpointing into `out`; the solution,
    the seconds it took and the engine that made the solution (a schedule's last stage)."""

    checkpoint = checkpointer(out, data, engine, records, kept)
    started = time.perf_counter()
    options = {
        "key": jr.PRNGKey(seed),
        "progress_meter": jinv.TextProgressMeter(),
        "checkpoint": checkpoint,
        "checkpoint_every": CHECKPOINT_EVERY,
    }
    if isinstance(engine, tuple):
        # Each stage compiles its own programs; drop them once it has ended (the persistent
        # compilation cache, where set, serves a stage that runs again).
        run = jinv.run_schedule(
            microscope_or_solution, data, engine, max_iterations=iterations, after_stage=_release, **options
        )
        kept["stages"] = run.stages
        stages = ", ".join(f"{name} {count} ({result.replace('_', ' ')})" for name, count, result in run.stages)
        print(f"schedule: {stages}", file=sys.stderr)
        return run.solution, time.perf_counter() - started, run.engine
    solution = jinv.reconstruct(
        microscope_or_solution, data, engine, trainable=trainable, num_iterations=iterations, **options
    )
    return solution, time.perf_counter() - started, engine


def refine_geometry(start, data: jio.MicroscopeData, seed: int):
    """`refine_geometry` on the start (progress on stderr); `(microscope, interrupted)`."""
    if not start.fourier_detector:
        raise UsageError("--geometry needs the FFT far field (it refines the distance through the object pixel)")
    print("janssen: refining the scan geometry (positions and distance) first", file=sys.stderr)
    started = time.perf_counter()
    result = jinv.refine_geometry(start, data, key=jr.PRNGKey(seed), progress_meter=jinv.TextProgressMeter())
    refined = result.microscope
    ratio = float(np.asarray(start.sample.dx)[0] / np.asarray(refined.sample.dx)[0])
    moved = (np.asarray(refined.positions) - np.asarray(start.positions)) / np.asarray(refined.sample.dx)
    moved -= moved.mean(0)
    print(
        f"geometry: distance x {1 / ratio:.5f} "
        f"(file {float(data.distance):.6g} m -> {float(data.distance) / ratio:.6g} m), "
        f"positions moved {float(np.sqrt(np.mean(np.sum(moved**2, 1)))):.3f} px RMS, "
        f"{time.perf_counter() - started:.1f} s ({jinv.result_name(result.result)})"
    )
    return refined, result.result == jinv.RESULTS.interrupted


def write_uncertainty(
    solution, data, engine, noise_std: float | None, seed: int, out: pathlib.Path, records, verdict=None
) -> None:
    """Rewrite the result file with the object's standard-error map (after the last checkpoint)."""
    std = jinv.object_std(solution.microscope, data, noise_std=noise_std, key=jr.PRNGKey(seed))
    save(out, solution, data, engine, records, object_std=std, verdict=verdict)
    covered = np.asarray(std)[np.isfinite(np.asarray(std))]
    print(f"object_std: median {float(np.median(covered)):.3g} over the {covered.size} covered object pixels")


def verdict_of(solution: jinv.Solution, data: jio.MicroscopeData | jio.CXIFrames) -> jinv.Verdict | None:
    """The final microscope's verdict; `None` (with a warning) when it cannot be computed.

    Runs after the last checkpoint: whatever goes wrong here, the result file is already saved.
    """
    try:
        return jinv.compute_verdict(solution.microscope, data)
    except (Exception, KeyboardInterrupt) as error:  # a report, not the result: never fail the run for it
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"janssen: warning: no verdict (R and its Poisson floor): {reason}", file=sys.stderr)
        return None


def save_verdict(solution, data, engine, out: pathlib.Path, records, verdict: jinv.Verdict) -> None:
    """Rewrite the result file with the verdict (atomically: on failure the saved result stays)."""
    try:
        save(out, solution, data, engine, records, verdict=verdict)
    except (WriteError, ValueError) as error:
        print(f"janssen: warning: the verdict was not stored in {out}: {' '.join(str(error).split())}", file=sys.stderr)
