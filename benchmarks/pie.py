"""Per-iteration time and accuracy of the PIE engines on simulated data.

    python benchmarks/pie.py [--sizes small,medium] [--iterations 50] [--out FILE.jsonl]

For each size and engine (ePIE, rPIE, mPIE; sequential and batched) it reports

- `compile_s`: the first iteration (tracing + XLA compilation + one iteration),
- `per_iter_s`: the median wall time of an iteration afterwards (`block_until_ready`),
- `fft_floor_s`: the FFT floor of `benchmarks/floor.py` (the forward and inverse FFTs one
  iteration needs, timed every way janssen could run them, the fastest), in the same run,
- `ratio`: `per_iter_s / fft_floor_s`,
- `obj_err`: DESIGN.md's object error after `--iterations` iterations and the first
  iteration at which it fell to 0.066 or below (`iters_to_0.066`),
- `residual`: the final RMS amplitude residual next to the noise floor (the truth's).

Start (`starting_point`, shared with the suite and the peers): a unit object and the true
probe blurred by 1 px rms, with a smooth pupil-phase error of 0.3 rad amplitude and moved
by (0.37, -0.29) px; `--start pupil` gives the earlier start (the phase error alone).
"""

import argparse
import json
import os
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

#: The shared start's probe: the truth blurred by this rms (pixels), ...
START_BLUR_PX = 1.0
#: ... with a smooth pupil-phase error of this amplitude (radians), ...
START_PHASE_RAD = 0.3
#: ... and moved by this sub-pixel offset `(x, y)` in pixels.
START_OFFSET_PX = (0.37, -0.29)


def start_probe(probe, *, kind="fair"):
    """The starting probe made from the true `probe` (`(M, H, W)` or `(H, W)`, complex).

    `kind="fair"` (the benchmarks' start for every code, janssen's and the peers'): the
    truth blurred by a Gaussian of `START_BLUR_PX` rms, with a smooth pupil-phase error
    `START_PHASE_RAD * cos(2 pi r^2)` and moved by `START_OFFSET_PX`, all applied to its
    centred spectrum. Its far-field intensity is not the truth's (the blur tapers it), and
    its far-field centroid is not where the truth's is: it is not tuned to janssen's
    gauge (the phase-ramp pin holds the probe's far-field centroid).

    `kind="pupil"`: the pupil-phase error alone (the start before 2026-12): the far-field
    intensity is exactly the truth's, which lands janssen's ramp pin on the truth.
    """
    probe = jnp.asarray(probe)
    n_y, n_x = probe.shape[-2:]
    f_y = (jnp.arange(n_y) - n_y // 2) / n_y
    f_x = (jnp.arange(n_x) - n_x // 2) / n_x
    r2 = ((jnp.arange(n_x) - n_x // 2)[None, :] ** 2 + (jnp.arange(n_y) - n_y // 2)[:, None] ** 2) / (n_x / 2) ** 2
    pupil = jnp.exp(1j * START_PHASE_RAD * jnp.cos(2 * jnp.pi * r2))
    if kind == "fair":
        blur = jnp.exp(-2 * jnp.pi**2 * START_BLUR_PX**2 * (f_y[:, None] ** 2 + f_x[None, :] ** 2))
        s_x, s_y = START_OFFSET_PX
        shift = jnp.exp(-2j * jnp.pi * (f_x[None, :] * s_x + f_y[:, None] * s_y))
        pupil = pupil * blur * shift
    elif kind != "pupil":
        raise ValueError(f"unknown start kind {kind!r}; valid: fair, pupil")
    pupil = pupil.reshape((1,) * (probe.ndim - 2) + pupil.shape).astype(probe.dtype)
    return ifft2c(fft2c(probe) * pupil)


def probe_distance(start, truth):
    """`min_c ||start - c truth|| / ||truth||`: the start probe's distance from the truth (a global factor apart)."""
    start, truth = np.asarray(start).ravel(), np.asarray(truth).ravel()
    c = np.vdot(truth, start) / np.vdot(truth, truth)
    return float(np.linalg.norm(start - c * truth) / np.linalg.norm(truth))


def starting_point(dataset, *, kind="fair"):
    """The benchmarks' start: a unit object and `start_probe(dataset.probe, kind=kind)`."""
    true = dataset.microscope()
    guess = start_probe(dataset.probe, kind=kind)
    dx = true.sample.dx
    return FarFieldMicroscope(
        Probe(guess, dataset.data.wavelength, dx), SampleFunction(jnp.ones_like(dataset.object), dx), true.positions
    )


def fft_floor(data, repeats=7):
    """`benchmarks/floor.py`'s floor (the fastest way to run an iteration's FFTs) for `data`."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import floor

    return floor.fft_floor(data.num_positions, data.frame_shape, repeats)["fft_floor_s"]


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
    parser.add_argument("--start", default="fair", choices=["fair", "pupil"], help="the starting probe (see above)")
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
        start = starting_point(dataset, kind=args.start)
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
