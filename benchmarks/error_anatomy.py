"""Where an object's error lives: its share by spatial frequency, its amplitude part, and phase vortices.

    python benchmarks/error_anatomy.py FILE.cxi OBJECT.npy

Compares a reconstructed object (`.npy`, e.g. from `large_default.py --save`) with the
`/ground_truth` of a simulated CXI file, over the well-illuminated pixels (DESIGN.md's
mask), after removing the best linear phase ramp (`peers/_common.py`'s `best_ramp`) and
the global complex factor. Prints the error, the share of the difference's energy below
several spatial frequencies (cycles per pixel), the error of the amplitudes alone, and the
phase vortices (winding numbers of the phase of `R conj(T)` around 2 x 2 plaquettes where
the truth is not dark).
"""

import pathlib
import sys

import numpy as np

import janssen.invert as jinv
import janssen.io as jio

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from peers._common import _mask, best_ramp, ramp  # noqa: E402


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def main(argv=None) -> int:
    path, found = (sys.argv[1:] if argv is None else argv)[:2]
    truth = jio.read_ground_truth(path)
    true_object = np.asarray(truth.object).astype(np.complex128)
    illumination = np.asarray(jinv.illumination_map(truth.microscope()))
    del truth
    recon = np.load(found).astype(np.complex128)
    mask = _mask(illumination)
    recon = recon * ramp(recon.shape, best_ramp(true_object, recon, illumination))
    recon = recon * np.vdot(recon[mask], true_object[mask]) / np.vdot(recon[mask], recon[mask]).real
    difference = np.where(mask, true_object - recon, 0)
    norm = np.linalg.norm(true_object[mask])
    print(f"error (ramp removed): {np.linalg.norm(difference[mask]) / norm:.4f}")
    spectrum = np.abs(np.fft.fft2(difference)) ** 2
    frequency = np.hypot(np.fft.fftfreq(difference.shape[0])[:, None], np.fft.fftfreq(difference.shape[1])[None, :])
    for cut in (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2):
        share = np.sum(spectrum[frequency < cut]) / np.sum(spectrum)
        print(f"  share of the error below {cut:5.3f} cycles/px: {share:.3f}")
    print(f"amplitude part: {np.linalg.norm((np.abs(true_object) - np.abs(recon))[mask]) / norm:.4f}")
    phase = np.angle(recon * np.conj(true_object))
    winding = (
        _wrap(phase[:-1, 1:] - phase[:-1, :-1])
        + _wrap(phase[1:, 1:] - phase[:-1, 1:])
        + _wrap(phase[1:, :-1] - phase[1:, 1:])
        + _wrap(phase[:-1, :-1] - phase[1:, :-1])
    )
    winding = np.rint(winding / (2 * np.pi)).astype(int)
    lit = np.abs(true_object) > 0.2 * np.median(np.abs(true_object[mask]))
    cells = (mask & lit)[:-1, :-1] & (mask & lit)[1:, 1:] & (mask & lit)[1:, :-1] & (mask & lit)[:-1, 1:]
    count = winding[cells]
    print(f"phase vortices: +{int(np.sum(count > 0))} / -{int(np.sum(count < 0))} in {int(np.sum(cells))} plaquettes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
