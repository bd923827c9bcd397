"""Complex parameters: turning JAX's gradient of a real loss into a descent direction.

For a real loss `f` of a complex parameter `z = x + iy`, the steepest-ascent direction
is `G = df/dx + i df/dy`: to first order `f(z + dz) = f(z) + Re(conj(G) dz)`, so
`z - lr * G` is the steepest-descent step and lowers `f` by `lr |G|^2`.

`jax.grad` returns the **conjugate** of `G`: it is the vector-Jacobian product with
cotangent 1, and JAX's convention for complex cotangents makes it `df/dx - i df/dy`.
For example, for `f(z) = |z|^2` it returns `2 conj(z)`, and for `f(z) = |a z - b|^2` it
returns `2 a conj(a z - b)`, whereas `G = 2 conj(a) (a z - b)`. Stepping along the raw
gradient, `z - lr * jax.grad(f)(z)`, moves the real part correctly but the imaginary
part the wrong way, and in general does not descend.

`descent_gradient` is the one place janssen converts: it conjugates complex leaves and
leaves real ones alone (for a real leaf `jax.grad` already returns `G`). Every
gradient-based engine passes its gradients through it before the optimizer.
"""

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu


def _conjugate_complex(leaf: Any) -> Any:
    if eqx.is_array(leaf) and jnp.iscomplexobj(leaf):
        return jnp.conj(leaf)
    return leaf


def descent_gradient(grads: Any) -> Any:
    """The gradient `G = df/dx + i df/dy` from `jax.grad`'s output, leaf by leaf.

    `z - lr * G` is a steepest-descent step for every leaf: complex leaves are
    conjugated, real leaves (and non-array leaves, `None` holes of a partition) pass
    through unchanged. Hand the result to an `optax` optimizer as its gradient.

    **Arguments:**

    - `grads`: a PyTree as returned by `jax.grad` / `eqx.filter_grad` of a real loss.

    **Returns:**

    A PyTree of the same structure whose negative is the steepest-descent direction;
    its directional derivative along `-G` is `-sum |G|^2`.
    """
    return jtu.tree_map(_conjugate_complex, grads)
