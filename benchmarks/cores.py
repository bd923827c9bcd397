"""The PIE step against the FFT floor on every core JAX is given, and pinned to one core.

    python benchmarks/cores.py [--size medium] [--engines rpie,mpie,epie] [--rounds 5]

(`--engines` also takes `rpie-batched`, `epie-batched`, `mpie-batched`.)

XLA's CPU code splits some of a step's elementwise passes over its threads (the passes over
a probe-sized array in sequential PIE's loop, for example); on a machine with few cores the
split can cost more than it saves. For each engine this script times, in a fresh process
with the CPUs it was started with and in one pinned to a single core (Linux
`os.sched_setaffinity`, set before JAX starts, so that XLA sizes its thread pool to it):

- the engine's step, jitted (`engine.step`: what `reconstruct` runs each iteration, without
  the driver's checks), from the suite's fair start after one iteration: the median of 9
  calls, wall and CPU time;
- the FFT floor of `benchmarks/floor.py`'s three in-process ways (`batched`, `blocks8`,
  `chain`), the fastest way's median of 5 calls,

interleaved `--rounds` times in the same process; the row gives the medians over the rounds
and the step-to-floor ratio of each round. Compilation apart, `block_until_ready`.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def measure(size: str, name: str, rounds: int) -> dict:
    """One row, in this process (its CPUs as they are)."""
    sys.path.insert(0, str(HERE))
    import equinox as eqx
    import floor
    import jax
    import jax.random as jr
    import pie

    import janssen.invert as jinv
    from janssen.io import simulate_preset

    dataset = simulate_preset(size, key=jr.PRNGKey(0))
    data = dataset.data
    family = {"rpie": jinv.RPIE, "epie": jinv.EPIE, "mpie": jinv.MomentumPIE}[name.removesuffix("-batched")]
    engine = family(mode="batched" if name.endswith("-batched") else "sequential")
    solution = jinv.reconstruct(pie.starting_point(dataset), data, engine, num_iterations=1)
    arrays, static = eqx.partition(
        (engine, solution.microscope, solution.state, data, solution.trainable, jr.PRNGKey(3)), eqx.is_array
    )

    def step(arrays):
        engine, microscope, state, data, trainable, key = eqx.combine(arrays, static)
        return eqx.filter(engine.step(microscope, state, data, trainable, key), eqx.is_array)

    program = jax.jit(step).lower(arrays).compile()
    jax.block_until_ready(program(arrays))
    results = []
    for _ in range(rounds):
        walls, cpus = [], []
        for _ in range(9):
            wall, cpu = time.perf_counter(), time.process_time()
            jax.block_until_ready(program(arrays))
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        ways = floor.time_ways(data.num_positions, data.frame_shape, 5)
        results.append((statistics.median(walls), statistics.median(cpus), min(way[0] for way in ways.values())))
    wall, cpu, fft_floor = (statistics.median(r[k] for r in results) for k in range(3))
    return {
        "size": size,
        "engine": name,
        "cpus": floor.usable_cpus(),
        "step_s": round(wall, 5),
        "step_cpu_s": round(cpu, 5),
        "floor_s": round(fft_floor, 5),
        "ratio": round(wall / fft_floor, 3),
        "ratios": [round(r[0] / r[2], 2) for r in results],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--engines", default="rpie,mpie,epie")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--row", nargs=2, metavar=("ENGINE", "CPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        name, cpus = args.row
        if cpus == "one":
            sys.path.insert(0, str(HERE))
            import floor

            floor.pin_to_one_core()
        print(json.dumps(measure(args.size, name, args.rounds)), flush=True)
        return 0
    if not hasattr(os, "sched_setaffinity"):
        raise SystemExit("cores.py needs os.sched_setaffinity (Linux) to pin a process to one core")
    for name in args.engines.split(","):
        for cpus in ("all", "one"):
            command = [sys.executable, __file__, "--size", args.size, "--rounds", str(args.rounds), "--row", name, cpus]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} ({cpus}) failed: {done.stderr.strip().splitlines()[-1:]}")
            print(done.stdout.strip().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
