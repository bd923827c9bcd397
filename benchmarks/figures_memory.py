"""Peak resident memory of a run's figures and report for a large object: what the command draws last.

    python benchmarks/figures_memory.py [--shape 4936 4932] [--frame 512] [--positions 4000]

Builds a solution of the xlarge preset's sizes without reconstructing anything (a smooth
complex64 object of `--shape`, a Gaussian probe of `--frame` pixels, `--positions` on a
grid over the object, a verdict of the right shapes), writes its result file, then makes
the figures and the report as `janssen reconstruct` does (`janssen.plots.save_figures`,
then `janssen.plots.write_report` reading the result file back). Prints one JSON line: the
resident memory before the figures (`rss_before_mb`), the peak while drawing them
(`figures_peak_mb`, the kernel's high-water mark reset just before, Linux) and the
seconds each stage took. docs/scale.md quotes it.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def _rss_mb() -> float | None:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _solution(shape, frame, count):
    """A solution of the given sizes: object phase a smooth pattern, probe a Gaussian, positions on a grid."""
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    from janssen.invert import RESULTS, Solution
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    dx = 1e-8
    rows = np.sin(np.arange(shape[0], dtype=np.float32) / 50)[:, None]
    cols = np.cos(np.arange(shape[1], dtype=np.float32) / 70)[None, :]
    obj = np.exp(1j * (0.5 * rows * cols)).astype(np.complex64)  # one complex64 object, float32 temporaries
    y, x = np.mgrid[:frame, :frame] - frame / 2
    probe = np.exp(-(x**2 + y**2) / (2 * (frame / 6) ** 2)).astype(np.complex64)[None]
    side = int(np.ceil(np.sqrt(count)))
    span = np.array(shape[::-1]) - frame - frame // 4  # (x, y) extent of the scan, in pixels
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, side), np.linspace(-0.5, 0.5, side)), -1).reshape(-1, 2)
    positions = (grid[:count] * span * dx).astype(np.float32)
    microscope = FarFieldMicroscope(Probe(probe, 1e-10, dx), SampleFunction(obj, dx), jnp.asarray(positions))
    losses = jnp.asarray([1.0, 0.5], dtype=jnp.float32)
    return Solution(microscope, None, losses, 2, RESULTS.max_iterations_reached, jr.PRNGKey(0), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=2, default=(4936, 4932))
    parser.add_argument("--frame", type=int, default=512)
    parser.add_argument("--positions", type=int, default=4000)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import numpy as np
    from run import _peak_since_reset_mb, _reset_peak

    import janssen.io as jio
    from janssen.invert import Verdict
    from janssen.plots import save_figures, write_report

    solution = _solution(tuple(args.shape), args.frame, args.positions)
    microscope = solution.microscope
    verdict = Verdict(
        r=0.0267, floor=0.0266, per_frame=np.full(args.positions, 0.0267), per_pixel=np.full((args.frame,) * 2, 1.0)
    )
    with tempfile.TemporaryDirectory() as folder:
        out = pathlib.Path(folder) / "big.h5"
        jio.write_result(
            out,
            object=microscope.sample.sample,
            probe=microscope.probe.fields(),
            positions=microscope.positions,
            loss=solution.losses,
            wavelength=1e-10,
            distance=1.0,
            object_pixel_size=microscope.sample.dx,
            attrs={"engine": "RPIE", "iteration": 2, "result": "max_iterations_reached"},
            verdict={
                "r": verdict.r,
                "floor": verdict.floor,
                "per_frame": verdict.per_frame,
                "per_pixel": verdict.per_pixel,
            },
        )
        before = _rss_mb()
        _reset_peak()
        started = time.perf_counter()
        save_figures(solution, folder, "big", verdict=verdict)
        figures_s = time.perf_counter() - started
        figures_peak = _peak_since_reset_mb()
        _reset_peak()
        started = time.perf_counter()
        write_report(out)
        report_s = time.perf_counter() - started
        report_peak = _peak_since_reset_mb()
    print(
        json.dumps(
            {
                "object_shape": list(args.shape),
                "rss_before_mb": round(before, 1),
                "figures_peak_mb": round(figures_peak, 1),
                "figures_s": round(figures_s, 1),
                "report_peak_mb": round(report_peak, 1),
                "report_s": round(report_s, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
