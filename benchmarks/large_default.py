"""The large preset on the default path: object error and time after each stage.

    python benchmarks/large_default.py [--size large] [--curvature-steps 0]

Simulates `simulate_preset(size, key=PRNGKey(0))`, starts from the data alone
(`init_far_field_microscope`, what `janssen reconstruct` does without `--probe`), runs
`default_schedule`'s stages one by one (`run_schedule`, without the final ramp levelling,
so that each figure is the stage's own), then, with `--curvature-steps N`, one more
`Stage(CurvatureSearch(), N)`. After each
stage it prints the iterations, how the stage stopped, the object error (DESIGN.md's,
zero shift) raw and with the best linear phase ramp removed (`benchmarks/run.py`'s
`ramp_free_error`), the wall time so far, and the process's peak resident memory so far
(`peak_rss_mb`, JAX and XLA included) beside the frames' own size (`frames_mb`). One
JSON line per stage.
"""

import argparse
import json
import pathlib
import resource
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="large", choices=("small", "medium", "large"))
    parser.add_argument("--curvature-steps", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import jax
    import numpy as np
    from run import ramp_free_error

    import janssen.invert as jinv
    import janssen.io as jio

    dataset = jio.simulate_preset(args.size, key=jax.random.PRNGKey(0))
    truth = np.asarray(dataset.object)
    illumination = np.asarray(jinv.illumination_map(dataset.microscope()))
    clock = time.perf_counter()
    current = jinv.init_far_field_microscope(dataset.data)
    stages = list(jinv.default_schedule(current))
    if args.curvature_steps:
        stages.append(jinv.Stage(jinv.CurvatureSearch(), args.curvature_steps, None))
    for stage in stages:
        run = jinv.run_schedule(current, dataset.data, [stage], level_ramp=False)
        current = run.microscope
        obj = np.asarray(current.sample.sample)
        row = {
            "size": args.size,
            "stage": [list(s) for s in run.stages],
            "error": round(float(jinv.object_error(truth, obj, illumination, max_shift=0)), 4),
            "error_ramp_removed": round(float(ramp_free_error(truth, obj, illumination)), 4),
            "wall_s": round(time.perf_counter() - clock, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "frames_mb": round(dataset.data.intensities.nbytes / 2**20, 1),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
