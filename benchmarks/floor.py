"""The FFT floor: an iteration's FFTs timed every way janssen could run them, and the fastest.

    python benchmarks/floor.py --positions 400 --frame 128 128 [--repeats 15] [--threads all|one|both]

A PIE iteration transforms every frame once forward and once back. How fast those FFTs
can go depends on how they are issued, so the floor times each way janssen could issue them
and takes the *minimum* (a floor that a way of running the iteration beats is no floor):

- `batched`: all frames in one call, `ifft2(fft2(stack))`;
- `blocks8`: blocks of 8 frames, one after the other in a `lax.scan` whose carry (the block)
  depends on the previous block's result, as in a mini-batched PIE;
- `chain`: one frame at a time in a `lax.scan`, two FFTs per position, the carry (one
  frame) depending on the previous position's result and nothing stacked as output, as in
  sequential PIE.

On a CPU each way runs with all of XLA's threads (in the calling process) and with one
thread (in a subprocess started with `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1` and pinned to one core), so the ways are
`batched`, `blocks8`, `chain` and `batched-1t`, `blocks8-1t`, `chain-1t`; on a GPU the
first three, on the device. Every time is the
median of `repeats` calls, in wall time and in process CPU time (`time.process_time`, all
threads). The floor is the way with the least wall time; `floor_cpu` the least CPU time
(over the same ways). The transforms are unnormalised (`jnp.fft`), a lower bound on
janssen's unitary ones.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: Frames per block in the `blocks8` way.
BLOCK = 8
#: The environment of the one-thread subprocess (XLA's CPU client then runs FFTs and
#: elementwise work on the calling thread only).
ONE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
WAYS = ("batched", f"blocks{BLOCK}", "chain")


def _programs(num_positions: int, frame_shape: tuple[int, int]):
    """`{way: (jitted function, argument)}` for the three ways."""
    import jax
    import jax.numpy as jnp

    h, w = frame_shape
    # Not all ones: a constant stack could let XLA fold work away.
    stack = (jnp.arange(num_positions * h * w, dtype=jnp.float32).reshape(num_positions, h, w) % 7).astype(
        jnp.complex64
    )

    def both(x):
        return jnp.fft.ifft2(jnp.fft.fft2(x))

    def chain(frames):
        def step(carry, frame):
            return both(carry + frame), None

        last, _ = jax.lax.scan(step, jnp.zeros(frame_shape, jnp.complex64), frames)
        return last

    blocks = -(-num_positions // BLOCK)
    padded = jnp.zeros((blocks * BLOCK, h, w), jnp.complex64).at[:num_positions].set(stack)
    padded = padded.reshape(blocks, BLOCK, h, w)

    def blocked(frames):
        def step(carry, block):
            return both(carry + block), None

        last, _ = jax.lax.scan(step, jnp.zeros((BLOCK, h, w), jnp.complex64), frames)
        return last

    return {
        "batched": (jax.jit(both), stack),
        f"blocks{BLOCK}": (jax.jit(blocked), padded),
        "chain": (jax.jit(chain), stack),
    }


def time_ways(num_positions: int, frame_shape: tuple[int, int], repeats: int = 7) -> dict:
    """`{way: [median wall s, median CPU s]}` for the three ways, in this process."""
    out = {}
    for way, (function, argument) in _programs(num_positions, tuple(frame_shape)).items():
        function(argument).block_until_ready()  # compile and warm up
        walls, cpus = [], []
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            function(argument).block_until_ready()
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
        out[way] = [statistics.median(walls), statistics.median(cpus)]
    return out


def pin_to_one_core() -> None:
    """Run this process on the lowest-numbered CPU it may use (Linux). Before JAX starts, so
    that XLA sizes its thread pool to the one core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def usable_cpus() -> int:
    """The CPUs this process may run on: fewer than `os.cpu_count()` under `taskset` or a cpuset."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def one_thread_ways(num_positions: int, frame_shape: tuple[int, int], repeats: int = 7, timeout: float = 900) -> dict:
    """The three ways timed with one thread, in a subprocess; `{way-1t: [wall, cpu]}`."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + ONE_THREAD_FLAGS).strip()
    env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS") or "cpu"
    command = [sys.executable, os.path.abspath(__file__), "--positions", str(num_positions)]
    command += ["--frame", *map(str, frame_shape), "--repeats", str(repeats), "--threads", "one", "--pin"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        errors = done.stderr.strip().splitlines()
        raise RuntimeError(f"one-thread floor failed: {errors[-1] if errors else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def floor_of(ways: dict) -> dict:
    """The floor from `{way: [wall, cpu]}`: the least wall time, which way gave it, the least CPU time."""
    way = min(ways, key=lambda name: ways[name][0])
    return {
        "fft_floor_s": ways[way][0],
        "fft_floor_way": way,
        "fft_floor_cpu_s": min(cpu for _, cpu in ways.values()),
        "fft_floor_ways": {name: [float(f"{wall:.4g}"), float(f"{cpu:.4g}")] for name, (wall, cpu) in ways.items()},
    }


def fft_floor(num_positions: int, frame_shape: tuple[int, int], repeats: int = 7, *, one_thread: bool = True) -> dict:
    """Every way with all threads here and (with `one_thread`) with one thread in a subprocess; `floor_of` them.

    The one-thread ways are a CPU's: where JAX runs on another device (a GPU), the ways are
    timed there alone.
    """
    import jax

    ways = time_ways(num_positions, frame_shape, repeats)
    if one_thread and jax.default_backend() == "cpu":
        ways.update(one_thread_ways(num_positions, frame_shape, repeats))
    return floor_of(ways)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, required=True)
    parser.add_argument("--frame", type=int, nargs=2, required=True, metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", default="both", choices=["all", "one", "both"])
    parser.add_argument("--pin", action="store_true", help=argparse.SUPPRESS)  # the one-thread child
    args = parser.parse_args(argv)
    if args.pin and hasattr(os, "sched_setaffinity"):
        pin_to_one_core()
    if args.threads == "one" and args.pin:  # the child: print its ways, suffixed
        ways = time_ways(args.positions, tuple(args.frame), args.repeats)
        print(json.dumps({f"{way}-1t": times for way, times in ways.items()}))
        return 0
    if args.threads == "one":
        ways = one_thread_ways(args.positions, tuple(args.frame), args.repeats)
    elif args.threads == "all":
        ways = time_ways(args.positions, tuple(args.frame), args.repeats)
    else:
        ways = time_ways(args.positions, tuple(args.frame), args.repeats)
        ways.update(one_thread_ways(args.positions, tuple(args.frame), args.repeats))
    print(json.dumps(floor_of(ways)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
