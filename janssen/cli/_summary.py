"""What a run prints: the data it read, what it did and wrote, and why it stopped."""

import pathlib
import sys

import numpy as np

import janssen.invert as jinv
import janssen.io as jio

from ._errors import EXIT_OK, STOP_CODES


def data_line(
    data: jio.MicroscopeData | jio.CXIFrames, grid: jio.ObjectGrid, near_field: bool, *, stream_batch: int = 0
) -> str:
    """The first line a run prints, as soon as the data are read (or, streamed, opened): frames, geometry, memory."""
    height, width = data.frame_shape
    streamed = isinstance(data, jio.CXIFrames)
    geometry = data.geometry if streamed else data
    itemsize = 4 if streamed else np.dtype(data.intensities.dtype).itemsize  # `CXIFrames` reads float32
    frames_mb = data.num_positions * height * width * itemsize / 1e6
    held = f" as float32, left in the file and read {stream_batch} positions at a time" if streamed else ""
    field = "near field" if near_field else "far field"
    pixel = " x ".join(f"{size * 1e9:.3g}" for size in grid.pixel_size)
    return (
        f"data: {data.num_positions} frames of {height} x {width} ({frames_mb:.0f} MB{held}), {field}, wavelength "
        f"{float(geometry.wavelength) * 1e9:.4g} nm, distance {float(geometry.distance):.4g} m; object grid "
        f"{grid.shape[0]} x {grid.shape[1]} of {pixel} nm pixels ({grid.nbytes / 1e6:.1f} MB), "
        f"median step {grid.median_step_px:.3g} px"
    )


def summary(
    solution: jinv.Solution,
    seconds: float,
    out: pathlib.Path,
    figures: list[pathlib.Path],
    verdict: jinv.Verdict | None = None,
    *,
    iterations: int | None = None,
    unit: str = "iterations",
) -> str:
    """What the run did and wrote; `iterations`: the total when it is not the solution's own (a schedule's
    stages); `unit`: what the solution counts (`"epochs"`, passes over a streamed file)."""
    total = solution.iteration if iterations is None else iterations
    name = jinv.result_name(solution.result)
    lines = [
        f"{total} {unit} in total ({name}), final loss {solution.final_loss:.4g}, {seconds:.1f} s"
        if solution.losses.size
        else f"0 iterations kept ({name}: the start), {seconds:.1f} s",
        verdict.verdict_line() if verdict is not None else "R: not computed (see the warning above)",
        f"wrote {out}",
    ]
    lines += [f"wrote {path}" for path in figures]
    return "\n".join(lines)


def stopped(command: str, solution: jinv.Solution, out: pathlib.Path) -> int:
    """The exit code of a run that ended on its own; for an abnormal end, the reason on stderr."""
    name = jinv.result_name(solution.result)
    if name not in STOP_CODES:
        return EXIT_OK
    reasons = {
        "nonfinite": "a NaN or inf appeared in the loss or the refined parameters; lower the step sizes "
        "(--learning-rate, the [engine] steps) or check the data for bad pixels",
        "diverged": f"the loss rose above {jinv.DIVERGENCE_FACTOR:g} times its lowest value; lower the step sizes "
        "(--learning-rate, the [engine] steps)",
        "positions_off_object": "a refined scan position moved a probe window off the object; lower the positions' "
        "learning rate",
    }
    kept = "the start" if solution.iteration == 0 else f"iteration {solution.iteration}"
    which = "the last state with every window inside" if name == "positions_off_object" else "the lowest loss"
    print(
        f"janssen {command}: stopped ({name.replace('_', ' ')}): {reasons[name]}. "
        f"Kept the state with {which}, {kept}, in {out}",
        file=sys.stderr,
    )
    return STOP_CODES[name]
