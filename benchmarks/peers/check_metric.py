"""Check the peers' NumPy helpers against janssen on one benchmark problem.

    /work/venv/bin/python benchmarks/peers/check_metric.py --data small.npz

Runs in janssen's environment and compares, on the .npz written by make_npz.py:

- `_common.illumination` with `janssen.invert.illumination_map` of the true microscope,
- `_common.object_error` with `janssen.invert.object_error` on (truth, start) and on
  (truth, a perturbed truth), at `max_shift` 0 and 2,
- a plain NumPy forward model that reads the file's conventions (`positions_px` corners,
  centred unitary FFT) with the file's noiseless intensities.

Exits non-zero when a difference exceeds its tolerance.
"""

import argparse
import sys

import numpy as np
from _common import illumination, load_npz, object_error, relative_mismatch, whole_corners

from janssen.invert import illumination_map, object_error as janssen_object_error
from janssen.optics import Probe, SampleFunction
from janssen.scopes import FarFieldMicroscope


def numpy_forward(obj, probe, positions_px):
    """`sum_m |fft2c(P_m * O[window])|**2` with a centred unitary FFT (janssen's far-field model)."""
    h, w = probe.shape[-2:]
    frames = []
    for x, y in whole_corners(positions_px):
        exit_waves = probe * obj[None, y : y + h, x : x + w]
        far = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(exit_waves, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
        frames.append(np.sum(np.abs(far) ** 2, axis=0))
    return np.stack(frames)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    args = parser.parse_args(argv)
    data = load_npz(args.data)
    dx = data["dx"]
    truth = data["object_true"]
    microscope = FarFieldMicroscope(
        Probe(data["probe_true"], data["wavelength"], dx), SampleFunction(truth, dx), data["positions_m"]
    )
    ours = illumination(data["probe_true"], data["positions_px"], data["object_shape"])
    theirs = np.asarray(illumination_map(microscope), np.float64)
    checks = [("illumination map (relative)", relative_mismatch(ours, theirs), 1e-5)]
    rng = np.random.default_rng(0)
    noisy = truth * np.exp(0.2j * rng.standard_normal(truth.shape)) * 0.7j
    for name, recon in (("unit object", np.ones_like(truth)), ("perturbed truth", noisy)):
        for shift in (0, 2):
            a = object_error(truth, recon, theirs, max_shift=shift)
            b = janssen_object_error(truth, recon, theirs, max_shift=shift)
            checks.append((f"object_error {name}, max_shift={shift}: {a:.6f} vs janssen {b:.6f}", abs(a - b), 1e-6))
    predicted = numpy_forward(truth, data["probe_true"], data["positions_px"])
    noiseless = relative_mismatch(predicted, data["intensities_expected"])
    checks.append(("NumPy forward model vs intensities_expected", noiseless, 1e-5))
    noisy = relative_mismatch(predicted, data["intensities"])
    checks.append(("NumPy forward model vs intensities (Poisson noise)", noisy, 1.0))
    failed = False
    for name, value, tolerance in checks:
        ok = value <= tolerance
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (tolerance {tolerance:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
