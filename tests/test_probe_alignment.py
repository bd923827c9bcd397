"""The start probe's far field centred on the data: bad pixels, and a start off-centre.

The engines hold the probe's far-field centroid where the start puts it (the phase-ramp
gauge), so the start must be centred to a few hundredths of a pixel. Data from the
physics-only simulator (`physics_far_field.py`, no janssen code), whose probe is a disc
pupil centred on the frame's centre pixel.
"""

import jax.numpy as jnp
import numpy as np
import physics_far_field as pff
import pytest

import janssen.invert as jinv
from janssen.invert._ramp import spectrum_centroid
from janssen.io import MicroscopeData

_DX, _WAVELENGTH, _DISTANCE = 1e-8, 1e-10, 1.0


def _data(side: int, bad_fraction: float, seed: int):
    sim = pff.simulate(side=side, bad_fraction=bad_fraction, seed=seed)
    n = sim["frames"].shape[-1]
    pixel = _WAVELENGTH * _DISTANCE / (n * _DX)
    return sim, MicroscopeData(sim["frames"], sim["positions"] * _DX, _WAVELENGTH, pixel, _DISTANCE, sim["bad"])


def _error(sim, microscope) -> float:
    truth, recon = pff.common_window(sim["object"], np.asarray(microscope.sample.sample), 20)
    return jinv.object_error(truth, recon, np.ones(truth.shape))


def _off_centre_start(truth: np.ndarray, shift_px: float, seed: int = 1) -> np.ndarray:
    """The true probe blurred, with a smooth 0.3 rad phase error, its far field `shift_px` off-centre."""
    n = truth.shape[-1]
    f2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2
    blurred = np.fft.ifft2(np.fft.fft2(truth) * np.exp(-f2 / (2 * 0.15**2)))
    noise = np.random.default_rng(seed).standard_normal((n, n))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-f2 / (2 * 0.05**2))))
    y, x = np.indices((n, n))
    tilt = np.exp(2j * np.pi * shift_px * (x + 0.5 * y) / n)
    return blurred * np.exp(0.3j * smooth / smooth.std()) * tilt


@pytest.mark.parametrize("seed", [3, 4])
def test_bad_pixels_do_not_move_the_centre(seed):
    sim, data = _data(-1, 0.02, seed)
    centred = jinv.align_probe_to_data(jnp.asarray(_off_centre_start(sim["probe"], 0.3)), data)
    centre = np.asarray(spectrum_centroid(centred[None]))
    n = sim["frames"].shape[-1]
    # The true disc is centred on pixel n // 2. Holes filled from their neighbours put the
    # centre 0.018-0.032 px off (measured with both seeds).
    np.testing.assert_allclose(centre, [n // 2, n // 2], atol=5e-3)


@pytest.mark.parametrize("side", [1, -1])
def test_default_schedule_with_bad_pixels(side):
    sim, data = _data(side, 0.02, 4)
    start = jinv.init_far_field_microscope(data)
    run = jinv.run_schedule(start, data, jinv.default_schedule(start))
    # Measured 0.0085 / 0.0091 (0.0083 / 0.0081 without bad pixels); 0.045 / 0.015 when
    # the filled bad pixels moved the bright field's centre.
    assert _error(sim, run.solution.microscope) < 0.02


def test_an_off_centre_start_is_aligned():
    sim, data = _data(1, 0.0, 3)
    given = _off_centre_start(sim["probe"], 0.3)
    errors = {}
    for align in (True, False):
        start = jinv.init_far_field_microscope(data, given, align=align)
        solution = jinv.reconstruct(start, data, jinv.RPIE(), num_iterations=60)
        errors[align] = _error(sim, solution.microscope)
    # Measured 0.011-0.016 aligned; as given, the pin leaves the start's ramp on the object: 0.49.
    assert errors[True] < 0.03
    assert errors[False] > 0.2
