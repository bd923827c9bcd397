"""Coherent mode sets, orthogonalisation, mixed-state probes and Gaussian–Schell modes."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import random_complex

from janssen.invert import RPIE, init_far_field_microscope, reconstruct
from janssen.io import simulate
from janssen.optics import (
    CoherentModeSet,
    MixedStateProbe,
    gaussian_schell_modes,
    gsm_parameters,
    orthogonalize_modes,
)

WAVELENGTH, DX = 1e-10, 1e-8


def _density(fields):
    a = np.asarray(fields).reshape(fields.shape[0], -1)
    return a.T @ a.conj()  # sum_m f_m f_m^H


def _gram(modes):
    a = np.asarray(modes).reshape(modes.shape[0], -1)
    return a.conj() @ a.T


# ---- orthogonalize_modes ------------------------------------------------------------------


@pytest.mark.parametrize("precision, tol", [("f32", 1e-5), ("x64", 1e-12)])
def test_orthogonalize_preserves_intensity(precision, tol, getkey, request):
    if precision == "x64":
        request.getfixturevalue("x64")
    fields = random_complex(getkey(), (4, 16, 12))
    modes, weights = orthogonalize_modes(fields)
    before = jnp.sum(jnp.abs(fields) ** 2, axis=0)
    after = jnp.sum(weights[:, None, None] * jnp.abs(modes) ** 2, axis=0)
    assert float(jnp.max(jnp.abs(after - before)) / jnp.max(before)) < tol
    assert np.allclose(_gram(modes), np.eye(4), atol=10 * tol)
    assert np.all(np.diff(np.asarray(weights)) <= 0)
    # The density matrix, not only its diagonal, is unchanged (unitary mixing).
    new_fields = jnp.sqrt(weights)[:, None, None] * modes
    d0, d1 = _density(fields), _density(new_fields)
    assert np.max(np.abs(d1 - d0)) / np.max(np.abs(d0)) < 10 * tol


def test_orthogonalize_rank_deficient(getkey, x64):
    a, b = random_complex(getkey(), (2, 8, 8))
    fields = jnp.stack([a, b, 2 * a - 1j * b])  # rank 2
    modes, weights = orthogonalize_modes(fields)
    assert float(weights[2]) < 1e-12 * float(weights[0])
    assert np.allclose(_gram(modes), np.eye(3), atol=1e-12)
    intensity = jnp.sum(weights[:, None, None] * jnp.abs(modes) ** 2, axis=0)
    assert np.allclose(intensity, jnp.sum(jnp.abs(fields) ** 2, axis=0), rtol=1e-12)


def test_orthogonalize_rejects_too_many_modes():
    with pytest.raises(ValueError, match="fields"):
        orthogonalize_modes(jnp.ones((5, 2, 2), jnp.complex64))


# ---- CoherentModeSet ------------------------------------------------------------------------


def test_mode_set_properties(getkey):
    modes, _ = orthogonalize_modes(random_complex(getkey(), (3, 8, 8)))
    weights = jnp.array([2.0, 1.0, 1.0])
    s = CoherentModeSet(modes, weights, WAVELENGTH, DX)
    assert s.num_modes == 3
    # 1 / sum p^2 with p = (1/2, 1/4, 1/4): 1 / (1/4 + 1/16 + 1/16) = 8/3.
    assert abs(float(s.effective_mode_count) - 8 / 3) < 1e-5
    expected = sum(w * jnp.abs(m) ** 2 for w, m in zip(weights, modes))
    assert np.allclose(s.intensity, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(weights=jnp.array([1.0, -0.1])), "weights"),
        (dict(weights=jnp.array([1.0, 1.0, 1.0])), "weights"),
        (dict(weights=jnp.array([1.0, jnp.nan])), "weights"),
        (dict(wavelength=0.0), "wavelength"),
        (dict(wavelength=-1e-10), "wavelength"),
        (dict(dx=(1e-8, 0.0)), "dx"),
        (dict(modes=jnp.full((2, 4, 4), jnp.nan, jnp.complex64)), "modes"),
        (dict(z_position=jnp.nan), "z_position"),
    ],
)
def test_mode_set_validation(change, name):
    args = dict(
        modes=jnp.ones((2, 4, 4), jnp.complex64),
        weights=jnp.array([1.0, 0.5]),
        wavelength=WAVELENGTH,
        dx=DX,
        z_position=0.0,
    )
    args.update(change)
    with pytest.raises(ValueError, match=name):
        CoherentModeSet(**args)


# ---- MixedStateProbe --------------------------------------------------------------------------


def test_mixed_state_probe_round_trip(getkey, x64):
    fields = random_complex(getkey(), (3, 12, 10))
    probe = MixedStateProbe(CoherentModeSet(*orthogonalize_modes(fields), WAVELENGTH, DX))
    d0 = _density(fields)
    assert np.max(np.abs(_density(probe.fields()) - d0)) < 1e-12 * np.max(np.abs(d0))
    again = probe.with_fields(probe.fields())
    assert isinstance(again, MixedStateProbe)
    assert np.max(np.abs(_density(again.fields()) - d0)) < 1e-12 * np.max(np.abs(d0))
    assert np.allclose(again.weights, probe.weights, rtol=1e-12)
    # Mixing the fields by a unitary changes nothing physical: same weights, same density.
    q, _ = np.linalg.qr(np.asarray(random_complex(getkey(), (3, 3))))
    mixed = jnp.einsum("ij,jyx->iyx", q, fields)
    other = probe.with_fields(mixed)
    assert np.allclose(other.weights, probe.weights, rtol=1e-12)
    assert np.allclose(other.intensity, jnp.sum(jnp.abs(fields) ** 2, axis=0), rtol=1e-12)
    assert np.allclose(other.mode_set.intensity, other.intensity)


def test_mixed_state_probe_fields_are_weighted_modes(getkey):
    modes, _ = orthogonalize_modes(random_complex(getkey(), (2, 8, 8)))
    probe = MixedStateProbe(CoherentModeSet(modes, jnp.array([4.0, 1.0]), WAVELENGTH, DX))
    expected = jnp.stack([2.0 * modes[0], modes[1]])
    assert np.allclose(probe.fields(), expected, atol=1e-6)
    assert probe.num_modes == 2 and probe.shape == (8, 8)
    # A zero weight (rank-deficient fields) has a finite gradient, not NaN.
    dark = eqx.tree_at(lambda p: p.weights, probe, jnp.array([1.0, 0.0]))
    grad = jax.grad(lambda w: jnp.sum(jnp.abs(eqx.tree_at(lambda p: p.weights, dark, w).fields()) ** 2))(dark.weights)
    assert np.allclose(grad, [1.0, 0.0], atol=1e-6)


def test_mixed_state_probe_with_fields_jit(getkey):
    fields = random_complex(getkey(), (2, 8, 8))
    probe = MixedStateProbe(CoherentModeSet(*orthogonalize_modes(fields), WAVELENGTH, DX))
    eager = probe.with_fields(2 * fields)
    jitted = eqx.filter_jit(lambda p, f: p.with_fields(f))(probe, 2 * fields)
    assert np.allclose(jitted.weights, eager.weights, rtol=1e-5)
    assert np.allclose(_density(jitted.fields()), _density(eager.fields()), atol=1e-4 * float(eager.weights[0]))


# ---- Gaussian–Schell model ------------------------------------------------------------------

# Widths in pixels (converted to metres with DX); anisotropic, so a bug that drops one
# axis (the original varied its modes along x only) cannot pass.
BEAM_PX = (6.0, 5.0)
COHERENCE_PX = (4.0, 3.0)


def _analytic_gsm_csd(r1, r2, beam, coherence):
    """W(r1, r2) = sqrt(S(r1) S(r2)) mu(r1 - r2), normalised to W(0, 0) = 1."""
    (x1, y1), (x2, y2) = r1, r2
    s = np.exp(-(x1**2 + x2**2) / (4 * beam[0] ** 2) - (y1**2 + y2**2) / (4 * beam[1] ** 2))
    mu = np.exp(-((x1 - x2) ** 2) / (2 * coherence[0] ** 2) - (y1 - y2) ** 2 / (2 * coherence[1] ** 2))
    return s * mu


def test_gsm_cross_spectral_density_matches_analytic(x64):
    n, num_modes = 64, 120
    gsm = gaussian_schell_modes(
        (n, n),
        DX,
        WAVELENGTH,
        beam_width=np.array(BEAM_PX) * DX,
        coherence_width=np.array(COHERENCE_PX) * DX,
        num_modes=num_modes,
    )
    modes, w = np.asarray(gsm.modes), np.asarray(gsm.weights)
    c = np.arange(n) - n // 2
    # x-cut (y1 = y2 = 0) and y-cut (x1 = x2 = 0), and a cut with both moving.
    x_cut = modes[:, n // 2, :]
    y_cut = modes[:, :, n // 2]
    diag = modes[:, np.arange(n), np.arange(n)]
    peak = np.sum(w * np.abs(modes[:, n // 2, n // 2]) ** 2)
    for cut, r in (
        (x_cut, lambda i: (c[i], 0 * c[i])),
        (y_cut, lambda i: (0 * c[i], c[i])),
        (diag, lambda i: (c[i], c[i])),
    ):
        numeric = np.einsum("k,ki,kj->ij", w, cut, cut.conj()).real / peak
        i1, i2 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        analytic = _analytic_gsm_csd(r(i1), r(i2), BEAM_PX, COHERENCE_PX)
        # Measured: 1.0e-4 (truncation of the mode sum at 120 modes).
        assert np.max(np.abs(numeric - analytic)) < 1e-3


def test_gsm_eigenvalues_match_numerical_decomposition(x64):
    # 1-D analytic W on a fine, wide grid; its eigenvalues are the GSM eigenvalues.
    n, step = 257, 0.25
    x = (np.arange(n) - n // 2) * step
    ratios = []
    for beam, coherence in zip(BEAM_PX, COHERENCE_PX):
        w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (4 * beam**2)) * np.exp(
            -((x[:, None] - x[None, :]) ** 2) / (2 * coherence**2)
        )
        eig = np.sort(np.linalg.eigvalsh(w * step))[::-1]
        q, _ = gsm_parameters(jnp.array(beam), jnp.array(coherence))
        # Analytic lambda_n / lambda_0 = q**n.
        assert np.allclose(eig[1:8] / eig[0], float(q) ** np.arange(1, 8), rtol=1e-8)
        ratios.append(eig[:20] / eig[0])
    # The library's 2-D weights are the largest products of the two 1-D spectra.
    gsm = gaussian_schell_modes(
        (64, 64),
        DX,
        WAVELENGTH,
        beam_width=np.array(BEAM_PX) * DX,
        coherence_width=np.array(COHERENCE_PX) * DX,
        num_modes=15,
    )
    products = np.sort(np.outer(ratios[0], ratios[1]).ravel())[::-1][:15]
    assert np.allclose(np.asarray(gsm.weights) / float(gsm.weights[0]), products, rtol=1e-8)


def test_gsm_fundamental_mode_width(x64):
    # Mode 0 is exp(-c_x x^2 - c_y y^2): its intensity has rms width 1 / (2 sqrt(c)).
    n = 64
    gsm = gaussian_schell_modes(
        (n, n),
        DX,
        WAVELENGTH,
        beam_width=np.array(BEAM_PX) * DX,
        coherence_width=np.array(COHERENCE_PX) * DX,
        num_modes=1,
    )
    i0 = np.abs(np.asarray(gsm.modes[0])) ** 2
    c = np.arange(n) - n // 2
    widths = [np.sqrt(np.sum(i0.sum(0) * c**2)), np.sqrt(np.sum(i0.sum(1) * c**2))]
    _, cgsm = gsm_parameters(jnp.array(BEAM_PX), jnp.array(COHERENCE_PX))
    assert np.allclose(widths, 1 / (2 * np.sqrt(np.asarray(cgsm))), rtol=1e-8)
    # A nearly coherent source has one mode carrying almost all power, as wide as the beam.
    coherent = gaussian_schell_modes((n, n), DX, WAVELENGTH, beam_width=6 * DX, coherence_width=1e3 * DX, num_modes=3)
    assert float(coherent.weights[0]) > 0.999
    assert abs(float(coherent.effective_mode_count) - 1) < 1e-3


def test_gsm_modes_orthonormal(x64):
    gsm = gaussian_schell_modes(
        (64, 56), (DX, 1.2 * DX), WAVELENGTH, beam_width=(5 * DX, 4 * DX), coherence_width=3 * DX, num_modes=12
    )
    # Sampled Hermite-Gauss functions are orthonormal while the grid holds their tails
    # (measured 9e-16 here; 1e-8 on a 48 x 40 grid, which clips the widest modes).
    assert np.allclose(_gram(gsm.modes), np.eye(12), atol=1e-12)
    assert np.all(np.diff(np.asarray(gsm.weights)) <= 1e-15)
    assert abs(float(jnp.sum(gsm.weights)) - 1) < 1e-12
    # Both axes vary: some modes have nodes along y, some along x.
    m = np.asarray(gsm.modes)
    assert np.any(np.abs(m[:, :, 28].sum(1)) < 1e-6 * np.abs(m[:, :, 28]).sum(1))
    assert np.any(np.abs(m[:, 32, :].sum(1)) < 1e-6 * np.abs(m[:, 32, :]).sum(1))


def test_gsm_gradient_matches_finite_differences(x64):
    r2 = (jnp.arange(32) - 16.0)[None, :] ** 2 + 0.5 * (jnp.arange(32) - 16.0)[:, None] ** 2

    def loss(coherence_width, beam_width):
        gsm = gaussian_schell_modes(
            (32, 32), DX, WAVELENGTH, beam_width=beam_width, coherence_width=coherence_width, num_modes=6
        )
        return jnp.sum(gsm.intensity * r2) + jnp.sum(gsm.weights**2)

    cw, bw = jnp.array(3 * DX), jnp.array(4 * DX)
    g_cw, g_bw = jax.jit(jax.grad(loss, argnums=(0, 1)))(cw, bw)
    loss = jax.jit(loss)
    h = 1e-4 * DX
    fd_cw = (loss(cw + h, bw) - loss(cw - h, bw)) / (2 * h)
    fd_bw = (loss(cw, bw + h) - loss(cw, bw - h)) / (2 * h)
    assert np.isfinite(float(g_cw)) and float(g_cw) != 0
    assert abs(float(g_cw - fd_cw)) < 1e-6 * abs(float(fd_cw))
    assert abs(float(g_bw - fd_bw)) < 1e-6 * abs(float(fd_bw))


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(coherence_width=0.0), "coherence_width"),
        (dict(coherence_width=-DX), "coherence_width"),
        (dict(beam_width=0.0), "beam_width"),
        (dict(beam_width=(DX, -DX)), "beam_width"),
        (dict(num_modes=0), "num_modes"),
        (dict(dx=0.0), "dx"),
        (dict(wavelength=-1.0), "wavelength"),
    ],
)
def test_gsm_validation(change, name):
    args = dict(dx=DX, wavelength=WAVELENGTH, beam_width=5 * DX, coherence_width=3 * DX, num_modes=3)
    args.update(change)
    dx, wavelength = args.pop("dx"), args.pop("wavelength")
    with pytest.raises(ValueError, match=name):
        gaussian_schell_modes((16, 16), dx, wavelength, **args)


# ---- integration: mixed-state rPIE ------------------------------------------------------------


def test_mixed_state_rpie_beats_single_mode():
    dataset = simulate(32, 25, key=jr.PRNGKey(0), modes=2, photons=1e5)
    data = dataset.data
    single = init_far_field_microscope(data)
    f0 = single.probe.fields()[0]
    # A second mode: the guess times a ramp along x, with a tenth of the power.
    ramp = (jnp.arange(32) - 16.0)[None, :] / 16.0
    second = f0 * ramp * jnp.sqrt(jnp.sum(jnp.abs(f0) ** 2) / jnp.sum(jnp.abs(f0 * ramp) ** 2))
    modes, weights = orthogonalize_modes(jnp.stack([jnp.sqrt(0.9) * f0, jnp.sqrt(0.1) * second]))
    mixed = MixedStateProbe(CoherentModeSet(modes, weights, data.wavelength, single.sample.dx))
    two = eqx.tree_at(lambda m: m.probe, single, mixed)
    one_mode = reconstruct(single, data, RPIE(), num_iterations=20)
    two_modes = reconstruct(two, data, RPIE(), num_iterations=20)
    assert isinstance(two_modes.microscope.probe, MixedStateProbe)
    print(f"final loss: one mode {one_mode.final_loss:.3f}, two modes {two_modes.final_loss:.3f}")
    # Measured after 20 iterations: 1.73 (one mode) against 1.41 (two modes); the truth's
    # own residual is 0.52.
    assert two_modes.final_loss < 0.9 * one_mode.final_loss


# ---- the one polynomial mode builder ------------------------------------------------------


def test_polynomial_modes_orthonormal_and_skip_what_adds_nothing():
    from janssen.optics._coherence import centroid_coordinates, polynomial_modes

    rng = np.random.default_rng(0)
    field = rng.normal(size=(24, 20)) + 1j * rng.normal(size=(24, 20))
    field /= np.linalg.norm(field)
    u, v = centroid_coordinates(np.abs(field) ** 2)
    new = polynomial_modes(field[None], u, v, 5)
    basis = np.concatenate([field[None], new]).reshape(6, -1)
    assert np.abs(basis.conj() @ basis.T - np.eye(6)).max() < 1e-12
    # Each new mode is field * (a polynomial of degree <= 2): in span{field * u^a v^b}.
    monomials = np.stack([(field * u**a * v**b).ravel() for a, b in [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]])
    coefficients, *_ = np.linalg.lstsq(monomials.T, new.reshape(5, -1).T, rcond=None)
    assert np.abs(monomials.T @ coefficients - new.reshape(5, -1).T).max() < 1e-12
    # A field on a single row has no v variation: v, uv, v^2 add nothing and are skipped.
    row = np.zeros((9, 16), complex)
    row[4] = np.exp(-(((np.arange(16) - 7.5) / 3) ** 2))
    row /= np.linalg.norm(row)
    u, v = centroid_coordinates(np.abs(row) ** 2)
    line = polynomial_modes(row[None], u, v, 3)
    assert np.abs(line[:, [0, 1, 2, 3, 5, 6, 7, 8]]).max() == 0  # stays on the row
    assert np.abs(line.reshape(3, -1).conj() @ line.reshape(3, -1).T - np.eye(3)).max() < 1e-12


def test_focused_probe_modes_are_the_pupil_times_polynomials(x64):
    """Independent of the builder: in the pupil plane mode k is the pupil times a polynomial of low degree."""
    from janssen.io import make_focused_probe
    from janssen.optics import fft2c

    probe = np.asarray(make_focused_probe((48, 48), 1e-8, 1e-10, diameter_px=16, modes=3))
    pupil_plane = np.asarray(fft2c(jnp.asarray(probe)))
    inside = np.abs(pupil_plane[0]) > 1e-6 * np.abs(pupil_plane[0]).max()
    # Power 1 in all, halving from mode to mode (weights 4/7, 2/7, 1/7).
    np.testing.assert_allclose(np.sum(np.abs(probe) ** 2, axis=(1, 2)), [4 / 7, 2 / 7, 1 / 7], rtol=1e-10)
    fy, fx = np.mgrid[:48, :48] - 24.0
    ratio = pupil_plane[1:, inside] / pupil_plane[0, inside]
    design = np.stack([np.ones(inside.sum()), fx[inside], fy[inside]], axis=1)
    for k in range(2):
        coefficients, *_ = np.linalg.lstsq(design, ratio[k], rcond=None)
        assert np.abs(design @ coefficients - ratio[k]).max() < 1e-9 * np.abs(ratio[k]).max()
    flat = probe.reshape(3, -1)
    gram = flat.conj() @ flat.T
    assert np.abs(gram - np.diag(np.diag(gram))).max() < 1e-12


def test_schell_builder_is_the_gaussian_schell_closed_form(x64):
    """The numerical Schell builder, with a flat field and a Gaussian envelope, is the analytic GSM."""
    from janssen.optics import centred_coordinates, gaussian_schell_modes
    from janssen.optics._coherence import schell_modes

    shape, dx = (64, 72), 1e-7
    beam, coherence = jnp.array([6e-7, 9e-7]), jnp.array([4e-7, 5e-7])
    x, y = centred_coordinates(shape[1], dx), centred_coordinates(shape[0], dx)
    modes, weights = schell_modes(jnp.ones(shape, complex), (x, y), coherence, 5, envelope_width=beam)
    analytic = gaussian_schell_modes(shape, dx, 5e-10, beam_width=beam, coherence_width=coherence, num_modes=5)
    # The grid samples continuous eigenfunctions (4 px coherence width): agreement to ~1e-8.
    np.testing.assert_allclose(weights, analytic.weights, rtol=1e-7)
    # Modes equal up to a phase each (degenerate pairs would need a subspace test; these widths have none).
    overlaps = jnp.abs(jnp.sum(jnp.conj(modes) * analytic.modes, axis=(1, 2)))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-7)
