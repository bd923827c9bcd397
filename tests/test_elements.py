"""Thin optical elements: analytic transmissions, gradients, adjoints and validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_complex

import janssen.optics as jo


def _wavefront(key, shape=(32, 32), dx=np.array([1.0e-6, 1.25e-6]), modes=2, wavelength=500e-9):
    return jo.OpticalWavefront(random_complex(key, (modes, *shape)), wavelength, dx)


def _elements(shape=(32, 32)):
    surface = jnp.exp(1j * jnp.linspace(0.0, 3.0, shape[0] * shape[1]).reshape(shape)) * 0.8
    return [
        jo.CircularAperture(12e-6, center=np.array([1.3e-6, -0.7e-6])),
        jo.CircularAperture(12e-6, center=np.array([1.3e-6, -0.7e-6]), edge_width=2e-6),
        jo.ThinLens(2e-3),
        jo.OpticalZoom(1.7),
        jo.PhaseScreen(surface),
        jo.ZernikeAberration(jnp.array([0.1, 0.3, -0.2, 0.5, 0.25, -0.1, 0.05]), 10e-6),
    ]


# ---- circular aperture ---------------------------------------------------------------------


@jax.jit
def _aperture_loss(diameter, center, weights, wavefront):
    aperture = jo.CircularAperture(diameter, center=center, edge_width=1.5e-6)
    return jnp.sum(weights * jnp.abs(aperture(wavefront).field[0]) ** 2)


def test_soft_aperture_gradients_match_finite_differences(x64, getkey):
    wave = _wavefront(getkey(), modes=1)
    weights = jax.random.uniform(getkey(), wave.shape, jnp.float64)
    diameter = jnp.array(14e-6)
    center = jnp.array([1.1e-6, -2.3e-6])
    grad_d, grad_c = jax.grad(_aperture_loss, argnums=(0, 1))(diameter, center, weights, wave)
    eps = 1e-9  # metres: 1/1000 of a pixel
    fd_d = (
        _aperture_loss(diameter + eps, center, weights, wave) - _aperture_loss(diameter - eps, center, weights, wave)
    ) / (2 * eps)
    step = jnp.eye(2) * eps
    fd_c = jnp.stack(
        [
            (_aperture_loss(diameter, center + s, weights, wave) - _aperture_loss(diameter, center - s, weights, wave))
            / (2 * eps)
            for s in step
        ]
    )
    assert abs(float(grad_d)) > 1e3  # a soft edge makes the diameter refinable
    assert np.all(np.abs(np.asarray(grad_c)) > 1e3)
    np.testing.assert_allclose(grad_d, fd_d, rtol=1e-5)
    np.testing.assert_allclose(grad_c, fd_c, rtol=1e-5)


def test_soft_aperture_gradient_finite_at_a_pixel_centre(x64):
    # The aperture centre sits exactly on a pixel (r = 0 there): the gradient must stay finite.
    wave = jo.OpticalWavefront(jnp.ones((16, 16), complex), 500e-9, 1e-6)

    def loss(c):
        return jnp.sum(jnp.abs(jo.CircularAperture(6e-6, center=c, edge_width=1e-6)(wave).field) ** 2)

    grad = jax.grad(loss)(jnp.array([0.0, 0.0]))
    assert np.all(np.isfinite(np.asarray(grad)))
    # By symmetry of the grid around a pixel centre the gradient is ~0 (to rounding).
    np.testing.assert_allclose(grad, 0.0, atol=1e-6 * float(jnp.max(jnp.abs(jax.grad(loss)(jnp.array([0.4e-6, 0.0]))))))


def test_hard_aperture_gradient_is_zero(x64):
    wave = jo.OpticalWavefront(jnp.ones((16, 16), complex), 500e-9, 1e-6)

    def loss(d):
        return jnp.sum(jnp.abs(jo.CircularAperture(d)(wave).field) ** 2)

    assert float(jax.grad(loss)(jnp.array(7e-6))) == 0.0


@pytest.mark.parametrize("center", [np.array([0.0, 0.0]), np.array([3.3e-6, -2.1e-6])])
def test_hard_aperture_transmits_disk_area(center):
    dx = np.array([0.5e-6, 0.4e-6])
    wave = jo.OpticalWavefront(jnp.ones((64, 64), complex), 500e-9, dx)
    radius = 9e-6
    power = float(jo.CircularAperture(2 * radius, center=center)(wave).power)
    expected = math.pi * radius**2
    # Tolerance: the pixels of a one-pixel ring along the rim, 2 pi r * max(dx) * pixel area / max(dx).
    ring = 2 * math.pi * radius * max(dx) * 1.0
    assert abs(power - expected) < ring
    # Gauss-circle error is much smaller than the ring in practice: 2% here.
    assert abs(power - expected) / expected < 0.02


def test_soft_aperture_profile(x64):
    wave = jo.OpticalWavefront(jnp.ones((1, 65), complex), 500e-9, 0.1e-6)
    radius, width = 2e-6, 0.4e-6
    t = np.asarray(jo.CircularAperture(2 * radius, edge_width=width).transmission(wave)[0].real)
    x = (np.arange(65) - 32) * 0.1e-6
    expected = 1 / (1 + np.exp(-2 * (radius**2 - x**2) / (radius * width)))
    np.testing.assert_allclose(t, expected, atol=1e-12)
    # 0.5 on the rim; about 0.88 / 0.12 half an edge width inside / outside (exact as w/R -> 0;
    # here w/R = 0.2 gives 0.870 and 0.109).
    np.testing.assert_allclose(t[32 + 20], 0.5, atol=1e-12)
    np.testing.assert_allclose(t[[32 + 18, 32 - 22]], [0.8808, 0.1192], atol=0.015)


# ---- thin lens, zoom -----------------------------------------------------------------------


def test_thin_lens_phase_is_analytic(x64):
    wavelength, f, dx = 633e-9, 5e-3, np.array([2e-6, 3e-6])
    wave = jo.OpticalWavefront(jnp.ones((17, 20), complex), wavelength, dx)
    t = np.asarray(jo.ThinLens(f).transmission(wave))
    x = (np.arange(20) - 10) * dx[0]
    y = (np.arange(17) - 8) * dx[1]
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    np.testing.assert_allclose(t, np.exp(-1j * np.pi * r2 / (wavelength * f)), atol=1e-12)


def test_thin_lens_focuses_a_plane_wave(x64):
    # The lens phase's local spatial frequency is -r / (lambda f): a ray at height r is bent
    # towards the axis with angle r / f, i.e. to a focus at distance f.
    wavelength, f, dx = 500e-9, 1e-3, 1e-6
    wave = jo.OpticalWavefront(jnp.ones((1, 64), complex), wavelength, dx)
    phase = np.unwrap(np.angle(np.asarray(jo.ThinLens(f)(wave).field[0])))
    x = (np.arange(64) - 32) * dx
    local_freq = np.gradient(phase, x) / (2 * np.pi)
    np.testing.assert_allclose(local_freq[8:-8], -x[8:-8] / (wavelength * f), rtol=1e-3, atol=1.0)


def test_zoom_scales_pitch_and_conserves_power(getkey):
    wave = _wavefront(getkey())
    zoom = jo.OpticalZoom(2.5)
    out = zoom(wave)
    np.testing.assert_array_equal(np.asarray(out.dx), np.asarray(wave.dx * jnp.float32(2.5)))
    np.testing.assert_allclose(out.power, wave.power, rtol=1e-6)
    np.testing.assert_allclose(out.field, wave.field / 2.5, rtol=1e-6)
    # Unitary in the physical inner product: the adjoint is the inverse.
    back = zoom.adjoint(out)
    np.testing.assert_allclose(back.dx, wave.dx, rtol=1e-7)
    np.testing.assert_allclose(back.field, wave.field, rtol=1e-6)


# ---- phase screen --------------------------------------------------------------------------


def test_phase_screen_multiplies_pixelwise(getkey):
    wave = _wavefront(getkey(), shape=(8, 12))
    surface = random_complex(getkey(), (8, 12))
    out = jo.PhaseScreen(surface)(wave)
    np.testing.assert_allclose(out.field, wave.field * surface[None], rtol=1e-6)


def test_phase_screen_shape_mismatch_raises(getkey):
    wave = _wavefront(getkey(), shape=(8, 12))
    with pytest.raises(ValueError, match=r"`surface` has shape \(12, 8\).*\(8, 12\)"):
        jo.PhaseScreen(jnp.ones((12, 8), complex))(wave)


# ---- Zernike -------------------------------------------------------------------------------


def _unit_disk_wavefront(n=256):
    # pupil_radius 1 m and pitch 2/n: the disk spans the grid.
    return jo.OpticalWavefront(jnp.ones((n, n), complex), 1.0, 2.0 / n)


def test_zernike_orthonormal_on_unit_disk(x64):
    n, nterms = 256, 15
    wave = _unit_disk_wavefront(n)
    x = (np.arange(n) - n // 2) * 2.0 / n
    disk = (x[None, :] ** 2 + x[:, None] ** 2) <= 1.0
    basis = []
    for j in range(nterms):
        coefficients = jnp.zeros(nterms).at[j].set(1.0)
        basis.append(np.asarray(jo.ZernikeAberration(coefficients, 1.0).phase(wave))[disk])
    basis = np.stack(basis)
    gram = basis @ basis.T * (2.0 / n) ** 2
    # Discretisation error of the pixelated disk: ~1% of pi for the 15 lowest terms at 256 px.
    np.testing.assert_allclose(gram, np.pi * np.eye(nterms), atol=0.02 * np.pi)


def test_zernike_explicit_polynomials(x64):
    wave = _unit_disk_wavefront(64)
    x = (np.arange(64) - 32) * 2.0 / 64
    X, Y = np.meshgrid(x, x)
    rho2 = X**2 + Y**2
    expected = {
        1: np.ones_like(X),
        2: 2 * X,  # tilt: 2 rho cos(theta)
        3: 2 * Y,
        4: np.sqrt(3) * (2 * rho2 - 1),  # defocus
        6: np.sqrt(6) * (X**2 - Y**2),  # astigmatism: sqrt(6) rho^2 cos(2 theta)
        8: np.sqrt(8) * (3 * rho2 - 2) * X,  # coma: sqrt(8) (3 rho^3 - 2 rho) cos(theta)
        11: np.sqrt(5) * (6 * rho2**2 - 6 * rho2 + 1),  # spherical
    }
    for j, z in expected.items():
        coefficients = jnp.zeros(j).at[j - 1].set(1.0)
        got = np.asarray(jo.ZernikeAberration(coefficients, 1.0).phase(wave))
        np.testing.assert_allclose(got, z, atol=1e-12, err_msg=f"Z_{j}")


def test_zernike_transmission_is_pure_phase_with_pupil_scaling(x64):
    wave = jo.OpticalWavefront(jnp.ones((16, 16), complex), 500e-9, 1e-6)
    element = jo.ZernikeAberration(jnp.array([0.0, 0.0, 0.0, 0.7]), 5e-6)
    t = np.asarray(element.transmission(wave))
    np.testing.assert_allclose(np.abs(t), 1.0, atol=1e-12)  # no zero outside the pupil
    x = (np.arange(16) - 8) * 1e-6
    rho2 = (x[None, :] ** 2 + x[:, None] ** 2) / (5e-6) ** 2
    np.testing.assert_allclose(t, np.exp(1j * 0.7 * np.sqrt(3) * (2 * rho2 - 1)), atol=1e-12)


# ---- every element -------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(6))
def test_adjoint_identity(x64, getkey, index):
    element = _elements()[index]
    x = _wavefront(getkey())
    y_field = random_complex(getkey(), x.field.shape)
    ax = element(x)
    y = ax.replace_field(y_field)
    aty = element.adjoint(y)
    # Physical inner product of each plane: sum(conj(u) v) dx_x dx_y.
    lhs = jnp.vdot(ax.field, y.field) * ax.dx[0] * ax.dx[1]
    rhs = jnp.vdot(x.field, aty.field) * aty.dx[0] * aty.dx[1]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)
    np.testing.assert_allclose(aty.dx, x.dx, rtol=1e-14)


@pytest.mark.parametrize("index", range(6))
def test_elements_broadcast_over_modes_and_jit(getkey, index):
    element = _elements()[index]
    wave = _wavefront(getkey(), modes=3)
    out = jax.jit(lambda e, w: e(w))(element, wave)
    t = element.transmission(wave)
    for m in range(3):
        np.testing.assert_allclose(out.field[m], wave.field[m] * t, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: jo.CircularAperture(0.0), "diameter"),
        (lambda: jo.CircularAperture(-1e-6), "diameter"),
        (lambda: jo.CircularAperture(1e-6, edge_width=0.0), "edge_width"),
        (lambda: jo.CircularAperture(1e-6, edge_width=-1e-7), "edge_width"),
        (lambda: jo.CircularAperture(1e-6, center=np.array([np.nan, 0.0])), "center"),
        (lambda: jo.OpticalZoom(0.0), "zoom_factor"),
        (lambda: jo.OpticalZoom(-2.0), "zoom_factor"),
        (lambda: jo.ThinLens(0.0), "focal_length"),
        (lambda: jo.ZernikeAberration(jnp.zeros(3), 0.0), "pupil_radius"),
        (lambda: jo.ZernikeAberration(jnp.zeros(0), 1.0), "coefficients"),
        (lambda: jo.ZernikeAberration(jnp.array([0.0, np.inf]), 1.0), "coefficients"),
        (lambda: jo.PhaseScreen(jnp.ones((4, 4), complex).at[1, 2].set(np.nan)), "surface"),
    ],
)
def test_validation_names_the_argument(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()
