"""Per-iteration time and accuracy of the PIE engines on simulated data.

    python benchmarks/pie.py [--sizes small,medium] [--iterations 50] [--out FILE.jsonl]

For each size and engine (ePIE, rPIE, mPIE; sequential and batched) it reports

- `compile_s`: the first iteration (tracing + XLA compilation + one iteration),
- `per_iter_s`: the median wall time of an iteration afterwards (`block_until_ready`),
- `fft_floor_s`: the median time of the forward and inverse FFTs one iteration needs
  (one of each per position, batched), timed in the same run,
- `ratio`: `per_iter_s / fft_floor_s`,
- `obj_err`: DESIGN.md's object error after `--iterations` iterations and the first
  iteration at which it fell to 0.066 or below (`iters_to_0.066`),
- `residual`: the final RMS amplitude residual next to the noise floor (the truth's).

Start: a unit object and the true probe with a smooth pupil-phase error of
0.3 rad amplitude (a few tenths of a radian, as in the issue's target).
"""

import argparse
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import janssen
from janssen.invert import EPIE, RPIE, MomentumPIE, data_residual, illumination_map, object_error, reconstruct
from janssen.io import simulate_preset
from janssen.optics import Probe, SampleFunction, fft2c, ifft2c
from janssen.scopes import FarFieldMicroscope


def starting_point(dataset):
    true = dataset.microscope()
    probe = dataset.probe
    n = probe.shape[-1]
    c = jnp.arange(n) - n // 2
    r2 = (c[None, :] ** 2 + c[:, None] ** 2) / (n / 2) ** 2
    guess = ifft2c(fft2c(probe) * jnp.exp(0.3j * jnp.cos(2 * jnp.pi * r2))[None])
    dx = true.sample.dx
    return FarFieldMicroscope(
        Probe(guess, dataset.data.wavelength, dx), SampleFunction(jnp.ones_like(dataset.object), dx), true.positions
    )


def fft_floor(data, repeats=7):
    stack = jnp.ones((data.num_positions, *data.frame_shape), jnp.complex64)
    both = jax.jit(lambda x: jnp.fft.ifft2(jnp.fft.fft2(x)))
    both(stack).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        both(stack).block_until_ready()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


ENGINES = {
    "epie": lambda mode: EPIE(mode=mode),
    "rpie": lambda mode: RPIE(mode=mode),
    "mpie": lambda mode: MomentumPIE(mode=mode),
}
# Extra configurations, selectable with --engines, for tuning defaults.
EXTRA = {
    "rpie-p0.1": lambda mode: RPIE(mode=mode, probe_step=0.1),
    "rpie-a0.3-p0.1": lambda mode: RPIE(mode=mode, alpha=0.3, probe_step=0.1),
    "rpie-a0.01": lambda mode: RPIE(mode=mode, alpha=0.01, probe_alpha=0.01),
    "mpie-0.3": lambda mode: MomentumPIE(mode=mode, momentum=0.3),
}
ENGINES.update(EXTRA)


def run_one(name, mode, dataset, start, illum, iterations, floor):
    engine = ENGINES[name](mode)
    data = dataset.data
    t = time.perf_counter()
    solution = reconstruct(start, data, engine, num_iterations=1)
    jax.block_until_ready(solution.microscope)
    compile_s = time.perf_counter() - t
    truth = np.asarray(dataset.object)
    # Per-iteration errors at zero shift (cheap); the final one searches shifts as DESIGN.md says.
    times, errors = [], [object_error(truth, np.asarray(solution.microscope.sample.sample), illum, max_shift=0)]
    for _ in range(iterations - 1):
        t = time.perf_counter()
        solution = reconstruct(solution, data, engine, num_iterations=1)
        jax.block_until_ready(solution.microscope)
        times.append(time.perf_counter() - t)
        errors.append(object_error(truth, np.asarray(solution.microscope.sample.sample), illum, max_shift=0))
    errors[-1] = object_error(truth, np.asarray(solution.microscope.sample.sample), illum)
    reached = next((i + 1 for i, e in enumerate(errors) if e <= 0.066), None)
    per_iter = statistics.median(times)
    return {
        "engine": name,
        "mode": mode,
        "iterations": iterations,
        "per_iter_s": round(per_iter, 5),
        "compile_s": round(compile_s, 3),
        "fft_floor_s": round(floor, 5),
        "ratio": round(per_iter / floor, 2),
        "obj_err": round(errors[-1], 4),
        "obj_err_at_10": round(errors[min(9, len(errors) - 1)], 4),
        "iters_to_0.066": reached,
        "residual": round(solution.final_loss, 4),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--engines", default="epie,rpie,mpie")
    parser.add_argument("--modes", default="sequential,batched")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--out", default=None, help="append one JSON line per run to this file")
    parser.add_argument("--markdown", default=None, help="also write the rows as a Markdown table here")
    args = parser.parse_args(argv)
    unknown = [e for e in args.engines.split(",") if e not in ENGINES]
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; valid: {sorted(ENGINES)}")
    out = open(args.out, "a") if args.out else None
    rows = []
    for size in args.sizes.split(","):
        dataset = simulate_preset(size, key=jr.PRNGKey(0))
        start = starting_point(dataset)
        illum = np.asarray(illumination_map(dataset.microscope()))
        floor = fft_floor(dataset.data)
        noise = data_residual(dataset.microscope(), dataset.data)
        unit = object_error(np.asarray(dataset.object), np.asarray(start.sample.sample), illum)
        print(f"# {size}: FFT floor {floor:.4f} s, noise floor {noise:.3f}, unit-object error {unit:.3f}", flush=True)
        for name in args.engines.split(","):
            for mode in args.modes.split(","):
                row = run_one(name, mode, dataset, start, illum, args.iterations, floor)
                row.update(
                    size=size,
                    noise_floor=round(noise, 4),
                    device=str(jax.devices()[0]),
                    cpu=platform.processor() or platform.machine(),
                    janssen=janssen.__version__,
                    jax=jax.__version__,
                )
                print(json.dumps(row), flush=True)
                rows.append(row)
                if out:
                    out.write(json.dumps(row) + "\n")
    if out:
        out.close()
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(markdown_table(rows))


COLUMNS = [
    ("size", "size"),
    ("engine", "engine"),
    ("mode", "mode"),
    ("per_iter_s", "s / iteration"),
    ("fft_floor_s", "FFT floor (s)"),
    ("ratio", "× floor"),
    ("compile_s", "first iteration (s)"),
    ("obj_err_at_10", "error @10"),
    ("obj_err", "error @N"),
    ("iters_to_0.066", "iterations to 0.066"),
    ("residual", "residual"),
    ("noise_floor", "noise floor"),
]


def markdown_table(rows):
    """The rows as a Markdown table (one line per engine, schedule and size)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join("—" if row.get(key) is None else str(row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
