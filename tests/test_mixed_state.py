"""Mixed-state ptychography end to end: partially coherent simulations and their reconstruction."""

import equinox as eqx
import h5py
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import illumination_map, object_error

import janssen.io._simulate
from janssen.cli import main
from janssen.invert import (
    RPIE,
    GaussNewton,
    Gradient,
    MixedStatePtychoData,
    data_residual,
    init_far_field_microscope,
    reconstruct,
)
from janssen.io import MicroscopeData, make_focused_probe, simulate, simulate_preset
from janssen.optics import CoherentModeSet, MixedStateProbe, extend_modes, fft2c, gsm_parameters, orthogonalize_modes

WAVELENGTH = 1e-10


def _powers(fields):
    powers = np.sum(np.abs(np.asarray(fields)) ** 2, axis=(1, 2))
    return powers / powers.sum()


# ---- the partially coherent probe -----------------------------------------------------------


def test_coherent_limit_is_the_coherent_probe():
    coherent = make_focused_probe((32, 32), 4e-8, WAVELENGTH, diameter_px=12)
    nearly = make_focused_probe((32, 32), 4e-8, WAVELENGTH, diameter_px=12, modes=2, coherence_width=1e-3)
    # A coherence width 2e3 times the disc: the second mode carries ~(R / 2 m)**2 ~ 1e-8.
    assert _powers(nearly)[1] < 1e-6
    scale = float(jnp.max(jnp.abs(coherent)))
    np.testing.assert_allclose(np.asarray(nearly[0]), np.asarray(coherent[0]), atol=1e-4 * scale)


def test_modes_are_the_eigenmodes_of_the_cross_spectral_density(x64):
    """Against a brute-force eigendecomposition of the pupil's cross-spectral density
    `W(f1, f2) = A(f1) conj(A(f2)) exp(-|f1 - f2|**2 / (2 m**2))`, with the documented
    mapping `m / f_max = coherence_width / (disc radius)`. Measured: equal to 1e-12."""
    n, dx, diameter = 24, 4e-8, 9.0
    width = (150e-9, 260e-9)  # anisotropic: no degenerate modes, so each mode is unique
    pupil = np.asarray(fft2c(make_focused_probe((n, n), dx, WAVELENGTH, diameter_px=diameter)[0])).ravel()
    probe = make_focused_probe((n, n), dx, WAVELENGTH, diameter_px=diameter, modes=4, coherence_width=width)
    f_max = 0.25 / dx  # pupil_fraction / (2 dx)
    m = np.asarray(width) * f_max / (diameter * dx / 2)
    f = (np.arange(n) - n // 2) / (n * dx)
    fx, fy = (g.ravel() for g in np.meshgrid(f, f))
    mu = np.exp(-((fx[:, None] - fx) ** 2) / (2 * m[0] ** 2) - (fy[:, None] - fy) ** 2 / (2 * m[1] ** 2))
    eigenvalues, eigenvectors = np.linalg.eigh(pupil[:, None] * np.conj(pupil)[None, :] * mu)
    eigenvalues, eigenvectors = eigenvalues[::-1][:4], eigenvectors[:, ::-1][:, :4]
    np.testing.assert_allclose(_powers(probe), eigenvalues / eigenvalues.sum(), atol=1e-9)
    pupil_modes = np.asarray(fft2c(probe)).reshape(4, -1)
    for k in range(4):
        overlap = abs(np.vdot(eigenvectors[:, k], pupil_modes[k])) / np.linalg.norm(pupil_modes[k])
        assert abs(overlap - 1) < 1e-9, (k, overlap)


def test_gaussian_schell_beam_gives_the_analytic_weights(x64):
    """A Gaussian–Schell beam well inside the aperture: the weights are the products
    `q_x**i q_y**j` of `gsm_parameters` (the aperture and the grid cost < 1e-4; measured
    differences 2e-5; for a round beam, 80 nm wide and coherent over 60 nm, too)."""
    beam, coherence = 60e-9, (50e-9, 200e-9)
    probe = make_focused_probe(
        (64, 64), 2e-8, WAVELENGTH, diameter_px=24, modes=4, coherence_width=coherence, beam_width=beam
    )
    q, _ = gsm_parameters(jnp.broadcast_to(jnp.asarray(beam), (2,)), jnp.broadcast_to(jnp.asarray(coherence), (2,)))
    q = np.asarray(q)
    products = sorted((q[0] ** i * q[1] ** j for i in range(6) for j in range(6)), reverse=True)[:4]
    np.testing.assert_allclose(_powers(probe), np.array(products) / np.sum(products), atol=1e-4)


def test_coherence_width_is_the_sample_plane_coherence(x64):
    """|mu(dx)| across the middle of the disc, at a separation of one coherence width:
    geometric optics gives exp(-1/2) = 0.607; the disc's Fresnel fringes lower it a
    little (measured 0.553 with 40 modes, which hold all but 1e-6 of the power)."""
    n, dx, width = 64, 2e-8, 120e-9
    probe = np.asarray(make_focused_probe((n, n), dx, WAVELENGTH, diameter_px=24, modes=40, coherence_width=width))
    step = round(width / dx)
    values = []
    for oy in range(-3, 4):
        for ox in range(-3, 4):
            y, x1 = n // 2 + oy, n // 2 + ox - step // 2
            a, b = probe[:, y, x1], probe[:, y, x1 + step]
            values.append(abs(np.vdot(b, a)) / np.sqrt(np.vdot(a, a).real * np.vdot(b, b).real))
    assert abs(np.mean(values) - np.exp(-0.5)) < 0.08, np.mean(values)


def test_simulate_with_coherence_width(three_mode_data):
    dataset = three_mode_data
    probe = dataset.probe
    # The probe disc is 0.375 * 32 = 12 pixels of 40 nm: the same 480 nm disc as every
    # preset, so the weights are the presets' (0.61 / 0.20 / 0.20 at 180 nm).
    same = make_focused_probe((32, 32), 4e-8, WAVELENGTH, diameter_px=12, modes=3, coherence_width=180e-9)
    np.testing.assert_allclose(_powers(probe), _powers(same), atol=1e-5)
    np.testing.assert_allclose(_powers(probe), [0.608, 0.196, 0.196], atol=2e-3)
    # Orthogonal modes: orthogonalisation leaves the powers as they are.
    _, weights = orthogonalize_modes(probe)
    np.testing.assert_allclose(np.asarray(weights) / float(jnp.sum(weights)), _powers(probe), atol=1e-5)
    # Scaled to the photon budget: the noiseless counts per frame average 1e5.
    expected = dataset.expected_intensities()
    np.testing.assert_allclose(float(jnp.mean(jnp.sum(expected, axis=(1, 2)))), 1e5, rtol=1e-4)


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [0.0, -1e-7, (1e-7, 0.0), float("nan")])
def test_coherence_width_must_be_positive(width):
    with pytest.raises(ValueError, match="coherence_width"):
        make_focused_probe((16, 16), 1e-8, WAVELENGTH, diameter_px=6, modes=2, coherence_width=width)
    with pytest.raises(ValueError, match="coherence_width"):
        simulate(16, 4, key=jr.PRNGKey(0), modes=2, coherence_width=width)
    with pytest.raises(ValueError, match="coherence_width"):
        simulate_preset("small", key=jr.PRNGKey(0), modes=2, coherence_width=width)


def test_beam_width_needs_coherence_width_and_must_be_positive():
    with pytest.raises(ValueError, match="beam_width"):
        make_focused_probe((16, 16), 1e-8, WAVELENGTH, diameter_px=6, beam_width=1e-7)
    with pytest.raises(ValueError, match="beam_width"):
        make_focused_probe((16, 16), 1e-8, WAVELENGTH, diameter_px=6, coherence_width=1e-7, beam_width=-1.0)


@pytest.mark.parametrize(
    "weights, match", [([0.5, -0.1], "weights"), ([1.0, 0.5, 0.2], r"shape \(2,\)")], ids=["negative", "count"]
)
def test_bad_weights(weights, match):
    modes = jnp.ones((2, 8, 8), jnp.complex64)
    with pytest.raises(ValueError, match=match):
        CoherentModeSet(modes, jnp.asarray(weights), WAVELENGTH, 1e-8)


def test_modes_of_another_grid_than_the_data():
    # 16 x 16 frames, 4 positions; camera pixel chosen so that the object pixel is 1e-8 m.
    data = MicroscopeData(np.zeros((4, 16, 16)), np.zeros((4, 2)), WAVELENGTH, WAVELENGTH / (16 * 1e-8), 1.0)
    other = CoherentModeSet(jnp.ones((2, 12, 12), jnp.complex64), jnp.array([0.7, 0.3]), WAVELENGTH, 1e-8)
    with pytest.raises(ValueError, match="probe_modes"):
        MixedStatePtychoData(data.intensities, other, jnp.ones((24, 24)), np.zeros((4, 2)), WAVELENGTH, 1e-8)
    with pytest.raises(ValueError, match="probe"):
        init_far_field_microscope(data, MixedStateProbe(other))


# ---- the command line -----------------------------------------------------------------------


def test_cli_simulate_coherence_width(tmp_path, capsys, monkeypatch, three_mode_data):
    # A "small" preset of the fixture's shapes (32 x 32 frames, 49 positions): the flag's
    # path through the command, without compiling a simulation of another size.
    monkeypatch.setitem(janssen.io._simulate.PRESETS, "small", (32, 49))
    out = tmp_path / "mixed.cxi"
    code = main(["simulate", "--size", "small", "--modes", "3", "--coherence-width", "1.8e-7", "--out", str(out)])
    assert code == 0
    assert "weights 0.61/0.20/0.20" in capsys.readouterr().out
    with h5py.File(out, "r") as handle:
        probe = handle["ground_truth/probe"][()]
    assert probe.shape == (3, 32, 32)
    np.testing.assert_allclose(_powers(probe), [0.608, 0.196, 0.196], atol=2e-3)


def test_cli_simulate_rejects_bad_coherence_width(tmp_path, capsys):
    code = main(["simulate", "--size", "small", "--modes", "3", "--coherence-width", "0", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--coherence-width" in capsys.readouterr().err  # names the flag


# ---- reconstruction ---------------------------------------------------------------------------


def test_extend_modes_keeps_the_given_modes_and_the_power():
    given = np.asarray(make_focused_probe((32, 32), 4e-8, WAVELENGTH, diameter_px=12, modes=2, coherence_width=180e-9))
    total = np.sum(np.abs(given) ** 2)
    modes, weights = extend_modes(given, 5, share=0.3)
    gram = np.einsum("myx,nyx->mn", np.conj(modes), modes)
    np.testing.assert_allclose(gram, np.eye(5), atol=1e-5)
    np.testing.assert_allclose(np.sum(weights), total, rtol=1e-5)
    # Three new modes at 0.3 each would take 90 %: they are capped at half the power, and the
    # given modes keep their ratio (and span) in the rest.
    np.testing.assert_allclose(np.asarray(weights[2:]) / total, 0.5 / 3, rtol=1e-5)
    _, powers = orthogonalize_modes(jnp.asarray(given))
    np.testing.assert_allclose(np.asarray(weights[:2]) / total, 0.5 * np.asarray(powers) / total, rtol=1e-4)
    # The given fields lie in the span of the first two modes.
    flat, first = given.reshape(2, -1), np.asarray(modes[:2]).reshape(2, -1)
    residual = flat - (flat @ np.conj(first).T) @ first
    assert np.linalg.norm(residual) < 1e-4 * np.linalg.norm(given)
    with pytest.raises(ValueError, match="num_modes"):
        extend_modes(given, 1)


def _with_modes(microscope, modes, share=0.05):
    """`microscope` with a `modes`-mode probe from `extend_modes` (as `janssen reconstruct --modes` starts)."""
    fields, weights = extend_modes(microscope.probe.fields(), modes, share=share)
    probe = MixedStateProbe(CoherentModeSet(fields, weights, WAVELENGTH, microscope.sample.dx))
    return eqx.tree_at(lambda m: m.probe, microscope, probe)


@pytest.fixture(scope="module")
def three_mode_data():
    """32 x 32 frames, 49 positions, three Gaussian–Schell modes of weights 0.61 / 0.20 / 0.20."""
    return simulate(32, 49, key=jr.PRNGKey(1), modes=3, coherence_width=180e-9, photons=1e5)


def test_three_modes_beat_one_and_recover_the_weights(three_mode_data):
    """rPIE, 40 iterations from a unit object and the data's probe guess. Measured: object
    error 0.186 with 1 mode, 0.072 with 3 modes; weights 0.611 / 0.198 / 0.191 against the
    true 0.610 / 0.195 / 0.195."""
    dataset = three_mode_data
    data, truth = dataset.data, np.asarray(dataset.object)
    illumination = np.asarray(illumination_map(dataset.microscope()))
    single = init_far_field_microscope(data)
    errors, weights = {}, {}
    for modes in (1, 3):
        start = single if modes == 1 else _with_modes(single, modes)
        solution = reconstruct(start, data, RPIE(), num_iterations=40)
        errors[modes] = object_error(truth, solution.microscope.sample.sample, illumination)
        _, powers = orthogonalize_modes(solution.microscope.probe.fields())
        weights[modes] = np.asarray(powers) / float(jnp.sum(powers))
    true_weights = _powers(dataset.probe)
    print(errors, weights[3], true_weights)
    assert isinstance(solution.microscope.probe, MixedStateProbe)
    assert errors[3] < 0.09 and errors[1] > 0.15, errors
    np.testing.assert_allclose(weights[3], true_weights, atol=0.02)


@pytest.fixture(scope="module")
def two_mode_problem():
    """16 positions of 32 x 32 frames with two Gaussian–Schell modes, and a two-mode start."""
    dataset = simulate(32, 16, key=jr.PRNGKey(2), modes=2, coherence_width=150e-9, photons=1e5)
    return dataset.data, _with_modes(init_far_field_microscope(dataset.data), 2, share=0.1)


@pytest.mark.slow  # about 45 s on 2 busy cores, most of it compiling
@pytest.mark.parametrize("engine", ["gradient", "gauss-newton"])
def test_gradient_engines_refine_a_mixed_state(two_mode_problem, engine):
    """Object, modes and weights refined together, from a residual of 2.26 (the truth's:
    0.54). Measured: Adam 1.53 after 10 iterations, Gauss-Newton 0.96 after 6."""
    data, start = two_mode_problem
    weights = start.probe.weights
    if engine == "gradient":
        # Adam moves each parameter by about its rate: unit-power modes of 32 x 32 pixels are
        # about 1/32 per pixel, and the weights are powers (counts).
        rates = {"probe": 0.5 / 32, "probe.weights": 0.5 * float(jnp.sum(weights))}
        engine, bound, iterations = Gradient(optax.adam(0.02), learning_rates=rates), 0.75, 10
    else:
        engine, bound, iterations = GaussNewton(), 0.55, 6
    before = data_residual(start, data)
    trainable = ["object", "probe", "probe.weights"]
    solution = reconstruct(start, data, engine, trainable=trainable, num_iterations=iterations)
    after = data_residual(solution.microscope, data)
    print(before, after, solution.microscope.probe.weights)
    assert isinstance(solution.microscope.probe, MixedStateProbe)
    assert after < bound * before, (before, after)
    assert not np.allclose(solution.microscope.probe.weights, weights, rtol=1e-3)
