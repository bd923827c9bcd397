"""The `OptimistixLeastSquares` engine: optimistix's least-squares solvers on the microscope."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
import optimistix as optx
import pytest
from helpers import counting_engine, illumination_map, object_error, random_complex, tiny_far_field_problem

from janssen.invert import (
    OptimistixLeastSquares,
    data_residual,
    normal_cg,
    optimistix_engine,
    reconstruct,
)
from janssen.io import MicroscopeData
from janssen.optics import Probe, SampleFunction
from janssen.scopes import FarFieldMicroscope


@pytest.fixture(scope="module")
def problem():
    return tiny_far_field_problem(jax.random.PRNGKey(3))


def _error(true, microscope):
    return object_error(true.sample.sample, microscope.sample.sample, illumination_map(true))


# (solver, trainable, object error after 10 iterations, final / first loss). Measured on
# PRNGKey(3) (start error 0.137, start loss 2.440), default 20 CG steps:
#   levenberg-marquardt, object:         error 0.0143, loss 2.440 -> 0.330
#   gauss-newton,        object:         error 0.0153, loss 2.440 -> 0.332
#   dogleg,              object:         error 0.0144, loss 2.440 -> 0.326
#   levenberg-marquardt, object + probe: error 0.0169, loss 2.440 -> 0.322
CASES = [
    ("levenberg-marquardt", ["object"], 0.02, 0.15),
    ("gauss-newton", ["object"], 0.02, 0.15),
    ("dogleg", ["object"], 0.02, 0.15),
    ("levenberg-marquardt", ["object", "probe"], 0.022, 0.15),
]


@pytest.mark.parametrize("name, trainable, target, ratio", CASES, ids=["lm", "gn", "dogleg", "lm-object+probe"])
def test_converges(problem, name, trainable, target, ratio):
    data, true, start = problem
    solution = reconstruct(start, data, optimistix_engine(name), trainable=trainable, num_iterations=10)
    losses, error = np.asarray(solution.losses), _error(true, solution.microscope)
    print(name, trainable, losses, error)
    # The first iteration only evaluates the start (optimistix proposes, then evaluates).
    np.testing.assert_allclose(losses[0], data_residual(start, data), rtol=1e-4)
    assert losses[-1] < ratio * losses[0], losses
    assert error < target, error
    # The reported loss is the RMS amplitude residual of the returned microscope.
    np.testing.assert_allclose(solution.final_loss, data_residual(solution.microscope, data), rtol=1e-4)


def _small_x64_problem():
    """Nine positions of an 8x8 probe on a 12x12 object, float64, no noise: 576 residuals
    for 288 real object parameters."""
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    dx, wavelength = 1e-8, 1e-9
    probe = Probe(random_complex(keys[0], (8, 8)), wavelength, dx)
    obj = SampleFunction(1 + 0.3 * random_complex(keys[1], (12, 12)), dx)
    grid = jnp.array([-2.0, 0.0, 2.0])
    positions = jnp.stack(jnp.meshgrid(grid, grid), -1).reshape(-1, 2) * dx
    true = FarFieldMicroscope(probe, obj, positions)
    start = eqx.tree_at(lambda m: m.sample.sample, true, jnp.ones((12, 12), jnp.complex128))
    data = MicroscopeData(jax.jit(lambda m: m())(true), positions, wavelength, wavelength / (8 * dx), 1.0)
    return data, start


@jax.jit
def _dense_gauss_newton_step(data, start):
    """`argmin |J d + r|` (minimum norm) by a dense `jax.jacfwd` Jacobian, written without
    the engine's code: object pixels as (real, imag) pairs, `eps` as documented."""
    eps = 1e-6 * jnp.mean(data.intensities)

    def residual(flat):
        pairs = flat.reshape(12, 12, 2)
        microscope = eqx.tree_at(lambda m: m.sample.sample, start, pairs[..., 0] + 1j * pairs[..., 1])
        return (jnp.sqrt(microscope() + eps) - jnp.sqrt(data.intensities)).ravel()

    obj = start.sample.sample
    flat = jnp.stack([obj.real, obj.imag], -1).ravel()
    jacobian = jax.jacfwd(residual)(flat)  # (576, 288)
    step = jnp.linalg.lstsq(jacobian, -residual(flat))[0]
    return step.reshape(12, 12, 2)


def test_gauss_newton_step_matches_dense_least_squares(x64):
    """The complex-to-real adapter, the residuals and the matrix-free solve together: one
    `optx.GaussNewton` step equals the dense least-squares step."""
    data, start = _small_x64_problem()
    engine = OptimistixLeastSquares(optx.GaussNewton(rtol=1e-8, atol=1e-8, linear_solver=normal_cg(300)))
    # Iteration 1 evaluates the start and proposes the step; iteration 2 takes it (GN
    # accepts every step).
    solution = reconstruct(start, data, engine, trainable=["object"], num_iterations=2)
    assert solution.microscope.sample.sample.dtype == jnp.complex128
    taken = solution.microscope.sample.sample - start.sample.sample
    dense = _dense_gauss_newton_step(data, start)
    expected = dense[..., 0] + 1j * dense[..., 1]
    print(np.abs(taken - expected).max(), np.abs(expected).max())
    # Measured: max difference 1e-14 for a step whose largest pixel change is 1.44.
    np.testing.assert_allclose(np.asarray(taken), np.asarray(expected), rtol=0, atol=1e-10)


def test_resume_equals_one_run_and_compiles_once(problem):
    data, _, start = problem
    engine, traces = counting_engine(optimistix_engine("levenberg-marquardt"))
    five = reconstruct(start, data, engine, trainable=["object"], num_iterations=5)
    three = reconstruct(start, data, engine, trainable=["object"], num_iterations=3)
    more = reconstruct(three, data, engine, num_iterations=2)
    # One trace for every call: the state carries no jaxpr, so nothing differs between runs.
    assert len(traces) == 1, len(traces)
    assert more.iteration == 5
    assert all(eqx.is_array(leaf) for leaf in jtu.tree_leaves(five.state))
    for a, b in zip(jtu.tree_leaves((five.microscope, five.state)), jtu.tree_leaves((more.microscope, more.state))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(five.losses), np.asarray(more.losses))


def test_validation():
    with pytest.raises(ValueError, match="name"):
        optimistix_engine("newton")
    with pytest.raises(ValueError, match="cg_max_steps"):
        optimistix_engine("dogleg", cg_max_steps=0)
    with pytest.raises(ValueError, match="rtol"):
        optimistix_engine("gauss-newton", rtol=-1.0)
    with pytest.raises(ValueError, match="solver"):
        OptimistixLeastSquares(optx.BFGS(rtol=1e-6, atol=1e-6))
    with pytest.raises(ValueError, match="eps"):
        OptimistixLeastSquares(eps=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        normal_cg(0)
    # The default: Levenberg-Marquardt, matrix-free.
    default = OptimistixLeastSquares().solver
    assert isinstance(default, optx.LevenbergMarquardt)
    assert isinstance(default.descent.linear_solver, lx.Normal)
