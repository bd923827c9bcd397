"""Predictions that skip the probe's sub-pixel move when every position is on the pixel grid.

`AbstractMicroscope.__call__(on_grid=True)` leaves the probe where it is (one FFT per
position fewer). It is exact when every position is on the sample's grid, and the engines
that predict whole frames (`GaussNewton`, `OptimistixLeastSquares`, `Gradient`) use it only
when `fixed_on_grid` says the positions are there and stay there.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from helpers import tiny_far_field_problem

from janssen.invert import CurvatureSearch, GaussNewton, Gradient, OptimistixLeastSquares, reconstruct, trainable_spec
from janssen.invert._realify import from_real, to_real
from janssen.invert._residual import residual_function
from janssen.invert._trainable import fixed_on_grid
from janssen.optics import SampleFunction


@pytest.fixture(scope="module")
def on_grid_problem():
    return tiny_far_field_problem(jax.random.PRNGKey(3))


@pytest.fixture(scope="module")
def subpixel_problem():
    return tiny_far_field_problem(jax.random.PRNGKey(4), subpixel=True)


def _relative(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def test_on_grid_prediction_equals_the_shifted_one_on_the_grid(on_grid_problem):
    _, true, _ = on_grid_problem
    assert true.on_grid()
    # A zero shift through an FFT and back changes float32 values by rounding only.
    assert _relative(true(on_grid=True), true()) < 1e-5
    indices = jnp.array([0, 3, 7])
    assert _relative(true.predict(indices, on_grid=True), true.predict(indices)) < 1e-5


def test_off_the_grid_the_shortcut_would_be_wrong_and_is_not_taken(subpixel_problem):
    data, true, start = subpixel_problem
    assert not true.on_grid()
    # Up to a pixel of jitter: skipping the move changes the frames by far more than rounding.
    assert _relative(true(on_grid=True), true()) > 1e-2
    for trainable in (["object"], ["object", "probe"]):
        assert not fixed_on_grid(start, trainable_spec(start, trainable))


def test_a_periodic_sample_is_never_on_the_grid(on_grid_problem):
    _, true, _ = on_grid_problem
    periodic = eqx.tree_at(lambda m: m.sample, true, SampleFunction(true.sample.sample, true.sample.dx, periodic=True))
    assert not periodic.on_grid()


def test_refined_positions_or_pixel_keep_the_shift(on_grid_problem):
    _, _, start = on_grid_problem
    assert fixed_on_grid(start, trainable_spec(start, ["object", "probe"]))
    assert not fixed_on_grid(start, trainable_spec(start, ["object", "positions"]))
    assert not fixed_on_grid(start, trainable_spec(start, ["object", "sample.dx"]))
    # Tolerance in pixels: positions moved by 0.01 pixel are off a 1e-3 grid, on a 0.1 one.
    nudged = eqx.tree_at(lambda m: m.positions, start, start.positions + 0.01 * start.sample.dx[None])
    assert not nudged.on_grid() and nudged.on_grid(0.1)


def test_the_residual_its_jacobian_and_the_gradient_agree(on_grid_problem):
    data, _, start = on_grid_problem
    spec = trainable_spec(start, ["object", "probe"])
    params, static = eqx.partition(start, spec)
    x = to_real(params)
    residuals = [residual_function(static, params, data, 1e-6, on_grid=flag)(x)[0] for flag in (True, False)]
    assert _relative(*residuals) < 1e-5  # measured 4e-7
    # The Jacobian of the predicted intensities, both ways. (The residual's own Jacobian
    # divides by the predicted amplitude, which makes dark pixels' rounding count.)
    linearised = [
        jax.linearize(lambda y, flag=flag: eqx.combine(from_real(y, params), static)(on_grid=flag), x)
        for flag in (True, False)
    ]
    tangent = jax.tree_util.tree_map(lambda leaf: jnp.cos(0.1 * jnp.arange(leaf.size).reshape(leaf.shape)), x)
    assert _relative(*(jvp(tangent) for _, jvp in linearised)) < 1e-5
    cotangent = jnp.sqrt(data.intensities)
    back = [jax.linear_transpose(jvp, x)(cotangent)[0] for _, jvp in linearised]
    for a, b in zip(*(jax.tree_util.tree_leaves(tree) for tree in back), strict=True):
        assert _relative(a, b) < 1e-4  # measured 1e-5 and 3e-6
    # `Gradient` differentiates `predict` of a minibatch.
    indices = jnp.arange(0, 25, 3)

    def loss(p, on_grid):
        predicted = eqx.combine(p, static).predict(indices, on_grid=on_grid)
        return jnp.sum((predicted - data.intensities[indices]) ** 2)

    grads = [jax.grad(loss)(params, flag) for flag in (True, False)]
    for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in grads), strict=True):
        assert _relative(a, b) < 1e-4


@pytest.mark.parametrize(
    "engine",
    [GaussNewton(), Gradient(batch_size=5, sweep=True), OptimistixLeastSquares()],
    ids=["gauss-newton", "gradient", "optimistix"],
)
def test_engines_decide_once_from_the_selection(on_grid_problem, subpixel_problem, engine):
    data, _, start = on_grid_problem
    assert engine.init(start, data, trainable_spec(start, ["object", "probe"])).on_grid
    assert not engine.init(start, data, trainable_spec(start, ["object", "positions"])).on_grid
    sub_data, _, sub_start = subpixel_problem
    assert not engine.init(sub_start, sub_data, trainable_spec(sub_start, ["object", "probe"])).on_grid
    solution = reconstruct(start, data, engine, trainable=["object", "probe"], num_iterations=2)
    assert solution.state.on_grid


def test_a_gauss_newton_step_is_the_same_step(on_grid_problem):
    data, _, start = on_grid_problem
    spec = trainable_spec(start, ["object", "probe"])
    # Few CG iterations: a long CG run amplifies float32 rounding (measured: 32 iterations
    # 4e-3 apart, 3 iterations 2.4e-4).
    engine = GaussNewton(cg_maxiter=3)
    state = engine.init(start, data, spec)
    key = jax.random.PRNGKey(0)
    step = eqx.filter_jit(engine.step)
    fast, _, fast_loss = step(start, state, data, spec, key)
    slow, _, slow_loss = step(start, dataclasses.replace(state, on_grid=False), data, spec, key)
    moved = slow.sample.sample - start.sample.sample
    assert float(jnp.linalg.norm(moved)) > 0.1 * float(jnp.linalg.norm(start.sample.sample)) ** 0  # a real step
    assert _relative(fast.sample.sample - start.sample.sample, moved) < 2e-3
    assert abs(float(fast_loss) - float(slow_loss)) < 1e-4 * float(slow_loss)


def test_the_curvature_search_decides_the_same_way(on_grid_problem, subpixel_problem):
    data, _, start = on_grid_problem
    engine = CurvatureSearch()
    spec = trainable_spec(start, ["object", "probe"])
    state = engine.init(start, data, spec)
    assert state.on_grid
    sub_data, _, sub_start = subpixel_problem
    assert not engine.init(sub_start, sub_data, trainable_spec(sub_start, ["object", "probe"])).on_grid
    # One step both ways: the same 3 x 3 fit, so the same loss to rounding.
    step = eqx.filter_jit(engine.step)
    key = jax.random.PRNGKey(0)
    _, _, fast = step(start, state, data, spec, key)
    _, _, slow = step(start, dataclasses.replace(state, on_grid=False), data, spec, key)
    assert abs(float(fast) - float(slow)) < 1e-5 * float(slow)
