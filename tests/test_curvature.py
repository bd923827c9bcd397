"""`CurvatureSearch`: the object-curvature / probe-defocus direction, fitted as three numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import janssen.invert as jinv
import janssen.io as jio

COEFFICIENTS = jnp.array([2.0, -1.0, 1.5])  # radians per (object side)**2


@pytest.fixture(scope="module")
def small():
    dataset = jio.simulate_preset("small", key=jax.random.PRNGKey(0))
    return dataset, dataset.microscope()


def test_the_change_is_a_ramp_proportional_to_the_position(small, x64):
    # Analytic: Q(r + d) - Q(r) = 2a r_x d_x + b (r_x d_y + r_y d_x) + 2c r_y d_y + Q(d), with
    # r, d in pixels and (a, b, c) scaled by 1 / L**2.
    _, true = small
    true = jax.tree_util.tree_map(lambda x: x.astype(jnp.complex128) if jnp.iscomplexobj(x) else x, true)
    bent = jinv.CurvatureSearch.apply(true, COEFFICIENTS)
    a, b, c = np.asarray(COEFFICIENTS) / max(true.sample.shape) ** 2
    h, w = true.probe_shape
    ry, rx = np.indices((h, w), dtype=float)
    rx, ry = rx - w // 2, ry - h // 2
    for index in (0, 37, 99):
        position = true.positions[index]
        corner, _ = true.locate(position)
        # The whole-pixel window's offset from the object's centre, in pixels.
        dx_, dy_ = np.asarray(corner) + [w // 2, h // 2] - [true.sample.shape[1] // 2, true.sample.shape[0] // 2]
        expected = (
            2 * a * rx * dx_ + b * (rx * dy_ + ry * dx_) + 2 * c * ry * dy_ + a * dx_**2 + b * dx_ * dy_ + c * dy_**2
        )
        ratio = np.asarray(bent.exit_waves(position) / true.exit_waves(position))[0]
        lit = (
            np.abs(np.asarray(true.exit_waves(position))[0])
            > 1e-6 * np.abs(np.asarray(true.exit_waves(position))).max()
        )
        # Measured: 3e-9 rad (float64; the positions' float32 rounding moves the probe by ~1e-9 px).
        # A curvature left in r would be ~0.1 rad at the edges.
        np.testing.assert_allclose(np.angle(ratio * np.exp(-1j * expected))[lit], 0.0, atol=1e-6)
        np.testing.assert_allclose(np.abs(ratio)[lit], 1.0, atol=1e-6)


def test_recovers_a_curvature_put_on_the_truth(small):
    dataset, true = small
    illumination = jinv.illumination_map(true)
    bent = jinv.CurvatureSearch.apply(true, COEFFICIENTS)
    before = jinv.object_error(dataset.object, bent.sample.sample, illumination, max_shift=0)
    solution = jinv.reconstruct(
        bent, dataset.data, jinv.CurvatureSearch(), num_iterations=8, trainable=["object", "probe"]
    )
    after = jinv.object_error(dataset.object, solution.microscope.sample.sample, illumination, max_shift=0)
    probe = solution.microscope.probe.fields()
    probe_error = float(jnp.linalg.norm(probe - true.probe.fields()) / jnp.linalg.norm(true.probe.fields()))
    # Measured (small preset, Poisson noise): object 0.034 -> 0.00025, probe within 1.2e-4 of the
    # truth, in 3 accepted steps; the noise puts the best fit a little off the truth.
    assert before > 0.03
    assert after < 0.05 * before
    assert probe_error < 2e-3
    losses = np.asarray(solution.losses)
    assert np.all(np.diff(losses) <= 0)  # a step is kept only if the residual falls


def test_leaves_the_truth_where_it_is(small):
    dataset, true = small
    illumination = jinv.illumination_map(true)
    solution = jinv.reconstruct(
        true, dataset.data, jinv.CurvatureSearch(), num_iterations=5, trainable=["object", "probe"]
    )
    # Measured: 0.00025 (the noise's own curvature); a wrong sign of the probe's term would move it far.
    assert jinv.object_error(dataset.object, solution.microscope.sample.sample, illumination, max_shift=0) < 0.002


def test_needs_object_and_probe(small):
    dataset, true = small
    with pytest.raises(ValueError, match="`trainable` must select both"):
        jinv.reconstruct(true, dataset.data, jinv.CurvatureSearch(), num_iterations=1, trainable=["object"])
    with pytest.raises(ValueError, match="`patience` must be an integer >= 1"):
        jinv.CurvatureSearch(patience=0)


def test_blocked_normal_equations_equal_the_whole_jacobian(small):
    # 100 frames in blocks of 16: the last block is padded, and the padding must count for nothing.
    from janssen.invert._engines.curvature import _Blocks
    from janssen.invert._residual import AmplitudeResidual

    dataset, true = small
    bent = jinv.CurvatureSearch.apply(true, COEFFICIENTS)
    terms = AmplitudeResidual.of(dataset.data, 1e-6)
    blocks = _Blocks.of(dataset.data, 1e-6, False)
    normal, gradient, squares = jax.jit(lambda m: blocks.normal_equations(jinv.CurvatureSearch.apply, m))(bent)
    trial_squares = jax.jit(lambda m: blocks.squares(m))(bent)

    def residual(coefficients):
        return terms.smooth(jinv.CurvatureSearch.apply(bent, coefficients)()).ravel()

    zero = jnp.zeros(3)
    jacobian = jax.jacfwd(residual)(zero)
    r = residual(zero)
    exact = terms.exact(bent())
    # float32 sums over 4e5 pixels: measured agreement 1e-6 relative.
    np.testing.assert_allclose(normal, jacobian.T @ jacobian, rtol=1e-4)
    np.testing.assert_allclose(gradient, jacobian.T @ r, rtol=1e-4, atol=1e-4 * float(jnp.abs(gradient).max()))
    np.testing.assert_allclose(squares, jnp.sum(exact**2), rtol=1e-5)
    np.testing.assert_allclose(trial_squares, jnp.sum(exact**2), rtol=1e-5)
