"""rPIE started from a simulated file's own ground truth: how far the noise alone moves the object.

    python benchmarks/true_start.py FILE.cxi [--iterations 6] [--every 2]

Reads the data and the `/ground_truth` group of a file written by `janssen simulate` (or
`simulate_preset_cxi`), starts `RPIE()` from the true object and probe, and prints the loss
(RMS amplitude residual) and the object error (zero shift) every `--every` iterations. A
loss that stays at the truth's while the error grows means the steps write the data's noise
into the object: the error floor of that preset and engine. On the xlarge preset: 0.483
after 2 iterations, loss 0.321 (docs/benchmarks-large.md).
"""

import argparse
import sys
import time

import numpy as np

import janssen.invert as jinv
import janssen.io as jio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--every", type=int, default=2)
    args = parser.parse_args(argv)
    truth = jio.read_ground_truth(args.file)
    data, current, obj = truth.data, truth.microscope(), np.asarray(truth.object)
    illumination = np.asarray(jinv.illumination_map(current))
    for done in range(args.every, args.iterations + 1, args.every):
        clock = time.perf_counter()
        solution = jinv.reconstruct(current, data, jinv.RPIE(), num_iterations=args.every)
        current = solution.microscope
        error = jinv.object_error(obj, np.asarray(current.sample.sample), illumination, max_shift=0)
        seconds = time.perf_counter() - clock
        print(
            f"{done} iterations: loss {float(solution.losses[-1]):.4f}, error {error:.4f}, {seconds:.0f} s", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
