"""Wall time to object error 0.066 from a cold process, with JAX's compilation cache empty and warm.

    python benchmarks/time_to_accuracy.py [--size medium] [--engines mpie,rpie] [--iterations 30]
                                          [--repeats 2] [--out FILE.jsonl]

For each engine it starts fresh processes of the suite's worker (`run.py --worker ENGINE
FILE N`, the suite's fair start) with JAX's persistent compilation cache in a new empty
folder (`JAX_COMPILATION_CACHE_DIR`, minimum compile time and entry size 0, as the `janssen`
command sets it): the first process compiles everything and fills the cache (`cold`), the
next ones find it filled (`warm`). Each row gives

- `spawn_to_0.066_s`: wall time from the moment the process is started (the parent's clock
  just before `subprocess.run`) to the end of the first iteration whose object error is at
  or below 0.066: Python's start, importing JAX and janssen, loading the data, building the
  engine, compiling (or loading from the cache) and the iterations, the error evaluations
  excluded;
- `start_to_reconstruct_s`: the part of it before `reconstruct` is called;
- the worker's `time_to_0.066_s` (from `reconstruct`), `compile_s` (first iteration),
  `iters_to_0.066` and `per_iter_s`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as suite  # noqa: E402  (benchmarks/run.py: the dataset file and the worker)

KEYS = ("iters_to_0.066", "time_to_0.066_s", "compile_s", "per_iter_s", "obj_err", "obj_err_ramp")


def timed_worker(engine: str, data: pathlib.Path, iterations: int, cache: pathlib.Path | None) -> dict:
    """One cold process of `run.py --worker`; its row plus `spawn_to_0.066_s` and `start_to_reconstruct_s`."""
    env = dict(os.environ)
    if cache is not None:
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(cache),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    command = [sys.executable, str(HERE / "run.py"), "--worker", engine, str(data), str(iterations)]
    env[suite.SPAWN_CLOCK] = repr(time.time())
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.strip().splitlines()
        raise RuntimeError(f"{engine} failed: {errors[-1] if errors else done.returncode}")
    row = json.loads(lines[-1])
    before = row.get("start_to_reconstruct_s")
    reached = row.get("time_to_0.066_s")
    return {
        "engine": engine,
        "size": row["size"],
        "start_to_reconstruct_s": before,
        "spawn_to_0.066_s": None if reached is None or before is None else suite._sig(before + reached),
        **{key: row.get(key) for key in KEYS},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=suite.SIZES)
    parser.add_argument("--engines", default="mpie,rpie")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="warm-cache processes after the cold one")
    parser.add_argument("--data", default=None, help="an existing problem file (default: simulate the preset)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="janssen-tta-"))
    data = pathlib.Path(args.data) if args.data else folder / f"{args.size}.npz"
    if not args.data:
        suite.write_dataset(args.size, data)
    out = open(args.out, "w") if args.out else None
    for engine in suite._names(args.engines, suite.ENGINES, "engine"):
        cache = folder / f"cache-{engine}"
        cache.mkdir()
        for run in range(1 + args.repeats):
            row = {"cache": "cold" if run == 0 else "warm", **timed_worker(engine, data, args.iterations, cache)}
            print(json.dumps(row), flush=True)
            if out:
                out.write(json.dumps(row) + "\n")
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
