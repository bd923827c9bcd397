"""Small shared helpers for the tests."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """True when two PyTrees have the same structure and all leaves are close."""
    xl, xs = jtu.tree_flatten(x)
    yl, ys = jtu.tree_flatten(y)
    if xs != ys:
        return False
    return all(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol) for a, b in zip(xl, yl))


def random_complex(key, shape, dtype=None):
    """A complex Gaussian random array."""
    kr, ki = jax.random.split(key)
    dtype = dtype or jnp.result_type(float)
    return jax.random.normal(kr, shape, dtype) + 1j * jax.random.normal(ki, shape, dtype)


def gaussian_probe(shape, sigma_px, phase_curvature=0.0):
    """A Gaussian probe with an optional quadratic phase, on a centred grid."""
    y = jnp.arange(shape[0]) - shape[0] // 2
    x = jnp.arange(shape[1]) - shape[1] // 2
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    return jnp.exp(-r2 / (2 * sigma_px**2)) * jnp.exp(1j * phase_curvature * r2)
