"""Losses: hand-computed values, the bad-pixel mask, gradients, names, the seed factory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janssen.invert import (
    AmplitudeLoss,
    IntensityLoss,
    MAELoss,
    MSELoss,
    PoissonLoss,
    RMSELoss,
    create_loss_function,
    loss_from_name,
)

P = jnp.array([[1.0, 4.0], [9.0, 16.0]])
M = jnp.array([[4.0, 4.0], [1.0, 25.0]])
VALID = jnp.array([[1.0, 1.0], [1.0, 0.0]])  # the pixel (1, 1) is bad


def _poisson(p, n, floor=1e-2):  # PoissonLoss's default floor
    lam = p + floor
    return lam - n + n * np.log(n / lam)


# Hand-computed over the three valid pixels (p, n) = (1, 4), (4, 4), (9, 1).
EXPECTED = [
    (AmplitudeLoss(), (1.0 + 0.0 + 4.0) / 3),  # sqrt: (1-2)^2, (2-2)^2, (3-1)^2
    (IntensityLoss(), (9.0 + 0.0 + 64.0) / 3),
    (MAELoss(), (3.0 + 0.0 + 8.0) / 3),
    (MSELoss(), (9.0 + 0.0 + 64.0) / 3),
    (RMSELoss(), np.sqrt((9.0 + 0.0 + 64.0) / 3)),
    (PoissonLoss(), (_poisson(1.0, 4.0) + _poisson(4.0, 4.0) + _poisson(9.0, 1.0)) / 3),
]
LOSSES = [loss for loss, _ in EXPECTED]


@pytest.mark.parametrize("loss, expected", EXPECTED, ids=lambda v: type(v).__name__)
def test_hand_computed_values(loss, expected):
    np.testing.assert_allclose(float(loss(P, M, VALID)), expected, rtol=1e-6)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda v: type(v).__name__)
def test_masked_pixel_changes_nothing(loss):
    before = float(loss(P, M, VALID))
    assert float(loss(P.at[1, 1].set(1e4), M.at[1, 1].set(3.0), VALID)) == before
    # ...whereas a valid pixel does change the loss.
    assert float(loss(P.at[0, 1].set(7.0), M, VALID)) != before


@pytest.mark.parametrize("loss", LOSSES, ids=lambda v: type(v).__name__)
def test_mask_broadcasts_over_frames_and_none_means_all(loss):
    second = P * 1.5 + 0.5
    frames_p, frames_m = jnp.stack([P, second]), jnp.stack([M, M])
    # Two frames with the same number of valid pixels: the mean of the per-frame losses
    # (for RMSE, the root of the mean of the squares).
    if isinstance(loss, RMSELoss):
        expected = np.sqrt((float(loss(P, M, VALID)) ** 2 + float(loss(second, M, VALID)) ** 2) / 2)
    else:
        expected = (float(loss(P, M, VALID)) + float(loss(second, M, VALID))) / 2
    np.testing.assert_allclose(float(loss(frames_p, frames_m, VALID)), expected, rtol=1e-6)
    np.testing.assert_allclose(float(loss(P, M)), float(loss(P, M, jnp.ones((2, 2)))), rtol=1e-7)


def test_poisson_gradient_vanishes_at_the_data(x64):
    loss = PoissonLoss()
    measured = jnp.array([[3.0, 10.0], [0.5, 40.0]])
    direction = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    h = 1e-4

    def along(p):
        return (float(loss(p + h * direction, measured)) - float(loss(p - h * direction, measured))) / (2 * h)

    # At the data the slope is floor / (n + floor) per pixel (the floor moves the minimum).
    floor = loss.floor
    at_data = float(jnp.sum(direction * floor / (measured + floor))) / 4
    np.testing.assert_allclose(along(measured), at_data, rtol=1e-5)
    assert abs(at_data) < 0.02
    # Away from it the slope is (1 - n / (p + floor)) . direction / 4 (about 0.5 * sum(direction) / 4
    # at p = 2n), and autodiff agrees.
    away = float(jnp.sum(direction * (1 - measured / (2 * measured + floor)))) / 4
    np.testing.assert_allclose(along(2 * measured), away, rtol=1e-6)
    autodiff = float(jnp.sum(jax.grad(loss)(2 * measured, measured) * direction))
    np.testing.assert_allclose(autodiff, along(2 * measured), rtol=1e-6)


@pytest.mark.parametrize("loss", [AmplitudeLoss(), RMSELoss(), MAELoss()], ids=lambda v: type(v).__name__)
def test_gradients_finite_at_dark_pixels_and_perfect_fit(loss):
    field = jnp.array([[0.0 + 0.0j, 1.0 + 1.0j]])

    def of_field(f):
        return loss(f.real**2 + f.imag**2, jnp.array([[0.0, 2.0]]))

    grad = jax.grad(of_field)(field)
    assert bool(jnp.all(jnp.isfinite(grad.real) & jnp.isfinite(grad.imag))), grad
    assert float(of_field(field)) == 0.0


def test_poisson_floor_validated():
    with pytest.raises(ValueError, match="floor"):
        PoissonLoss(floor=0.0)


@pytest.mark.parametrize(
    "name, cls",
    [
        ("amplitude", AmplitudeLoss),
        ("intensity", IntensityLoss),
        ("poisson", PoissonLoss),
        ("mae", MAELoss),
        ("mse", MSELoss),
        ("RMSE", RMSELoss),
    ],
)
def test_loss_from_name(name, cls):
    assert type(loss_from_name(name)) is cls


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"one of \['amplitude', 'intensity', 'mae', 'mse', 'poisson', 'rmse'\]"):
        loss_from_name("hubber")


def test_create_loss_function():
    data = jnp.array([1.0, 2.0, 5.0])
    forward = lambda x, *, scale: scale * x**2  # noqa: E731
    x = jnp.array([1.0, 1.0, 2.0])
    # predictions (2, 2, 8) with scale 2: errors (1, 0, 3).
    mae = create_loss_function(forward, data)
    np.testing.assert_allclose(float(mae(x, scale=2.0)), 4.0 / 3, rtol=1e-6)
    mse = create_loss_function(forward, data, "mse")
    np.testing.assert_allclose(float(mse(x, scale=2.0)), 10.0 / 3, rtol=1e-6)
    rmse = create_loss_function(forward, data, loss_type="rmse")
    np.testing.assert_allclose(float(rmse(x, scale=2.0)), np.sqrt(10.0 / 3), rtol=1e-6)
    # Differentiable: d/dscale of MSE = mean(2 (s x^2 - d) x^2) = 2 (1 + 0 + 12) / 3.
    np.testing.assert_allclose(float(jax.grad(lambda s: mse(x, scale=s))(2.0)), 26.0 / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="loss"):
        create_loss_function(forward, data, "l7")
