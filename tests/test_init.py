"""Starting points built from the data: object grid, centred scan, probe guess."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_far_field_problem

from janssen.invert import (
    init_far_field_microscope,
    init_object,
    init_probe,
    positions_in_object_frame,
)
from janssen.io import MicroscopeData
from janssen.optics import positions_outside


@pytest.fixture(scope="module")
def problem():
    import jax.random as jr

    return tiny_far_field_problem(jr.PRNGKey(3))


def _offset(data):
    # The same scan moved off-centre: init must re-centre it.
    return MicroscopeData(
        data.intensities,
        data.positions + jnp.array([[3e-7, -5e-7]]),
        data.wavelength,
        data.camera_pixel_size,
        data.distance,
    )


def test_positions_midpoint_is_zero(problem):
    data = _offset(problem[0])
    pos = np.asarray(positions_in_object_frame(data))
    midpoint = (pos.max(axis=0) + pos.min(axis=0)) / 2
    assert np.max(np.abs(midpoint)) < 1e-6 * np.ptp(pos)
    # A pure translation: the differences between positions are unchanged.
    np.testing.assert_allclose(pos - pos[0], np.asarray(data.positions - data.positions[:1]), atol=1e-12)


def test_object_covers_every_patch(problem):
    data = _offset(problem[0])
    sample = init_object(data, data.frame_shape, padding=0)
    assert sample.shape[0] % 2 == 0 and sample.shape[1] % 2 == 0
    np.testing.assert_allclose(np.asarray(sample.sample), 1.0)
    np.testing.assert_allclose(np.asarray(sample.dx), np.asarray(data.object_pixel_size), rtol=1e-6)
    bad = positions_outside(positions_in_object_frame(data), sample.dx, sample.shape, data.frame_shape)
    assert bad.size == 0
    # The padding adds exactly 2 * padding pixels per axis.
    padded = init_object(data, data.frame_shape, padding=4)
    assert padded.shape == (sample.shape[0] + 8, sample.shape[1] + 8)
    with pytest.raises(ValueError, match="padding"):
        init_object(data, data.frame_shape, padding=-1)


def test_probe_power_equals_mean_counts(problem):
    data = _offset(problem[0])
    microscope = init_far_field_microscope(data)
    mean_counts = float(jnp.mean(jnp.sum(data.intensities, axis=(1, 2))))
    power = float(jnp.sum(jnp.abs(microscope.probe.fields()) ** 2))
    assert abs(power / mean_counts - 1) < 1e-4
    # With a unit object the predicted mean counts per frame equal the measured ones.
    predicted = float(jnp.mean(jnp.sum(microscope(), axis=(1, 2))))
    assert abs(predicted / mean_counts - 1) < 1e-4
    # The guess's far field is the measured mean pattern, moved (by a sub-pixel tilt) so
    # that its centroid sits on the bright field's geometric centre.
    from janssen.invert._ramp import intensity_centroid, spectrum_centroid
    from janssen.optics import fft2c

    guess = init_probe(data)
    mean = jnp.mean(data.intensities, axis=0)
    bright_field = intensity_centroid((mean > 0.2 * jnp.max(mean)).astype(mean.dtype))
    np.testing.assert_allclose(spectrum_centroid(guess), bright_field, atol=5e-3)  # measured 1.7e-3 px
    far = np.asarray(jnp.abs(fft2c(guess[0])) ** 2)
    correlation = np.corrcoef(far.ravel(), np.asarray(mean).ravel())[0, 1]
    assert correlation > 0.99, correlation


def test_given_probe_is_used_as_is(problem):
    data, true, _ = problem
    microscope = init_far_field_microscope(data, true.probe.fields()[0], align=False)
    np.testing.assert_array_equal(np.asarray(microscope.probe.fields()), np.asarray(true.probe.fields()))
    # Aligned (the default), the true probe, already centred on the bright field, moves by
    # a rounding-level tilt only (measured 1.2e-5 of the peak; the tilt's size depends on
    # the platform's float32 rounding, so the check is not exact).
    aligned = init_far_field_microscope(data, true.probe.fields()[0])
    difference = np.abs(np.asarray(aligned.probe.fields()) - np.asarray(true.probe.fields())).max()
    assert difference < 1e-3 * np.abs(np.asarray(true.probe.fields())).max()
    with pytest.raises(ValueError, match="frame shape"):
        init_far_field_microscope(data, jnp.ones((8, 8), jnp.complex64))


def test_probe_guess_reconstructs_simulated_data():
    # The default guess (mean far field + defocus sized from the scan) lets rPIE recover
    # the object: measured object error 0.164 here after 30 iterations (0.020 on the
    # small preset, where a flat-phase guess stalls at 0.55 and a unit object scores ~0.5).
    import jax.random as jr

    from janssen.invert import RPIE, illumination_map, object_error, reconstruct
    from janssen.io import simulate

    ds = simulate(32, 36, key=jr.PRNGKey(1), photons=1e5)
    microscope = init_far_field_microscope(ds.data)
    assert microscope.sample.shape == ds.object.shape
    solution = reconstruct(microscope, ds.data, RPIE(), num_iterations=30)
    error = object_error(ds.object, solution.microscope.sample.sample, illumination_map(ds.microscope()))
    assert error < 0.25


def test_nearest_distances_in_blocks_equal_the_whole_table():
    """The scan spacing's nearest-neighbour distances, a block of rows at a time (3000 points: 3 blocks).

    Exact against the whole pairwise table, a repeated point (distance 0) included.
    """
    from janssen.io._geometry_check import nearest_distances

    points = np.random.default_rng(0).normal(size=(3000, 2))
    points[5] = points[7]
    table = np.sqrt(np.sum((points[:, None] - points[None]) ** 2, axis=-1))
    np.fill_diagonal(table, np.inf)
    np.testing.assert_array_equal(nearest_distances(points), table.min(axis=1))
    assert nearest_distances(points)[5] == 0.0


def test_scale_probe_to_counts_gives_the_mean_counts_per_frame():
    # Analytic: sum |c P|**2 = c**2 sum |P|**2 = mean_j sum I_j, for complex, real and integer fields.
    import jax.random as jr

    import janssen.invert as jinv
    import janssen.io as jio

    dataset = jio.simulate_preset("small", key=jr.PRNGKey(0))
    counts = float(np.mean(np.sum(np.asarray(dataset.data.intensities, dtype=np.float64), axis=(1, 2))))
    rng = np.random.default_rng(0)
    shape = (2, *dataset.data.frame_shape)
    for fields in (
        (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64),
        rng.normal(size=shape[1:]).astype(np.float32),
        rng.integers(0, 5, size=shape[1:]),
    ):
        scaled = np.asarray(jinv.scale_probe_to_counts(fields, dataset.data))
        np.testing.assert_allclose(np.sum(np.abs(scaled) ** 2), counts, rtol=1e-5)
        # The same shape, the same pattern (a positive real factor).
        ratio = scaled[fields != 0] / fields[fields != 0]
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
    with pytest.raises(ValueError, match="must have some power to scale"):
        jinv.scale_probe_to_counts(np.zeros(shape[1:]), dataset.data)
