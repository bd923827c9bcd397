"""The mixed-state seed API: validation, forward model, conjugated steps, coherence fitting."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import janssen.invert as ji
from janssen.invert._complex import descent_gradient
from janssen.io import simulate, simulate_measurement
from janssen.optics import CoherentModeSet, gaussian_schell_modes, orthogonalize_modes


@pytest.fixture(scope="module")
def problem():
    """A 2-mode simulated dataset (32x32 frames, 25 positions, 1e5 counts): (truth, unit-object start)."""
    ds = simulate(32, 25, key=jax.random.PRNGKey(0), modes=2, photons=1e5)
    data = ds.data
    dx = data.object_pixel_size
    modes, weights = orthogonalize_modes(ds.probe)
    mode_set = CoherentModeSet(modes, weights, data.wavelength, dx)
    pos_px = ds.positions / dx[None, :]
    truth = ji.make_mixed_state_ptycho_data(data.intensities, mode_set, ds.object, pos_px, data.wavelength, dx)
    start = eqx.tree_at(lambda d: d.sample, truth, jnp.ones_like(ds.object))
    return truth, start


def _centred_fft(x):
    # An independent reference for fft2c: NumPy's FFT, centred and unitary.
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def _small_inputs(key, *, frame=8, sample=(12, 14), npos=3):
    k1, k2, k3 = jax.random.split(key, 3)
    modes = jax.random.normal(k1, (2, frame, frame)) + 1j * jax.random.normal(k2, (2, frame, frame))
    mode_set = CoherentModeSet(modes, jnp.array([0.7, 0.3]), 1e-9, 1e-8)
    obj = jnp.exp(1j * jax.random.normal(k3, sample))
    patterns = jnp.ones((npos, frame, frame))
    positions = jnp.zeros((npos, 2))
    return patterns, mode_set, obj, positions


def test_make_data_accepts_larger_sample_and_keeps_fields(getkey):
    patterns, mode_set, obj, positions = _small_inputs(getkey())
    data = ji.make_mixed_state_ptycho_data(patterns, mode_set, obj, positions, 1e-9, 1e-8)
    assert data.sample.shape == (12, 14)
    # A scalar pitch stays a scalar, as the original documents it; a pair stays a pair.
    assert data.dx.shape == () and float(data.dx) == pytest.approx(1e-8)
    paired = ji.make_mixed_state_ptycho_data(patterns, mode_set, obj, positions, 1e-9, (1e-8, 1e-8))
    np.testing.assert_allclose(np.asarray(paired.dx), [1e-8, 1e-8], rtol=1e-7)


def test_data_is_used_as_the_original_namedtuple(getkey):
    """Ported scripts index, unpack, `_replace` and read `_fields`: the values must be the fields'."""
    patterns, mode_set, obj, positions = _small_inputs(getkey())
    data = ji.make_mixed_state_ptycho_data(patterns, mode_set, obj, positions, 1e-9, 1e-8)
    assert data._fields == ("diffraction_patterns", "probe_modes", "sample", "positions", "wavelength", "dx")
    assert len(data) == 6
    assert data[0] is data.diffraction_patterns and data[-1] is data.dx and data[2:4] == (data.sample, data.positions)
    got_patterns, got_modes, got_obj, got_positions, got_wavelength, got_dx = data
    assert got_modes is mode_set and got_obj is data.sample and got_dx is data.dx
    assert list(data._asdict()) == list(data._fields)
    moved = data._replace(positions=jnp.ones_like(positions))
    np.testing.assert_array_equal(np.asarray(moved.positions), 1.0)
    assert moved.sample is data.sample and np.all(np.asarray(data.positions) == 0)
    with pytest.raises(ValueError, match="`wavelength`"):
        data._replace(wavelength=-1.0)  # validated as by the constructor
    with pytest.raises(ValueError, match="no field"):
        data._replace(samples=obj)
    # Still a PyTree: the same leaves whichever way it is read.
    assert len(jax.tree_util.tree_leaves(data)) >= 5


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(wavelength=-1e-9), "wavelength"),
        (dict(dx=0.0), "dx"),
        (dict(positions=jnp.zeros((2, 2))), "positions"),
        (dict(patterns=jnp.ones((3, 8, 9))), "probe_modes"),
        (dict(obj=jnp.ones((7, 20), complex)), "sample"),
        (dict(patterns=-jnp.ones((3, 8, 8))), "diffraction_patterns"),
        (dict(patterns=jnp.full((3, 8, 8), jnp.nan)), "diffraction_patterns"),
        # The sample is 12 x 14, the probe 8 x 8: |x| <= 3 and |y| <= 2 pixels fit.
        (dict(positions=jnp.array([[0.0, 0.0], [3.0, 2.0], [4.0, 0.0]])), "positions"),
        (dict(positions=jnp.array([[0.0, 0.0], [0.0, -3.0], [0.0, 0.0]])), "positions"),
        (dict(dx=2e-8), "probe_modes.dx"),
    ],
)
def test_make_data_rejects_bad_input(getkey, change, name):
    patterns, mode_set, obj, positions = _small_inputs(getkey())
    args = dict(patterns=patterns, obj=obj, positions=positions, wavelength=1e-9, dx=1e-8) | change
    with pytest.raises(ValueError, match=f"`{name}`"):
        ji.make_mixed_state_ptycho_data(
            args["patterns"], mode_set, args["obj"], args["positions"], args["wavelength"], args["dx"]
        )


def test_forward_single_position_matches_direct_sum(getkey):
    patterns, mode_set, obj, _ = _small_inputs(getkey())
    weights = mode_set.weights
    shift_x, shift_y = 2.0, -1.0
    got = ji.mixed_state_forward_single_position(mode_set.modes, weights, obj, jnp.array(shift_x), jnp.array(shift_y))
    # Probe centre pixel (4, 4) on sample pixel (14 // 2 + 2, 12 // 2 - 1) = (9, 5): corner (x, y) = (5, 1).
    patch = np.asarray(obj)[1:9, 5:13]
    fields = _centred_fft(np.asarray(mode_set.modes) * patch[None])
    expected = np.sum(np.asarray(weights)[:, None, None] * np.abs(fields) ** 2, axis=0)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_forward_is_the_single_position_model_at_every_position(problem):
    truth, _ = problem
    all_frames = ji.mixed_state_forward(truth)
    modes, weights = truth.probe_modes.modes, truth.probe_modes.weights
    for j in (0, 7, 24):
        x, y = truth.positions[j]
        one = ji.mixed_state_forward_single_position(modes, weights, truth.sample, x, y)
        np.testing.assert_allclose(np.asarray(all_frames[j]), np.asarray(one), rtol=1e-4, atol=1e-3)
    # The truth explains the Poisson data: the amplitude loss sits near its noise floor
    # (var sqrt(Poisson) -> 1/4 for bright pixels, less for dark ones).
    assert float(ji.mixed_state_loss(truth)) < 0.3


def test_loss_names(problem):
    truth, start = problem
    predicted = ji.mixed_state_forward(start)
    for name, loss in (
        ("amplitude", ji.AmplitudeLoss()),
        ("intensity", ji.IntensityLoss()),
        ("poisson", ji.PoissonLoss()),
    ):
        expected = loss(predicted, start.diffraction_patterns)
        np.testing.assert_allclose(float(ji.mixed_state_loss(start, name)), float(expected), rtol=1e-6)
    with pytest.raises(ValueError, match="`loss_type`"):
        ji.mixed_state_loss(start, "mse")


def _perturbed(truth):
    """The true probe with the object's phase off by 0.3 rad rms: a complex-valued error."""
    noise = jax.random.normal(jax.random.PRNGKey(3), truth.sample.shape)
    return eqx.tree_at(lambda d: d.sample, truth, truth.sample * jnp.exp(0.3j * noise))


def test_one_step_descends_only_with_the_conjugate(problem):
    truth, _ = problem
    data = _perturbed(truth)
    before = float(ji.mixed_state_loss(data))
    lr = 1e-4

    def loss_of(sample, modes):
        return ji.mixed_state_loss(eqx.tree_at(lambda d: (d.sample, d.probe_modes.modes), data, (sample, modes)))

    raw = jax.jit(jax.grad(loss_of, argnums=(0, 1)))(data.sample, data.probe_modes.modes)
    unconjugated = eqx.tree_at(
        lambda d: (d.sample, d.probe_modes.modes),
        data,
        (data.sample - lr * raw[0], data.probe_modes.modes - lr * raw[1]),
    )
    after = float(ji.mixed_state_loss(ji.mixed_state_gradient_step(data, lr)))
    after_raw = float(ji.mixed_state_loss(unconjugated))
    # Measured: 2.65465 -> 2.65144 with the conjugate, -> 2.65476 (up) without it.
    assert after < before
    assert after_raw > before
    # First order, the step lowers the loss by lr * sum |G|^2 (tolerance 20%).
    predicted_drop = lr * sum(float(jnp.sum(jnp.abs(g) ** 2)) for g in descent_gradient(raw))
    np.testing.assert_allclose(before - after, predicted_drop, rtol=0.2)


def test_step_flags_select_the_leaves(problem):
    truth, _ = problem
    data = _perturbed(truth)
    only_object = ji.mixed_state_gradient_step(data, 1e-4, update_modes=False)
    assert np.array_equal(np.asarray(only_object.probe_modes.modes), np.asarray(data.probe_modes.modes))
    assert not np.array_equal(np.asarray(only_object.sample), np.asarray(data.sample))
    # The weights are powers (~1e5 counts) with tiny gradients: their step must be far larger.
    w = data.probe_modes.weights
    grad_w = jax.jit(jax.grad(lambda v: ji.mixed_state_loss(eqx.tree_at(lambda d: d.probe_modes.weights, data, v))))(w)
    lr = 0.01 * float(w[0]) / float(jnp.max(jnp.abs(grad_w)))
    weights = ji.mixed_state_gradient_step(data, lr, update_object=False, update_modes=False, update_weights=True)
    assert np.array_equal(np.asarray(weights.sample), np.asarray(data.sample))
    expected = np.maximum(np.asarray(w) - lr * np.asarray(grad_w), 0)
    np.testing.assert_allclose(np.asarray(weights.probe_modes.weights), expected, rtol=1e-5)
    assert not np.allclose(expected, np.asarray(w), rtol=1e-3)
    with pytest.raises(ValueError, match="`learning_rate`"):
        ji.mixed_state_gradient_step(data, -1.0)


def test_reconstruct_lowers_the_loss(problem):
    _, start = problem
    final, history = ji.mixed_state_reconstruct(start, num_iterations=30, learning_rate=1e-3)
    assert history.shape == (30,)
    np.testing.assert_allclose(float(history[0]), float(ji.mixed_state_loss(start)), rtol=1e-5)
    # `history[i]` is the loss before sweep i: the loss of the previous sweep's output.
    shorter, _ = ji.mixed_state_reconstruct(start, num_iterations=29, learning_rate=1e-3)
    np.testing.assert_allclose(float(history[-1]), float(ji.mixed_state_loss(shorter)), rtol=1e-5)
    # Measured: 58.75 -> 0.17 in 30 RPIE sweeps from a unit object (the fixed-step gradient
    # descent it replaced: 58.75 -> 6.05 in 100 steps).
    assert float(ji.mixed_state_loss(final)) < float(history[0]) / 100
    assert final.sample.shape == start.sample.shape != start.probe_modes.shape
    same, empty = ji.mixed_state_reconstruct(start, num_iterations=0)
    assert empty.shape == (0,) and same is start


def test_reconstruct_matches_the_engine_and_recovers_the_weights():
    """Three modes started at powers 0.90 / 0.05 / 0.05, documented step size and flags."""
    ds = simulate(32, 25, key=jax.random.PRNGKey(0), modes=3, photons=1e5)
    data, dx = ds.data, ds.data.object_pixel_size
    modes, weights = orthogonalize_modes(ds.probe)
    truth = np.asarray(weights / jnp.sum(weights))
    start_weights = (jnp.asarray([0.9, 0.05, 0.05]) * jnp.sum(weights)).astype(weights.dtype)
    mode_set = CoherentModeSet(modes, start_weights, data.wavelength, dx)
    start = ji.make_mixed_state_ptycho_data(
        data.intensities, mode_set, jnp.ones_like(ds.object), ds.positions / dx[None, :], data.wavelength, dx
    )
    illum = ji.illumination_map(start.microscope)
    final, _ = ji.mixed_state_reconstruct(start, 100, 1e-3)
    engine = ji.reconstruct(start.microscope, data, ji.RPIE(), trainable=("object", "probe"), num_iterations=100)
    seed_error = ji.object_error(ds.object, final.sample, illum)
    engine_error = ji.object_error(ds.object, engine.microscope.sample.sample, illum)
    # Measured: unit start 0.559; seed and engine 0.055 (the gradient loop it replaced:
    # 0.554 after 300 steps, weights stuck at 0.90 / 0.05 / 0.05). Truth 0.571 / 0.286 / 0.143.
    found = np.asarray(final.probe_modes.weights)
    print(f"seed {seed_error:.4f} engine {engine_error:.4f} weights {np.round(found / found.sum(), 4)} truth {truth}")
    assert ji.object_error(ds.object, start.sample, illum) > 0.5
    assert seed_error <= 1.2 * engine_error and engine_error < 0.1
    np.testing.assert_allclose(found / found.sum(), truth, atol=0.02)


def _gsm_problem(n, sample_shape, grid, step, num_modes, *, coherence_px, beam_px, key, photons):
    dx = 1e-10 * 0.96 / (n * 75e-6)  # simulate_measurement's default far-field object pixel
    k_amp, k_phase, k_noise = jax.random.split(key, 3)
    obj = (0.7 + 0.3 * jax.random.uniform(k_amp, sample_shape)) * jnp.exp(
        1j * jax.random.uniform(k_phase, sample_shape, maxval=2.0)
    )
    g = (np.arange(grid) - (grid - 1) / 2) * step
    pos_px = jnp.asarray(np.stack(np.meshgrid(g, g), -1).reshape(-1, 2), dtype=jnp.real(obj).dtype)

    @jax.jit
    def fields(width):
        gsm = gaussian_schell_modes(
            (n, n), dx, 1e-10, beam_width=beam_px * dx, coherence_width=width, num_modes=num_modes
        )
        return jnp.sqrt(gsm.weights)[:, None, None].astype(gsm.modes.dtype) * gsm.modes

    probe = fields(jnp.asarray(coherence_px * dx, dtype=pos_px.dtype))
    sim = simulate_measurement(obj, probe, pos_px * dx, key=k_noise, photons=photons)
    return obj, sim.data.intensities, pos_px, dx


def test_coherence_loss_gradient_matches_finite_differences(x64):
    obj, patterns, pos_px, dx = _gsm_problem(
        16, (20, 20), 2, 2.0, 4, coherence_px=2.0, beam_px=3.0, key=jax.random.PRNGKey(4), photons=1e4
    )
    beam, wl = 3.0 * dx, 1e-10

    def loss(width):
        return ji.coherence_parameterized_loss(width, obj, patterns, pos_px, beam, wl, dx, num_modes=4)

    loss = jax.jit(loss)
    width = jnp.asarray(1.4 * dx)
    grad = float(jax.jit(jax.grad(loss))(width))
    h = 1e-5 * float(width)
    fd = (float(loss(width + h)) - float(loss(width - h))) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    assert grad != 0.0


def test_coherence_width_is_recovered_from_twice_off():
    obj, patterns, pos_px, dx = _gsm_problem(
        32, (48, 48), 5, 3.0, 10, coherence_px=2.0, beam_px=5.0, key=jax.random.PRNGKey(1), photons=1e5
    )
    true_width = 2.0 * dx
    loss_and_grad = jax.jit(
        jax.value_and_grad(
            lambda u: ji.coherence_parameterized_loss(
                jnp.exp(u) * true_width, obj, patterns, pos_px, 5.0 * dx, 1e-10, dx
            )
        )
    )
    # Secant iterations on the derivative in u = log(width / true width), from u = log 2.
    u_prev = jnp.log(2.0)
    _, g_prev = loss_and_grad(u_prev)
    u = u_prev - 0.3 * jnp.sign(g_prev)
    for _ in range(8):
        _, g = loss_and_grad(u)
        if abs(float(g)) < 1e-4:
            break
        step = jnp.clip(-g * (u - u_prev) / (g - g_prev), -0.5, 0.5)
        u_prev, g_prev, u = u, g, u + step
    # Measured: 1.0002 x the true width (secant, about 6 loss-and-gradient evaluations).
    np.testing.assert_allclose(float(jnp.exp(u)), 1.0, rtol=0.05)
