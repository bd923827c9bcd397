"""NumPy-only helpers shared by the peer runners (and checked against janssen by check_metric.py).

This file imports nothing but NumPy so that it runs in every venv: janssen's, PtyLab's and
pty-chi's. The data format it reads is described in benchmarks/README.md ("Peers").
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

#: The object error the issue's target is stated at.
TARGET_ERROR = 0.066

REQUIRED = (
    "intensities",
    "positions_px",
    "probe",
    "object_shape",
    "object_true",
    "probe_true",
    "wavelength",
    "dx",
    "distance",
    "camera_pixel_size",
)


def load_npz(path):
    """The benchmark problem as a dict of NumPy arrays, checked for the fields and shapes the runners use."""
    with np.load(path) as archive:
        data = {key: archive[key] for key in archive.files}
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; expected {list(REQUIRED)}")
    n, h, w = data["intensities"].shape
    if data["positions_px"].shape != (n, 2):
        raise ValueError(f"`positions_px` must have shape ({n}, 2), got {data['positions_px'].shape}")
    for key in ("probe", "probe_true"):
        if data[key].ndim == 2:
            data[key] = data[key][None]
        if data[key].shape[-2:] != (h, w):
            raise ValueError(f"`{key}` must have shape (modes, {h}, {w}), got {data[key].shape}")
    if tuple(data["object_true"].shape) != tuple(int(s) for s in data["object_shape"]):
        raise ValueError(
            f"`object_true` has shape {data['object_true'].shape}, `object_shape` says {data['object_shape']}"
        )
    return data


def whole_corners(positions_px):
    """The whole-pixel `(x, y)` top-left corners of the probe windows (errors if a position is fractional)."""
    corners = np.rint(positions_px).astype(np.int64)
    if np.max(np.abs(corners - positions_px)) > 1e-3:
        raise ValueError("the peer runners expect whole-pixel positions (janssen's presets use them)")
    return corners


def illumination(probe_true, positions_px, object_shape):
    """Summed probe intensity on the object grid: janssen's `illumination_map` (whole-pixel windows)."""
    intensity = np.sum(np.abs(probe_true) ** 2, axis=0)
    h, w = intensity.shape
    out = np.zeros(tuple(int(s) for s in object_shape), dtype=np.float64)
    for x, y in whole_corners(positions_px):
        out[y : y + h, x : x + w] += intensity
    return out


def object_error(truth, recon, illum, *, max_shift=0):
    """janssen's `object_error` (janssen/invert/_metrics.py) re-implemented with NumPy.

    Align by the best integer shift up to `max_shift`, remove the global complex scale
    `gamma = <R, T> / <R, R>`, and return `||T - gamma R|| / ||T||` over the pixels whose
    illumination exceeds half of its 99th percentile.
    """
    truth, recon, illum = np.asarray(truth), np.asarray(recon), np.asarray(illum)
    mask = illum > 0.5 * np.percentile(illum, 99)
    target = truth[mask]
    best = np.inf
    for sy in range(-max_shift, max_shift + 1):
        for sx in range(-max_shift, max_shift + 1):
            shifted = np.roll(recon, (sy, sx), (0, 1))[mask]
            gamma = np.vdot(shifted, target) / max(np.vdot(shifted, shifted).real, np.finfo(np.float64).tiny)
            best = min(best, np.linalg.norm(target - gamma * shifted) / np.linalg.norm(target))
    return float(best)


def _mask(illum):
    illum = np.asarray(illum)
    return illum > 0.5 * np.percentile(illum, 99)


def best_ramp(truth, recon, illum, *, upsample=4, refinements=10, start=None):
    """The linear phase ramp `(ky, kx)` (cycles per pixel) maximising `|sum_mask T conj(R) exp(-2 pi i k.r)|`.

    The peak of an `upsample`-times oversampled FFT of the masked product (or `start`, a
    previous peak), refined `refinements` times on a local 11 x 11 grid (matrix DFTs), each
    a fifth the previous spacing: after 10 the ramp is known to 1e-7 of a coarse step, so a
    pure ramp is removed to about 1e-8 (medium preset).
    """
    mask = _mask(illum)
    product = np.where(mask, np.asarray(truth) * np.conj(np.asarray(recon)), 0).astype(np.complex128)
    ny, nx = product.shape
    if start is None:
        spectrum = np.abs(np.fft.fft2(product, s=(ny * upsample, nx * upsample)))
        iy, ix = np.unravel_index(np.argmax(spectrum), spectrum.shape)
        ky, kx = np.fft.fftfreq(ny * upsample)[iy], np.fft.fftfreq(nx * upsample)[ix]
    else:
        ky, kx = start
    step_y, step_x = 1 / (ny * upsample), 1 / (nx * upsample)
    ys, xs = np.arange(ny), np.arange(nx)
    offsets = np.linspace(-1, 1, 11)
    for _ in range(refinements):
        cand_y, cand_x = ky + offsets * step_y, kx + offsets * step_x
        left = np.exp(-2j * np.pi * cand_y[:, None] * ys[None, :])
        right = np.exp(-2j * np.pi * xs[:, None] * cand_x[None, :])
        values = np.abs(left @ product @ right)
        i, j = np.unravel_index(np.argmax(values), values.shape)
        ky, kx = cand_y[i], cand_x[j]
        step_y, step_x = step_y / 5, step_x / 5
    return float(ky), float(kx)


def ramp(shape, k):
    """`exp(2 pi i (ky y + kx x))` on a grid of `shape`."""
    ny, nx = shape
    ky, kx = k
    return np.exp(2j * np.pi * (ky * np.arange(ny)[:, None] + kx * np.arange(nx)[None, :]))


def ramp_free_error(truth, recon, illum, *, max_shift=0, upsample=4, refinements=10):
    """`obj_err_ramp`: `object_error` after also removing the best linear phase ramp.

    The one measure of the benchmarks' `obj_err_ramp` column, for janssen's rows and the
    peers' alike. `O exp(i k.r)` with `P exp(-i k.r)` predicts the same far-field data, so
    joint refinement can drift along this ramp; janssen's engines hold it (`fix_gauge`), the
    peers by default do not, and the raw `object_error` (a global complex factor removed,
    not a ramp) scores that drift as error. For each integer shift up to `max_shift` (as
    `object_error`'s), the ramp of `best_ramp` (from the zero-shift peak: an integer shift
    leaves the ramp as it is, up to a constant phase) is removed and the error taken; the
    least is returned. A constant phase and a ramp on `recon` leave it unchanged.
    """
    truth, recon, illum = np.asarray(truth), np.asarray(recon), np.asarray(illum)
    coarse = best_ramp(truth, recon, illum, upsample=upsample, refinements=0)
    best = np.inf
    for sy in range(-max_shift, max_shift + 1):
        for sx in range(-max_shift, max_shift + 1):
            shifted = np.roll(recon, (sy, sx), (0, 1))
            k = best_ramp(truth, shifted, illum, upsample=upsample, refinements=refinements, start=coarse)
            best = min(best, object_error(truth, shifted * ramp(recon.shape, k), illum))
    return float(best)


def relative_mismatch(predicted, measured):
    """`||predicted - measured|| / ||measured||` over all frames."""
    predicted = np.asarray(predicted, dtype=np.float64)
    measured = np.asarray(measured, dtype=np.float64)
    return float(np.linalg.norm(predicted - measured) / np.linalg.norm(measured))


class Clock:
    """Wall and CPU (process) time per iteration, paused while the runner evaluates the object error."""

    def __init__(self):
        self.laps, self.cpu_laps = [], []
        self.resume()

    def resume(self):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def lap(self, *, extend=False):
        """End an iteration; with `extend`, add the time since `resume` to the last one instead."""
        wall, cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start
        if extend:
            self.laps[-1] += wall
            self.cpu_laps[-1] += cpu
        else:
            self.laps.append(wall)
            self.cpu_laps.append(cpu)


class History:
    """The object error after each iteration (and, with `ramp`, the ramp-free error too).

    The ramp-free errors are computed after the run (`ramp_errors`), from copies of the
    objects kept meanwhile: computed between iterations, their large FFTs and BLAS calls
    (whose worker threads spin on after them) slowed the next iterations by up to 3x in
    wall and CPU time on the loaded 2-core machine.
    """

    def __init__(self, truth, illum, *, ramp=False):
        self.truth, self.illum, self.ramp = truth, illum, ramp
        self.errors, self.objects, self._ramp_errors = [], [], None

    def add(self, obj):
        self.errors.append(object_error(self.truth, obj, self.illum))
        if self.ramp:
            self.objects.append(np.array(obj, copy=True))

    @property
    def ramp_errors(self):
        if self._ramp_errors is None:
            self._ramp_errors = [ramp_free_error(self.truth, obj, self.illum) for obj in self.objects]
            self.objects = []
        return self._ramp_errors


def runner_parser(description, engines, default_engine):
    """The arguments every peer runner takes; each runner adds its own after these."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, help=".npz written by make_npz.py")
    parser.add_argument("--engine", default=default_engine, choices=sorted(engines))
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument(
        "--ramp-history", action="store_true", help="also record the ramp-free error after each iteration"
    )
    parser.add_argument("--save-object", default=None, help="also save the final object (Y, X) here (.npy)")
    return parser


def summarise(*, peer, version, engine, settings, clock, history, final_object, device, forward_check):
    """The result record the runners write (see benchmarks/README.md, "Peers").

    `clock` holds the iteration times, `history` the errors after each iteration; the
    final object's error is taken with shifts of up to 2 pixels, and without its ramp.

    `iteration_s[0]` is the first iteration including the peer's setup (`compile_s`);
    `per_iter_s` is the median of the others (`per_iter_cpu_s`: the same in process CPU time,
    summed over threads, which a loaded machine inflates less). `time_to_0.066_s` is the wall time from the
    start of the first iteration to the end of the first iteration whose object error is
    <= 0.066 (error evaluation excluded), or None.
    """
    iteration_s, iteration_cpu_s, errors = clock.laps, clock.cpu_laps, history.errors
    final_error = object_error(history.truth, final_object, history.illum, max_shift=2)
    ramp_free = ramp_free_error(history.truth, final_object, history.illum, max_shift=2)
    elapsed = np.cumsum(iteration_s)
    reached = first_below(errors)
    rest = iteration_s[1:] or iteration_s
    return {
        "peer": peer,
        "version": version,
        "engine": engine,
        "settings": settings,
        "iterations": len(iteration_s),
        "per_iter_s": round(statistics.median(rest), 5),
        "per_iter_cpu_s": round(statistics.median(iteration_cpu_s[1:] or iteration_cpu_s), 5),
        "compile_s": round(iteration_s[0], 4),
        "obj_err_history": [round(e, 5) for e in errors],
        "obj_err": round(final_error, 5),
        "obj_err_ramp_removed": round(ramp_free, 5),
        "iters_to_0.066": None if reached is None else reached + 1,
        "time_to_0.066_s": None if reached is None else round(float(elapsed[reached]), 4),
        "total_s": round(float(elapsed[-1]), 4),
        **ramp_record(history.ramp_errors, elapsed),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": os.cpu_count(),
        "forward_check": forward_check,
    }


def first_below(errors, target=TARGET_ERROR):
    """Index of the first error <= `target`, or None."""
    return next((i for i, e in enumerate(errors) if e <= target), None)


def ramp_record(ramp_errors, elapsed):
    """The ramp-free history and its time to 0.066 (empty when not recorded)."""
    if not len(ramp_errors):
        return {}
    reached = first_below(ramp_errors)
    return {
        "obj_err_ramp_removed_history": [round(e, 5) for e in ramp_errors],
        "iters_to_0.066_ramp_removed": None if reached is None else reached + 1,
        "time_to_0.066_ramp_removed_s": None if reached is None else round(float(elapsed[reached]), 4),
    }


def write_json(path, record):
    """Write `record` to `path` (pretty-printed) and print its one-line summary."""
    with open(path, "w") as handle:
        json.dump(record, handle, indent=1)
    brief = {k: v for k, v in record.items() if k != "obj_err_history"}
    print(json.dumps(brief), flush=True)
