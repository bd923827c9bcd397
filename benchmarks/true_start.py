"""A PIE engine started from a simulated file's own ground truth: how far the noise alone moves the object.

    python benchmarks/true_start.py FILE.cxi [--engine rpie] [--iterations 6] [--every 2] [--first rpie:2]

Reads the data and the `/ground_truth` group of a file written by `janssen simulate` (or
`simulate_preset_cxi`), starts the engine (`--engine`: `rpie`, `RPIE()`, the default
schedule's first stage; `epie-0.25`, its second; `mpie-batched`, its last) from the true
object and probe, and prints the loss (RMS amplitude residual) and the object error (zero
shift; and with the best linear phase ramp removed) every `--every` iterations. `--first
ENGINE:N` runs N iterations of another engine first (e.g. `rpie:2`, to see whether the
engine removes the noise rPIE's full steps write into the object). A
loss that stays at the truth's while the error grows means the steps write the data's noise
into the object: the error floor of that preset and engine. On the xlarge preset: 0.483
after 2 iterations, loss 0.321 (docs/benchmarks-large.md).
"""

import argparse
import pathlib
import sys
import time

import numpy as np

import janssen.invert as jinv
import janssen.io as jio

ENGINES = {
    "rpie": lambda: jinv.RPIE(),
    "epie-0.25": lambda: jinv.EPIE(object_step=0.25, probe_step=0.25),
    "mpie-batched": lambda: jinv.MomentumPIE(mode="batched"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="rpie")
    parser.add_argument("--first", default=None, help="ENGINE:N, run first from the truth")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from run import ramp_free_error

    truth = jio.read_ground_truth(args.file)
    data, current, obj = truth.data, truth.microscope(), np.asarray(truth.object)
    illumination = np.asarray(jinv.illumination_map(current))
    if args.first:
        name, count = args.first.split(":")
        current = jinv.reconstruct(current, data, ENGINES[name](), num_iterations=int(count)).microscope
        found = np.asarray(current.sample.sample)
        error = jinv.object_error(obj, found, illumination, max_shift=0)
        print(f"after {args.first}: error {error:.4f}, ramp removed {ramp_free_error(obj, found, illumination):.4f}")
    engine, solution = ENGINES[args.engine](), None
    for done in range(args.every, args.iterations + 1, args.every):
        clock = time.perf_counter()
        solution = jinv.reconstruct(current if solution is None else solution, data, engine, num_iterations=args.every)
        seconds = time.perf_counter() - clock
        found = np.asarray(solution.microscope.sample.sample)
        error = jinv.object_error(obj, found, illumination, max_shift=0)
        flat = ramp_free_error(obj, found, illumination)
        print(
            f"{done} iterations: loss {float(solution.losses[-1]):.4f}, error {error:.4f}, ramp removed {flat:.4f}, "
            f"{seconds:.0f} s",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
