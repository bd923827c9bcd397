"""Simulated datasets: scan patterns, test object, focused probe, photon statistics."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import janssen.io as jio
from janssen.optics import fft2c, object_shape_for

WAVELENGTH, DISTANCE, CAMERA_PIXEL = 1e-10, 0.96, 75e-6
FRAME = 32
DX = WAVELENGTH * DISTANCE / (FRAME * CAMERA_PIXEL)  # 40 nm object pixel for 32-pixel frames


@pytest.fixture(scope="module")
def dataset():
    """A small dataset shared by the tests that only read it."""
    return jio.simulate(FRAME, 30, key=jr.PRNGKey(7), photons=1e5)


# ---- scans ------------------------------------------------------------------------------


def test_raster_scan_grid():
    positions = np.asarray(jio.raster_scan(4, 3, np.array([2e-7, 3e-7])))
    assert positions.shape == (12, 2)
    # x runs fastest along a row; each row has the same y.
    np.testing.assert_allclose(np.diff(positions[:4, 0]), 2e-7, rtol=1e-5)
    np.testing.assert_allclose(positions[:4, 1], positions[0, 1], rtol=1e-6)
    np.testing.assert_allclose(np.diff(positions[::4, 1]), 3e-7, rtol=1e-5)
    np.testing.assert_allclose(positions.mean(axis=0), 0.0, atol=1e-13)


def test_raster_scan_jitter_is_bounded():
    grid = np.asarray(jio.raster_scan(10, 10, 1e-6))
    jittered = np.asarray(jio.raster_scan(10, 10, 1e-6, jitter=1e-7, key=jr.PRNGKey(1)))
    offsets = np.abs(jittered - grid)
    # Each point moves by at most `jitter`, the re-centring by less than `jitter` more.
    assert offsets.max() <= 2e-7 * (1 + 1e-5)
    assert offsets.max() > 0.5e-7  # the jitter was applied
    np.testing.assert_allclose(jittered.mean(axis=0), 0.0, atol=1e-13)


def test_jitter_needs_key():
    with pytest.raises(ValueError, match="`key` is required"):
        jio.raster_scan(3, 3, 1e-6, jitter=1e-7)
    with pytest.raises(ValueError, match="`step`"):
        jio.fermat_spiral_scan(10, -1.0)


def test_fermat_spiral_spacing():
    step = 1e-7
    positions = np.asarray(jio.fermat_spiral_scan(100, step), dtype=np.float64)
    assert positions.shape == (100, 2)
    distances = np.hypot(*(positions[:, None, :] - positions[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    # Median nearest-neighbour distance is `step` (the spiral constant is measured to 1 %).
    assert abs(np.median(nearest) / step - 1) < 0.03
    assert nearest.min() > 0.85 * step  # no two points crowd together
    np.testing.assert_allclose(positions.mean(axis=0), 0.0, atol=1e-6 * step)


def test_fermat_spiral_jitter_is_deterministic():
    a = jio.fermat_spiral_scan(50, 1e-7, jitter=2e-8, key=jr.PRNGKey(3))
    b = jio.fermat_spiral_scan(50, 1e-7, jitter=2e-8, key=jr.PRNGKey(3))
    c = jio.fermat_spiral_scan(50, 1e-7, jitter=2e-8, key=jr.PRNGKey(4))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert np.abs(np.asarray(a) - np.asarray(jio.fermat_spiral_scan(50, 1e-7))).max() <= 4e-8 * (1 + 1e-5)


# ---- object and probe -------------------------------------------------------------------


def test_test_object_ranges_and_determinism():
    obj = np.asarray(jio.make_test_object((128, 128), key=jr.PRNGKey(0), max_phase=1.2, min_amplitude=0.4))
    assert obj.shape == (128, 128)
    amplitude, phase = np.abs(obj), np.angle(obj)
    # Both maps are rescaled onto their full range exactly.
    np.testing.assert_allclose([amplitude.min(), amplitude.max()], [0.4, 1.0], atol=1e-5)
    np.testing.assert_allclose([phase.min(), phase.max()], [0.0, 1.2], atol=1e-5)
    again = np.asarray(jio.make_test_object((128, 128), key=jr.PRNGKey(0), max_phase=1.2, min_amplitude=0.4))
    other = np.asarray(jio.make_test_object((128, 128), key=jr.PRNGKey(1), max_phase=1.2, min_amplitude=0.4))
    assert np.array_equal(obj, again)
    assert np.abs(obj - other).mean() > 0.05


def test_test_object_contrast():
    obj = np.asarray(jio.make_test_object((128, 128), key=jr.PRNGKey(2)))
    # Distance of the best-scaled unit object, |T - gamma| / |T| with gamma = mean(T):
    # about 0.5 with the default contrast (measured 0.50-0.52 over keys).
    assert 0.45 < np.linalg.norm(obj - obj.mean()) / np.linalg.norm(obj) < 0.6


def test_test_object_has_structure_at_many_scales():
    phase = np.angle(np.asarray(jio.make_test_object((128, 128), key=jr.PRNGKey(2))))
    power = np.abs(np.fft.fftshift(np.fft.fft2(phase - phase.mean()))) ** 2
    y, x = np.indices(power.shape) - 64
    radius = np.hypot(x, y)
    # Power per octave of spatial frequency: a 1/f amplitude spectrum spreads it evenly
    # (measured spread 1.5x over the octaves from 2 to 64 cycles per image); a smooth
    # 1/f**1.5 field would give 16x and fail.
    octaves = [power[(radius >= f) & (radius < 2 * f)].sum() for f in (2, 4, 8, 16, 32)]
    assert max(octaves) / min(octaves) < 4


def test_test_object_validates():
    with pytest.raises(ValueError, match="`min_amplitude`"):
        jio.make_test_object((8, 8), key=jr.PRNGKey(0), min_amplitude=0.0)


def test_focused_probe_power_support_and_size():
    n, diameter = 64, 24.0
    probe = np.asarray(jio.make_focused_probe((n, n), 2e-8, 1e-10, diameter_px=diameter))
    assert probe.shape == (1, n, n)
    np.testing.assert_allclose(np.sum(np.abs(probe) ** 2), 1.0, rtol=1e-5)
    # The far field is the pupil: a disc of diameter pupil_fraction * n = 32 pixels.
    far = np.abs(np.asarray(fft2c(jnp.asarray(probe[0])))) ** 2
    y, x = np.indices((n, n)) - n // 2
    radius = np.hypot(x, y)
    assert far[radius > 16.0].sum() < 1e-8
    # The defocus makes a disc of `diameter` pixels, not a focus: measured 82 % of the
    # power within D/2, 91 % within 0.625 D, and only 37 % within D/4.
    intensity = np.abs(probe[0]) ** 2
    assert intensity[radius <= diameter / 2].sum() > 0.75
    assert intensity[radius <= 0.625 * diameter].sum() > 0.88
    assert intensity[radius <= diameter / 4].sum() < 0.5
    # A central stop of 0.3 pupil diameters empties the far field within 4.8 pixels.
    stopped = jio.make_focused_probe((n, n), 2e-8, 1e-10, diameter_px=diameter, central_stop=0.3)
    far = np.abs(np.asarray(fft2c(stopped[0]))) ** 2
    assert far[radius < 4.5].sum() < 1e-8 and far[(radius > 5.5) & (radius < 15.5)].min() > 0


def test_focused_probe_modes_are_orthogonal_with_halving_weights():
    probe = np.asarray(jio.make_focused_probe((32, 32), 4e-8, 1e-10, diameter_px=12, modes=4))
    gram = probe.reshape(4, -1).conj() @ probe.reshape(4, -1).T
    weights = np.array([8, 4, 2, 1]) / 15
    np.testing.assert_allclose(np.abs(gram), np.diag(weights), atol=1e-5)
    single = np.asarray(jio.make_focused_probe((32, 32), 4e-8, 1e-10, diameter_px=12))
    # Mode 0 is the coherent probe itself, with its share of the power.
    np.testing.assert_allclose(probe[0], single[0] * np.sqrt(weights[0]), atol=1e-5)


def test_focused_probe_validates():
    with pytest.raises(ValueError, match="`diameter_px`"):
        jio.make_focused_probe((32, 32), 4e-8, 1e-10, diameter_px=40)


# ---- datasets ---------------------------------------------------------------------------


def test_dataset_geometry(dataset):
    data = dataset.data
    assert data.intensities.shape == (30, FRAME, FRAME)
    np.testing.assert_allclose(np.asarray(data.object_pixel_size), DX, rtol=1e-6)
    np.testing.assert_allclose(float(data.wavelength), WAVELENGTH, rtol=1e-6)
    assert np.array_equal(np.asarray(dataset.positions), np.asarray(data.positions))
    # Whole-pixel positions by default, centred on the bounding box's midpoint.
    in_pixels = np.asarray(dataset.positions, dtype=np.float64) / DX
    np.testing.assert_allclose(in_pixels, np.round(in_pixels), atol=1e-3)
    np.testing.assert_allclose(in_pixels.max(axis=0) + in_pixels.min(axis=0), 0.0, atol=1.01)
    assert dataset.object.shape == object_shape_for(dataset.positions, data.object_pixel_size, (FRAME, FRAME), 4)
    assert dataset.probe.shape == (1, FRAME, FRAME)


def test_subpixel_positions_stay_fractional():
    dataset = jio.simulate(FRAME, 30, key=jr.PRNGKey(7), photons=1e5, subpixel=True)
    in_pixels = np.asarray(dataset.positions, dtype=np.float64) / DX
    assert np.abs(in_pixels - np.round(in_pixels)).max() > 0.2


def test_same_key_same_data(dataset):
    again = jio.simulate(FRAME, 30, key=jr.PRNGKey(7), photons=1e5)
    other = jio.simulate(FRAME, 30, key=jr.PRNGKey(8), photons=1e5)
    assert np.array_equal(np.asarray(dataset.data.intensities), np.asarray(again.data.intensities))
    assert np.array_equal(np.asarray(dataset.object), np.asarray(again.object))
    assert not np.array_equal(np.asarray(dataset.data.intensities), np.asarray(other.data.intensities))
    assert not np.allclose(np.asarray(dataset.object), np.asarray(other.object))


def test_mean_photons_per_frame(dataset):
    expected = np.asarray(dataset.expected_intensities(), dtype=np.float64)
    # Before noise the mean total equals `photons` (float32 rounding only).
    assert abs(expected.sum(axis=(1, 2)).mean() / 1e5 - 1) < 1e-3
    # After noise: the total of 30 frames is Poisson with mean 3e6, sigma ~1.7e3 (6e-4).
    counts = np.asarray(dataset.data.intensities, dtype=np.float64)
    assert abs(counts.sum() / 3e6 - 1) < 3e-3
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0


def test_noiseless_prediction_is_the_expectation(dataset):
    expected = np.asarray(dataset.expected_intensities(), dtype=np.float64)
    counts = np.asarray(dataset.data.intensities, dtype=np.float64)
    bright = expected > 20
    z = (counts[bright] - expected[bright]) / np.sqrt(expected[bright])
    # Standardised Poisson residuals: mean 0, variance 1; with n ~ 1e4 pixels the
    # standard errors are ~0.01 (mean) and ~0.015 (variance).
    assert bright.sum() > 5000
    assert abs(z.mean()) < 0.05
    assert abs(z.var() - 1) < 0.08


def test_prediction_matches_hand_computed_far_field(dataset):
    """The truth's frame convention: position 0 puts the probe's centre on the object's centre."""
    obj, probe = np.asarray(dataset.object), np.asarray(dataset.probe)
    expected = np.asarray(dataset.expected_intensities())
    for j in (0, 17):
        shift = np.round(np.asarray(dataset.positions[j], dtype=np.float64) / DX).astype(int)
        top = obj.shape[0] // 2 - FRAME // 2 + shift[1]
        left = obj.shape[1] // 2 - FRAME // 2 + shift[0]
        patch = obj[top : top + FRAME, left : left + FRAME]
        exit_wave = np.fft.ifftshift(probe[0] * patch)
        far = np.fft.fftshift(np.fft.fft2(exit_wave, norm="ortho"))
        np.testing.assert_allclose(expected[j], np.abs(far) ** 2, rtol=1e-3, atol=1e-3 * expected[j].max())


def test_poisson_statistics_on_a_flat_expectation():
    """With a unit object and one position repeated, every frame has the same mean."""
    probe = jio.make_focused_probe((FRAME, FRAME), DX, WAVELENGTH, diameter_px=12)
    obj = jnp.ones((40, 40), jnp.complex64)
    dataset = jio.simulate_measurement(obj, probe, jnp.zeros((400, 2)), key=jr.PRNGKey(5), photons=2e4)
    expected = np.asarray(dataset.expected_intensities()[0], dtype=np.float64)
    counts = np.asarray(dataset.data.intensities, dtype=np.float64)
    bright = expected > 10
    ratio = counts.var(axis=0, ddof=1)[bright] / counts.mean(axis=0)[bright]
    # Poisson: variance = mean. Each ratio has a relative error ~ sqrt(2/400) = 7 %;
    # averaged over the ~100+ bright pixels it is ~0.7 %.
    assert bright.sum() > 100
    assert abs(ratio.mean() - 1) < 0.04
    np.testing.assert_allclose(counts.mean(axis=0)[bright], expected[bright], rtol=5 / np.sqrt(400 * 10))


def test_mixed_state_dataset():
    # Same scan and key as the shared dataset, so the object grid (and its compilation) is shared.
    dataset = jio.simulate(FRAME, 30, key=jr.PRNGKey(7), photons=1e5, modes=3)
    power = np.sum(np.abs(np.asarray(dataset.probe)) ** 2, axis=(1, 2))
    np.testing.assert_allclose(power / power.sum(), np.array([4, 2, 1]) / 7, rtol=1e-4)
    # Intensities are the incoherent sum over modes.
    obj, probe = np.asarray(dataset.object), np.asarray(dataset.probe)
    shift = np.round(np.asarray(dataset.positions[3], dtype=np.float64) / DX).astype(int)
    top, left = obj.shape[0] // 2 - 16 + shift[1], obj.shape[1] // 2 - 16 + shift[0]
    exit_waves = np.fft.ifftshift(probe * obj[top : top + 32, left : left + 32], axes=(-2, -1))
    incoherent = np.sum(np.abs(np.fft.fft2(exit_waves, norm="ortho")) ** 2, axis=0)
    expected = np.asarray(dataset.expected_intensities()[3])
    np.testing.assert_allclose(expected, np.fft.fftshift(incoherent), rtol=1e-3, atol=1e-3 * expected.max())


def test_unknown_preset():
    # The "small" preset itself is simulated end to end by tests/test_cli.py.
    with pytest.raises(ValueError, match="`name`"):
        jio.simulate_preset("huge", key=jr.PRNGKey(0))
