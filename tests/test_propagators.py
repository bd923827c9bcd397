"""Propagators: energy, Gaussian-beam and Airy physics, adjoints, gradients, validation.

The adjoints are defined for the physical inner product `<u, v> = sum conj(u) v dx dy`
(see `AbstractPropagator`). Propagators are called through one jitted helper so that a
test compiles once per propagator kind and grid (eager calls compile every primitive).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janssen.optics import (
    AbstractPropagator,
    AngularSpectrum,
    Fraunhofer,
    Fresnel,
    OpticalWavefront,
    ScaledFraunhofer,
)

WAVELENGTH = 5e-7
SHAPE = (18, 22)  # the grid of the random-field tests
PLAIN_DX = np.array([1e-6, 1.5e-6])
# No evanescent frequency for WAVELENGTH in vacuum: the corner frequency
# sqrt(1/(4 dx_x**2) + 1/(4 dx_y**2)) = 0.8e6 / m < 1 / WAVELENGTH = 2e6 / m.
UNITARY_DX = np.array([1e-6, 0.8e-6])
# Evanescent frequencies: 1 / (2 * 0.3 * WAVELENGTH) > 1 / WAVELENGTH.
EVANESCENT_DX = np.array([0.3, 0.35]) * WAVELENGTH

propagate = eqx.filter_jit(lambda p, w: p(w))
back_propagate = eqx.filter_jit(lambda p, w, **kwargs: p.adjoint(w, **kwargs))


# ---- measurements in numpy ---------------------------------------------------------------


def inner(a: OpticalWavefront, b: OpticalWavefront) -> complex:
    """The physical inner product `sum conj(a) b dx dy`."""
    return complex(np.sum(np.conj(np.asarray(a.field)) * np.asarray(b.field)) * np.prod(np.asarray(a.dx)))


def power(wf: OpticalWavefront) -> float:
    return inner(wf, wf).real


@pytest.fixture
def rng():
    # numpy's generator: jax.random would compile its sampler for every shape and dtype.
    return np.random.default_rng(0)


def random_complex(rng, shape) -> jax.Array:
    return jnp.asarray(rng.normal(size=shape) + 1j * rng.normal(size=shape))


def random_wavefront(rng, shape, dx, wavelength=WAVELENGTH):
    return OpticalWavefront(random_complex(rng, shape), wavelength, np.asarray(dx))


def gaussian_wavefront(shape, dx, sigma_px, *, tilt_px=(0.0, 0.0)):
    """A centred Gaussian amplitude `exp(-r**2 / (2 sigma**2))` (pixels) with an optional tilt."""
    y = np.arange(shape[0]) - shape[0] // 2
    x = np.arange(shape[1]) - shape[1] // 2
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    tilt = np.exp(2j * np.pi * (tilt_px[0] * x[None, :] / shape[1] + tilt_px[1] * y[:, None] / shape[0]))
    return OpticalWavefront(jnp.asarray(np.exp(-r2 / (2 * sigma_px**2)) * tilt), WAVELENGTH, np.asarray(dx))


def second_moment_width(wf: OpticalWavefront) -> float:
    """`w = sqrt(2 <r**2>)` of the intensity: the 1/e**2 radius for a Gaussian beam."""
    h, w = wf.shape
    x = (np.arange(w) - w // 2) * float(wf.dx[0])
    y = (np.arange(h) - h // 2) * float(wf.dx[1])
    intensity = np.abs(np.asarray(wf.field)) ** 2
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    return float(np.sqrt(2 * np.sum(r2 * intensity) / np.sum(intensity)))


def assert_fields_close(actual: OpticalWavefront, expected: OpticalWavefront, rel: float):
    """Fields equal to `rel` times the largest expected magnitude."""
    scale = np.max(np.abs(np.asarray(expected.field)))
    np.testing.assert_allclose(np.asarray(actual.field), np.asarray(expected.field), rtol=0, atol=rel * scale)


# ---- energy -----------------------------------------------------------------------------


def test_fraunhofer_power_and_pitch(x64, rng):
    z = 0.05
    wf = random_wavefront(rng, (2, *SHAPE), PLAIN_DX)
    out = propagate(Fraunhofer(z), wf)
    # Output pitch wavelength z / (N dx), x and y separately.
    expected_dx = [WAVELENGTH * z / (SHAPE[1] * PLAIN_DX[0]), WAVELENGTH * z / (SHAPE[0] * PLAIN_DX[1])]
    np.testing.assert_allclose(np.asarray(out.dx), expected_dx, rtol=1e-14)
    np.testing.assert_allclose(power(out), power(wf), rtol=1e-12)
    np.testing.assert_allclose(float(out.z_position), z, rtol=1e-14)


# Propagators are built inside the tests (factories), so that x64 tests get float64 leaves.
SAME_GRID = {
    "fresnel": lambda: Fresnel(2e-5),
    "fresnel-back": lambda: Fresnel(-3e-5),
    "angular-spectrum": lambda: AngularSpectrum(2e-5),
    "angular-spectrum-n1.4-back": lambda: AngularSpectrum(-1e-5, refractive_index=1.4),
}


@pytest.mark.parametrize("make", SAME_GRID.values(), ids=SAME_GRID.keys())
def test_same_grid_power(x64, rng, make):
    wf = random_wavefront(rng, (2, *SHAPE), UNITARY_DX)
    out = propagate(make(), wf)
    np.testing.assert_allclose(power(out), power(wf), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(out.dx), np.asarray(wf.dx))


def test_angular_spectrum_evanescent_power(x64, rng):
    # Ground truth from numpy: each plane wave keeps its power, or loses it at the
    # evanescent rate exp(-4 pi z sqrt(f**2 - 1/lambda**2)).
    z = 0.2 * WAVELENGTH
    wf = random_wavefront(rng, SHAPE, EVANESCENT_DX)
    spectrum = np.abs(np.fft.fft2(np.asarray(wf.field), norm="ortho")) ** 2
    fy = np.fft.fftfreq(SHAPE[0], EVANESCENT_DX[1])
    fx = np.fft.fftfreq(SHAPE[1], EVANESCENT_DX[0])
    excess = (fx[None, :] ** 2 + fy[:, None] ** 2) * WAVELENGTH**2 - 1
    # No grid frequency sits on the circle f = 1/lambda, where the square root would
    # amplify rounding; some lie outside it.
    assert np.min(np.abs(excess)) > 1e-3 and np.any(excess > 0)
    kept = np.where(excess > 0, np.exp(-4 * np.pi * z * np.sqrt(np.maximum(excess, 0)) / WAVELENGTH), 1.0)
    expected = np.sum(spectrum * kept) * np.prod(EVANESCENT_DX)
    out = propagate(AngularSpectrum(z), wf)
    np.testing.assert_allclose(power(out), expected, rtol=1e-12)
    assert power(out) < 0.99 * power(wf)


def test_scaled_fraunhofer_power(x64):
    # A smooth Gaussian (spectrum width ~1.3 Fraunhofer pixels, moved off-centre by a
    # tilt) on an output grid that covers the spectrum and samples it finer than the FFT.
    # The Gaussian's truncation at the grid edge (amplitude 3e-4) spreads ~1e-8 of the
    # power over all frequencies, some outside the window: hence rtol 1e-7.
    shape, dx, z = (32, 32), np.array([1e-6, 1.2e-6]), 0.05
    wf = gaussian_wavefront(shape, dx, 4.0, tilt_px=(2.0, -3.0))
    fraunhofer_dx = WAVELENGTH * z / (32 * dx)
    out = propagate(ScaledFraunhofer(z, fraunhofer_dx * np.array([0.45, 0.6]), (40, 36)), wf)
    assert out.shape == (40, 36)
    np.testing.assert_allclose(power(out), power(wf), rtol=1e-7)


# ---- analytic physics ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, n",
    [(lambda z, n: Fresnel(z), 1.0), (lambda z, n: AngularSpectrum(z), 1.0), (AngularSpectrum, 1.5)],
    ids=["fresnel", "angular-spectrum", "angular-spectrum-n1.5"],
)
def test_gaussian_beam_rayleigh_range(x64, make, n):
    # u = exp(-r**2 / w0**2): w(z_R) = sqrt(2) w0 with z_R = pi w0**2 n / wavelength.
    dx, w0 = WAVELENGTH, 8 * WAVELENGTH
    y = np.arange(64) - 32
    r2 = (y[None, :] ** 2 + y[:, None] ** 2) * dx**2
    wf = OpticalWavefront(jnp.asarray(np.exp(-r2 / w0**2) + 0j), WAVELENGTH, dx)
    np.testing.assert_allclose(second_moment_width(wf), w0, rtol=1e-6)
    rayleigh = np.pi * w0**2 * n / WAVELENGTH
    out = propagate(make(rayleigh, n), wf)
    np.testing.assert_allclose(second_moment_width(out), np.sqrt(2) * w0, rtol=0.01)


def antialiased_disc(shape, dx, diameter, oversample=8):
    """A centred disc, each pixel's value its covered fraction (sampled on a sub-grid)."""
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    x = ((np.arange(shape[1]) - shape[1] // 2)[:, None] + sub[None, :]).ravel() * dx[0]
    y = ((np.arange(shape[0]) - shape[0] // 2)[:, None] + sub[None, :]).ravel() * dx[1]
    inside = (x[None, :] ** 2 + y[:, None] ** 2 <= (diameter / 2) ** 2).astype(float)
    return inside.reshape(shape[0], oversample, shape[1], oversample).mean(axis=(1, 3))


def first_zero(profile: np.ndarray, pitch: float) -> float:
    """Radius of the first sign change of a real profile sampled from the centre out."""
    k = int(np.argmax(profile < 0))
    return pitch * (k - 1 + profile[k - 1] / (profile[k - 1] - profile[k]))


def test_fraunhofer_airy_first_dark_ring(x64):
    # Non-square grid with anisotropic pixels; the disc is round in metres.
    shape, dx, z, diameter = (48, 64), np.array([1e-6, 1.25e-6]), 0.01, 8e-6
    wf = OpticalWavefront(jnp.asarray(antialiased_disc(shape, dx, diameter) + 0j), WAVELENGTH, dx)
    out = propagate(Fraunhofer(z), wf)
    ring = 1.22 * WAVELENGTH * z / diameter
    field = np.asarray(out.field)
    out_dx = np.asarray(out.dx)
    assert np.max(np.abs(field.imag)) < 1e-12 * np.max(np.abs(field))  # centred and symmetric
    cy, cx = shape[0] // 2, shape[1] // 2
    along_x = first_zero(field[cy, cx:].real, out_dx[0])
    along_y = first_zero(field[cy:, cx].real, out_dx[1])
    np.testing.assert_allclose([along_x, along_y], [ring, ring], rtol=0.02)
    # The azimuthally averaged intensity has its minimum within one bin of the ring.
    bin_width = np.max(out_dx)
    x = (np.arange(shape[1]) - cx) * out_dx[0]
    y = (np.arange(shape[0]) - cy) * out_dx[1]
    bins = np.round(np.sqrt(x[None, :] ** 2 + y[:, None] ** 2) / bin_width).astype(int).ravel()
    profile = np.bincount(bins, np.abs(field.ravel()) ** 2) / np.bincount(bins)
    lo, hi = int(0.5 * ring / bin_width), int(1.5 * ring / bin_width)
    r_min = (lo + np.argmin(profile[lo:hi])) * bin_width
    assert abs(r_min - ring) <= bin_width


@pytest.mark.parametrize("quadratic_phase", [False, True])
def test_scaled_fraunhofer_equals_fraunhofer(x64, rng, quadratic_phase):
    wf = random_wavefront(rng, (2, *SHAPE), PLAIN_DX)
    z = 0.03
    reference = propagate(Fraunhofer(z, quadratic_phase=quadratic_phase), wf)
    scaled = ScaledFraunhofer(z, reference.dx, quadratic_phase=quadratic_phase)
    out = propagate(scaled, wf)
    assert_fields_close(out, reference, 1e-10)
    np.testing.assert_allclose(np.asarray(out.dx), np.asarray(reference.dx), rtol=1e-14)
    # ... and its adjoint (default input grid) is Fraunhofer's inverse.
    back = back_propagate(scaled, out)
    assert_fields_close(back, wf, 1e-10)
    np.testing.assert_allclose(np.asarray(back.dx), np.asarray(wf.dx), rtol=1e-12)


@pytest.mark.parametrize("out_shape", [(30, 33), (31, 28)])
def test_scaled_fraunhofer_is_centred(x64, out_shape):
    # A real, centred, point-symmetric input (odd grid) has a real point-symmetric far
    # field whose peak is the zero frequency, on pixel (H // 2, W // 2).
    wf = gaussian_wavefront((25, 27), np.array([1e-6, 1.3e-6]), 3.0)
    out = propagate(ScaledFraunhofer(0.02, np.array([7.1e-4, 5.3e-4]), out_shape), wf)
    field = np.asarray(out.field)
    assert np.unravel_index(np.argmax(np.abs(field)), out_shape) == (out_shape[0] // 2, out_shape[1] // 2)
    # Drop the unpaired first row/column of an even axis, then compare with the half turn.
    sym = field[1 - out_shape[0] % 2 :, 1 - out_shape[1] % 2 :]
    np.testing.assert_allclose(sym, sym[::-1, ::-1], rtol=0, atol=1e-12 * np.max(np.abs(sym)))


# ---- adjoints ----------------------------------------------------------------------------


UNITARY = {
    "fraunhofer": (lambda wf: Fraunhofer(0.04), PLAIN_DX),
    "fraunhofer-phase": (lambda wf: Fraunhofer(0.04, quadratic_phase=True), PLAIN_DX),
    "fresnel": (lambda wf: Fresnel(3e-5), UNITARY_DX),
    "angular-spectrum": (lambda wf: AngularSpectrum(3e-5, refractive_index=1.3), UNITARY_DX),
    # On Fraunhofer's own output pitch the scaled propagator is unitary too.
    "scaled-fraunhofer-fft-pitch": (lambda wf: ScaledFraunhofer(0.04, Fraunhofer(0.04).output_dx(wf)), PLAIN_DX),
}


@pytest.mark.parametrize("make, dx", UNITARY.values(), ids=UNITARY.keys())
def test_forward_then_adjoint_is_identity(x64, rng, make, dx):
    wf = random_wavefront(rng, (2, *SHAPE), dx)
    propagator = make(wf)
    back = back_propagate(propagator, propagate(propagator, wf))
    assert_fields_close(back, wf, 1e-10)
    np.testing.assert_allclose(np.asarray(back.dx), np.asarray(wf.dx), rtol=1e-12)
    np.testing.assert_allclose(float(back.z_position), 0.0, atol=1e-15)


ADJOINT_CASES = {
    "fraunhofer": (lambda: Fraunhofer(0.04), PLAIN_DX),
    "fraunhofer-phase": (lambda: Fraunhofer(0.04, quadratic_phase=True), PLAIN_DX),
    "fresnel": (lambda: Fresnel(3e-5), PLAIN_DX),
    "fresnel-back": (lambda: Fresnel(-2e-5), PLAIN_DX),
    "angular-spectrum-n1.3": (lambda: AngularSpectrum(3e-5, refractive_index=1.3), PLAIN_DX),
    "angular-spectrum-evanescent": (lambda: AngularSpectrum(0.2 * WAVELENGTH), EVANESCENT_DX),
    "angular-spectrum-evanescent-back": (lambda: AngularSpectrum(-0.2 * WAVELENGTH), EVANESCENT_DX),
    "scaled-fraunhofer": (lambda: ScaledFraunhofer(0.04, np.array([9e-4, 1.3e-3]), (13, 17)), PLAIN_DX),
    "scaled-fraunhofer-phase": (lambda: ScaledFraunhofer(0.04, 2e-3, (20, 15), quadratic_phase=True), PLAIN_DX),
}


@pytest.mark.parametrize("make, dx", ADJOINT_CASES.values(), ids=ADJOINT_CASES.keys())
def test_adjoint_identity(x64, rng, make, dx):
    # <A x, y> = <x, A* y> in the physical inner product of each plane.
    propagator = make()
    x = random_wavefront(rng, (2, *SHAPE), dx)
    ax = propagate(propagator, x)
    y = random_wavefront(rng, ax.field.shape, ax.dx)
    if isinstance(propagator, ScaledFraunhofer):
        ahy = back_propagate(propagator, y, input_dx=x.dx, input_shape=SHAPE)
    else:
        ahy = back_propagate(propagator, y)
    assert ahy.field.shape == x.field.shape
    np.testing.assert_allclose(np.asarray(ahy.dx), np.asarray(x.dx), rtol=1e-12)
    lhs, rhs = inner(ax, y), inner(x, ahy)
    assert abs(lhs - rhs) <= 1e-10 * np.sqrt(power(ax) * power(y))


# ---- gradients ---------------------------------------------------------------------------


def central_difference(f, x, h: float) -> float:
    return (float(f(x + h)) - float(f(x - h))) / (2 * h)


@pytest.mark.parametrize(
    "make, dx, z",
    [
        (Fresnel, UNITARY_DX, 3e-5),
        (AngularSpectrum, UNITARY_DX, 3e-5),
        (AngularSpectrum, EVANESCENT_DX, 0.15 * WAVELENGTH),
        (AngularSpectrum, EVANESCENT_DX, -0.15 * WAVELENGTH),
    ],
    ids=["fresnel", "angular-spectrum", "angular-spectrum-evanescent", "angular-spectrum-evanescent-back"],
)
def test_distance_gradient_matches_finite_difference(x64, rng, make, dx, z):
    wf = random_wavefront(rng, SHAPE, dx)
    weights = jnp.asarray(rng.uniform(size=SHAPE))

    @jax.jit
    def loss(distance):
        return jnp.sum(weights * jnp.abs(make(distance)(wf).field) ** 2)

    grad = float(jax.jit(jax.grad(loss))(jnp.asarray(z)))
    fd = central_difference(loss, z, 1e-5 * abs(z))
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_angular_spectrum_evanescent_power_gradient(x64, rng):
    # On the evanescent grid, power depends on distance only through the decay.
    wf = random_wavefront(rng, SHAPE, EVANESCENT_DX)
    z = 0.1 * WAVELENGTH

    @jax.jit
    def loss(distance):
        return jnp.sum(jnp.abs(AngularSpectrum(distance)(wf).field) ** 2)

    grad = float(jax.jit(jax.grad(loss))(jnp.asarray(z)))
    assert np.isfinite(grad) and grad < 0
    np.testing.assert_allclose(grad, central_difference(loss, z, 1e-4 * z), rtol=1e-6)


def test_scaled_fraunhofer_output_dx_gradient(x64, rng):
    wf = gaussian_wavefront((20, 24), np.array([1e-6, 1.2e-6]), 3.0, tilt_px=(1.5, -2.0))
    weights = jnp.asarray(rng.uniform(size=(14, 16)))
    z, odx = 0.02, np.array([3.1e-4, 3.7e-4])

    @jax.jit
    def loss(output_dx):
        return jnp.sum(weights * jnp.abs(ScaledFraunhofer(z, output_dx, (14, 16))(wf).field) ** 2)

    grad = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(odx)))
    for axis in range(2):
        step = np.zeros(2)
        step[axis] = 1e-6 * odx[axis]
        fd = (float(loss(odx + step)) - float(loss(odx - step))) / (2 * step[axis])
        np.testing.assert_allclose(grad[axis], fd, rtol=1e-6)
    assert np.all(grad != 0)


def test_fraunhofer_distance_gradient(x64, rng):
    # |U|**2 scales as 1 / z**2 on a pitch proportional to z: dL/dz = -2 L / z for a
    # loss on fixed pixels.
    wf = random_wavefront(rng, SHAPE, PLAIN_DX)
    weights = jnp.asarray(rng.uniform(size=SHAPE))
    z = 0.07

    @jax.jit
    def loss(distance):
        return jnp.sum(weights * jnp.abs(Fraunhofer(distance)(wf).field) ** 2)

    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(z))
    np.testing.assert_allclose(float(grad), -2 * float(value) / z, rtol=1e-12)


FIELD_CASES = {
    "fraunhofer-phase": (lambda: Fraunhofer(0.04, quadratic_phase=True), PLAIN_DX),
    "scaled-fraunhofer": (lambda: ScaledFraunhofer(0.04, 1.1e-3, (9, 11)), PLAIN_DX),
    "fresnel": (lambda: Fresnel(3e-5), PLAIN_DX),
    "angular-spectrum-evanescent": (lambda: AngularSpectrum(0.2 * WAVELENGTH), EVANESCENT_DX),
}


@pytest.mark.parametrize("make, dx", FIELD_CASES.values(), ids=FIELD_CASES.keys())
def test_field_derivative_matches_finite_difference(x64, rng, make, dx):
    # Directional derivative of a nonlinear real loss along a random complex direction.
    propagator = make()
    wf = random_wavefront(rng, SHAPE, dx)
    direction = random_complex(rng, SHAPE)

    @jax.jit
    def loss(t):
        out = propagator(wf.replace_field(wf.field + t * direction))
        return jnp.sum(jnp.abs(out.field) ** 2) * jnp.sum(jnp.abs(out.field))

    derivative = float(jax.jit(jax.grad(loss))(jnp.asarray(0.0)))
    np.testing.assert_allclose(derivative, central_difference(loss, 0.0, 1e-6), rtol=1e-6)


# ---- jit, batches, validation ------------------------------------------------------------


ALL_PROPAGATORS = {
    "fraunhofer": lambda: Fraunhofer(0.04),
    "scaled-fraunhofer": lambda: ScaledFraunhofer(0.04, 1.1e-3, (9, 11)),
    "fresnel": lambda: Fresnel(3e-5),
    "angular-spectrum": lambda: AngularSpectrum(2e-6),
}


@pytest.mark.parametrize("make", ALL_PROPAGATORS.values(), ids=ALL_PROPAGATORS.keys())
def test_jit_and_batches(rng, make):
    # float32 throughout (the default precision).
    propagator = make()
    assert isinstance(propagator, AbstractPropagator)
    wf = random_wavefront(rng, (2, 3, *SHAPE), PLAIN_DX)
    out = propagator(wf)
    assert out.field.dtype == jnp.complex64
    assert_fields_close(propagate(propagator, wf), out, 1e-5)
    back = propagator.adjoint(out)
    assert_fields_close(back_propagate(propagator, out), back, 1e-5)
    # Leading axes are carried along: each slice propagates on its own.
    single = propagate(propagator, wf.replace_field(wf.field[1, 2]))
    assert_fields_close(single, out.replace_field(out.field[1, 2]), 1e-5)


def test_new_distance_does_not_recompile(rng):
    wf = random_wavefront(rng, SHAPE, PLAIN_DX)
    traces = []

    @eqx.filter_jit
    def run(p, w):
        traces.append(None)
        return p(w)

    run(Fresnel(1e-5), wf)
    second = run(Fresnel(2e-5), wf)
    assert len(traces) == 1
    assert_fields_close(second, propagate(Fresnel(2e-5), wf), 1e-5)


def test_zero_distance_is_identity(rng):
    wf = random_wavefront(rng, SHAPE, EVANESCENT_DX)
    for propagator in (Fresnel(0.0), AngularSpectrum(0.0)):
        assert_fields_close(propagate(propagator, wf), wf, 1e-5)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: Fraunhofer(0.0), "distance"),
        (lambda: Fraunhofer(-0.1), "distance"),
        (lambda: Fraunhofer(float("nan")), "distance"),
        (lambda: ScaledFraunhofer(0.0, 1e-3), "distance"),
        (lambda: ScaledFraunhofer(-1.0, 1e-3), "distance"),
        (lambda: ScaledFraunhofer(0.1, -1e-3), "output_dx"),
        (lambda: ScaledFraunhofer(0.1, np.array([1e-3, 0.0])), "output_dx"),
        (lambda: ScaledFraunhofer(0.1, float("nan")), "output_dx"),
        (lambda: ScaledFraunhofer(0.1, 1e-3, (0, 4)), "output_shape"),
        (lambda: Fresnel(float("nan")), "distance"),
        (lambda: Fresnel(float("inf")), "distance"),
        (lambda: AngularSpectrum(float("nan")), "distance"),
        (lambda: AngularSpectrum(1e-3, refractive_index=0.0), "refractive_index"),
    ],
)
def test_validation(build, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        build()


def test_adjoint_input_grid_validated():
    wf = OpticalWavefront(jnp.ones((4, 4), jnp.complex64), WAVELENGTH, 1e-3)
    with pytest.raises(ValueError, match="`input_dx`"):
        ScaledFraunhofer(0.1, 1e-3).adjoint(wf, input_dx=-1e-6)
    with pytest.raises(ValueError, match="`input_shape`"):
        ScaledFraunhofer(0.1, 1e-3).adjoint(wf, input_shape=(4, -4))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: ScaledFraunhofer(0.1, np.array([1e-3, 1e-3, 1e-3])), "output_dx"),
        (lambda: ScaledFraunhofer(0.1, 1e-3, (4.5, 4)), "output_shape"),
        (lambda: Fresnel(np.ones(2)), "distance"),
    ],
)
def test_wrong_shapes_rejected(build, name):
    # The test suite's runtime type checker rejects these first (a TypeError); without
    # it, construction raises the ValueError. Either names the argument.
    with pytest.raises((TypeError, ValueError), match=name):
        build()


def test_near_field_accepts_negative_distance():
    assert float(Fresnel(-1e-3).distance) == pytest.approx(-1e-3)
    assert float(AngularSpectrum(-1e-3).distance) == pytest.approx(-1e-3)
