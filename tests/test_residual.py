"""The one amplitude residual (`janssen.invert._residual`) against a hand-written NumPy residual.

A tiny far-field problem with a bad-pixel mask and a detector model (a background map and
per-frame scales): every consumer of the residual (the engines' smooth residual, the
exact residual and its frame sums, `AmplitudeLoss`, `data_residual`, the R-factor) is
compared with NumPy formulas written from the definitions, in float64.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_complex

from janssen.invert import AmplitudeLoss, data_residual, r_factor, trainable_spec
from janssen.invert._realify import to_real
from janssen.invert._residual import AmplitudeResidual, residual_function
from janssen.io import MicroscopeData
from janssen.optics import Probe, SampleFunction
from janssen.scopes import DetectorResponse, FarFieldMicroscope, with_detector

# float64 throughout: the two sides differ by rounding only (measured: below 1e-15 relative).
RTOL = 1e-12
EPS = 1e-3


@pytest.fixture
def case(x64):
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    dx, wavelength, n = 1e-8, 1e-9, 8
    probe = Probe(3.0 * random_complex(keys[0], (n, n), jnp.complex128), wavelength, dx)
    obj = SampleFunction(1 + 0.3 * random_complex(keys[1], (12, 12), jnp.complex128), dx)
    positions = jnp.array([[-2.0, -2.0], [2.0, -2.0], [-2.0, 2.0], [2.0, 2.0]]) * dx
    coherent_model = FarFieldMicroscope(probe, obj, positions)
    background = np.asarray(jax.random.uniform(keys[2], (n, n), jnp.float64, 0.5, 2.0))
    scales = np.array([0.8, 1.0, 1.1, 1.3])
    microscope = with_detector(coherent_model, DetectorResponse(background, scales))
    rng = np.random.default_rng(0)
    measured = rng.poisson(np.asarray(jax.jit(lambda m: m())(microscope))).astype(np.float64)
    bad = np.zeros((n, n), bool)
    bad[0, :3] = bad[5, 6] = True
    data = MicroscopeData(measured, positions, wavelength, wavelength / (n * dx), 1.0, bad_pixels=bad)
    # The detector model by hand, on the coherent intensities.
    coherent = np.asarray(jax.jit(lambda m: m())(coherent_model))
    predicted = scales[:, None, None] * coherent + background[None]
    return microscope, data, predicted, measured, ~bad


def test_smooth_and_exact_residuals_match_numpy(case):
    microscope, data, predicted, measured, valid = case
    terms = AmplitudeResidual.of(data, EPS)
    floor = EPS * measured[:, valid].mean()
    smooth = valid * (np.sqrt(predicted + floor) - np.sqrt(measured))
    exact = valid * (np.sqrt(predicted) - np.sqrt(measured))
    model = jax.jit(lambda m: m())(microscope)
    np.testing.assert_allclose(
        np.asarray(model), predicted, rtol=RTOL
    )  # the microscope's detector model is the hand-written one
    np.testing.assert_allclose(np.asarray(terms.smooth(model)), smooth, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(np.asarray(terms.exact(model)), exact, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(np.asarray(terms.frame_sums(model)), np.sum(exact**2, axis=(1, 2)), rtol=RTOL)
    assert float(terms.count) == 4 * valid.sum()
    # Bad pixels contribute nothing, whatever their values.
    assert np.all(np.asarray(terms.smooth(model))[:, ~valid] == 0)


def test_residual_function_is_the_smooth_residual_of_the_trainable_leaves(case):
    microscope, data, predicted, measured, valid = case
    params, static = eqx.partition(microscope, trainable_spec(microscope, ["object", "probe", "background"]))
    residual, model = jax.jit(residual_function(static, params, data, EPS))(to_real(params))
    floor = EPS * measured[:, valid].mean()
    np.testing.assert_allclose(np.asarray(model), predicted, rtol=RTOL)
    np.testing.assert_allclose(
        np.asarray(residual), valid * (np.sqrt(predicted + floor) - np.sqrt(measured)), rtol=RTOL, atol=1e-14
    )


def test_loss_and_reports_match_numpy(case):
    microscope, data, predicted, measured, valid = case
    squared = (np.sqrt(predicted) - np.sqrt(measured))[:, valid] ** 2
    loss = AmplitudeLoss()(jnp.asarray(predicted), data.intensities, data.valid[None])
    np.testing.assert_allclose(float(loss), squared.mean(), rtol=RTOL)
    np.testing.assert_allclose(data_residual(microscope, data), np.sqrt(squared.mean()), rtol=RTOL)
    r = squared.sum() / measured[:, valid].sum()
    np.testing.assert_allclose(r_factor(microscope, data, batch_size=3), r, rtol=RTOL)  # a padded last batch


def test_reports_keep_nan(case):
    microscope, data, *_ = case
    broken = eqx.tree_at(lambda m: m.sample.sample, microscope, microscope.sample.sample.at[5, 5].set(jnp.nan))
    assert np.isnan(data_residual(broken, data))
