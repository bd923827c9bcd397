"""The real Siemens-star dataset (skipped when ../shared/data is absent)."""

import numpy as np
import pytest

import janssen.io as jio


@pytest.fixture(scope="module")
def star(siemens_star_path):
    return jio.load_siemens_star(siemens_star_path)


@pytest.fixture(scope="module")
def mean_frame(star):
    return np.asarray(star.data.intensities, dtype=np.float64).mean(axis=0)


def test_shapes_and_counts(star):
    data = star.data
    assert data.intensities.shape == (516, 128, 128)
    assert data.positions.shape == (516, 2)
    assert star.probe.shape == (128, 128)
    counts = np.asarray(data.intensities)
    # Photon counts: non-negative integers, about 4.6e5 per frame (README).
    assert counts.min() >= 0 and np.array_equal(counts, np.round(counts))
    assert 4.4e5 < counts.sum(axis=(1, 2)).mean() < 4.8e5
    assert not np.any(np.asarray(data.bad_pixels))


def test_nominal_geometry(star):
    # 0.1 nm x 0.96 m / (128 x 75 um) = 10 nm, the unit of the stored scan.
    np.testing.assert_allclose(np.asarray(star.data.object_pixel_size), 1e-8, rtol=1e-6)


def test_frames_are_centred(star, mean_frame):
    """The probe's far field (a bright annulus around the central stop's shadow) sits at (64, 64).

    The brightest single pixel lies on the annulus, not at the centre, so the test
    locates the annulus and its dark core instead.
    """
    y, x = np.indices(mean_frame.shape)
    radius = np.hypot(y - 64, x - 64)
    # Unshifted, only 0.1 % of the counts would fall within 40 pixels of the centre; measured 98.8 %.
    assert mean_frame[radius < 40].sum() / mean_frame.sum() > 0.9
    # Intensity centroid: measured (y, x) = (64.0, 66.8); the star's streaks pull it sideways.
    centroid = np.array([(mean_frame * y).sum(), (mean_frame * x).sum()]) / mean_frame.sum()
    np.testing.assert_allclose(centroid, [64, 64], atol=3.5)
    # The central stop's shadow: measured centre (64.0, 64.8).
    ring = np.median(mean_frame[(radius > 15) & (radius < 30)])
    dark = (mean_frame < 0.1 * ring) & (radius < 20)
    assert dark.sum() > 100
    np.testing.assert_allclose([y[dark].mean(), x[dark].mean()], [64, 64], atol=1.5)


def test_positions(star):
    data = star.data
    pixels = np.asarray(data.positions, dtype=np.float64) / np.asarray(data.object_pixel_size, dtype=np.float64)
    span = pixels.max(axis=0) - pixels.min(axis=0)
    # README range: rows -164.3 ... 167.6 (y), columns -164.4 ... 164.5 (x).
    np.testing.assert_allclose(span, [328.9, 331.9], atol=0.1)
    np.testing.assert_allclose(pixels.max(axis=0) + pixels.min(axis=0), 0.0, atol=1e-3)
    # The stored scan's first line steps ~66 pixels along its second (column) axis at a
    # constant row: in janssen's (x, y) order that is a step along x.
    steps = np.diff(pixels[1:5], axis=0)
    np.testing.assert_allclose(np.abs(steps[:, 0]), 66.3, atol=0.5)
    assert np.abs(steps[:, 1]).max() < 0.2


def test_probe_guess(star):
    probe = np.abs(np.asarray(star.probe)) ** 2
    # Scaled so that its power is the mean counts per frame (unitary far-field transform).
    np.testing.assert_allclose(probe.sum(), np.asarray(star.data.intensities).sum(axis=(1, 2)).mean(), rtol=1e-4)
    y, x = np.indices(probe.shape)
    centroid = np.array([(probe * y).sum(), (probe * x).sum()]) / probe.sum()
    np.testing.assert_allclose(centroid, [64, 64], atol=3)  # measured (61.9, 64.6)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="`path` must be the Siemens-star file"):
        jio.load_siemens_star(tmp_path / "absent.npz.bz2")
