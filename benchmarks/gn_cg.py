"""Gauss–Newton's object error after each step for several CG iteration limits, on one preset.

    python benchmarks/gn_cg.py [--size medium] [--iterations 6] [--cg 8 12 16 32]

The suite's problem (`run.py`'s dataset file and start: unit object, blurred and shifted
true probe) and its error measure (`object_error`, no shift search, after every step);
`GaussNewton(cg_maxiter=k)` for each `k`, in this process. Prints one JSON line per `k`:
the median seconds per step after the first, the error after each step, and the step at
which it first reaches 0.066. This chose `GaussNewton`'s default of 12 (docs/benchmarks.md).
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def sweep(size: str, iterations: int, limits: list[int]) -> list[dict]:
    sys.path.insert(0, str(HERE))
    import numpy as np
    import run

    from janssen.invert import GaussNewton, object_error, reconstruct

    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / f"{size}.npz"
        run.write_dataset(size, path)
        data, start, truth, illumination, _ = run.load_dataset(str(path))
    rows = []
    for limit in limits:
        times, errors, last = [], [], [time.perf_counter()]

        def callback(iteration, loss, microscope):
            times.append(time.perf_counter() - last[0])
            current = np.asarray(microscope.sample.sample)
            errors.append(round(object_error(truth, current, illumination, max_shift=0), 4))
            last[0] = time.perf_counter()

        reconstruct(start, data, GaussNewton(cg_maxiter=limit), num_iterations=iterations, callback=callback)
        reached = next((i + 1 for i, error in enumerate(errors) if error <= run.TARGET), None)
        per_step = statistics.median(times[1:] or times)
        rows.append({"size": size, "cg_maxiter": limit, "s_per_step": round(per_step, 3), "errors": errors,
                     "steps_to_0.066": reached})  # fmt: skip
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--cg", type=int, nargs="+", default=[8, 12, 16, 32])
    args = parser.parse_args(argv)
    for row in sweep(args.size, args.iterations, args.cg):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
