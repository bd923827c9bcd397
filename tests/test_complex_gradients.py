"""Complex gradients: JAX's convention, and the one conversion to a descent direction."""

import jax
import jax.numpy as jnp
import numpy as np

from janssen.invert._complex import descent_gradient


def _problem(dtype):
    """f(z) = mean |a z - b|^2 with complex a, and a point where conjugation matters.

    At `z0` the residual is `a z0 - b = i c / conj(a)`, so the true gradient
    `G = 2 conj(a) (a z0 - b) / n = 2 i c / n` is purely imaginary: JAX's raw gradient
    `conj(G)` then points the imaginary parts the wrong way.
    """
    a = jnp.array([1.0 + 2.0j, -0.5 + 1.5j, 2.0 - 1.0j], dtype)
    b = jnp.array([0.3 - 1.0j, 1.0 + 0.5j, -2.0 + 0.0j], dtype)
    c = jnp.array([0.7, -1.2, 0.4], a.real.dtype)
    z0 = (b + 1j * c / jnp.conj(a)) / a

    def f(z):
        r = a * z - b
        return jnp.mean(r.real**2 + r.imag**2)

    return f, z0, a, b


def test_jax_grad_is_conjugate_of_steepest_ascent():
    z = jnp.array(1.0 + 2.0j)
    # f = |z|^2 = x^2 + y^2: df/dx + i df/dy = 2z; JAX returns 2 conj(z).
    np.testing.assert_allclose(jax.grad(lambda z: jnp.abs(z) ** 2)(z), 2 * jnp.conj(z), rtol=1e-6)
    np.testing.assert_allclose(descent_gradient(jax.grad(lambda z: jnp.abs(z) ** 2)(z)), 2 * z, rtol=1e-6)


def test_converted_gradient_matches_partial_derivatives(x64):
    f, z0, a, b = _problem(jnp.complex128)
    g = descent_gradient(jax.grad(f)(z0))
    np.testing.assert_allclose(g, 2 * jnp.conj(a) * (a * z0 - b) / 3, rtol=1e-12)
    h = 1e-6
    for k in range(3):
        e = jnp.zeros(3, jnp.complex128).at[k].set(1.0)
        dfdx = (f(z0 + h * e) - f(z0 - h * e)) / (2 * h)
        dfdy = (f(z0 + 1j * h * e) - f(z0 - 1j * h * e)) / (2 * h)
        np.testing.assert_allclose(g[k], dfdx + 1j * dfdy, rtol=1e-7)


def test_converted_step_descends_raw_step_ascends():
    f, z0, _, _ = _problem(jnp.complex64)
    raw = jax.grad(f)(z0)
    lr = 1e-2
    f0 = float(f(z0))
    descended = float(f(z0 - lr * descent_gradient(raw)))
    raw_step = float(f(z0 - lr * raw))
    # First order: converted changes f by -lr |G|^2, raw by +lr |G|^2 here (G imaginary).
    g2 = float(jnp.sum(jnp.abs(raw) ** 2))
    assert descended < f0 - 0.9 * lr * g2, (f0, descended, g2)
    assert raw_step > f0 + 0.9 * lr * g2, (f0, raw_step, g2)


def test_directional_derivative_is_minus_norm_squared(x64, getkey):
    """Mixed tree (complex and real leaves): d/dt f(p - t G) at t=0 equals -||G||^2."""
    f_c, z0, _, _ = _problem(jnp.complex128)
    w = jax.random.normal(getkey(), (4,), jnp.float64)

    def f(p):
        return f_c(p["z"]) + jnp.sum((p["w"] - 3.0) ** 2 * jnp.arange(1.0, 5.0))

    params = {"z": z0, "w": w}
    g = descent_gradient(jax.grad(f)(params))
    np.testing.assert_array_equal(g["w"], jax.grad(f)(params)["w"])  # real leaves pass through
    norm2 = sum(float(jnp.sum(jnp.abs(leaf) ** 2)) for leaf in jax.tree_util.tree_leaves(g))
    h = 1e-6
    step = lambda t: jax.tree_util.tree_map(lambda p, d: p - t * d, params, g)  # noqa: E731
    fd = (float(f(step(h))) - float(f(step(-h)))) / (2 * h)
    np.testing.assert_allclose(fd, -norm2, rtol=1e-7)


def test_non_arrays_and_holes_pass_through():
    tree = {"a": None, "b": 3, "c": jnp.array([1.0 - 1.0j]), "d": jnp.array([2.0])}
    out = descent_gradient(tree)
    assert out["a"] is None and out["b"] == 3
    np.testing.assert_array_equal(out["c"], jnp.array([1.0 + 1.0j]))
    np.testing.assert_array_equal(out["d"], jnp.array([2.0]))
