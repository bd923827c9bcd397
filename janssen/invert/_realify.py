"""Complex leaves as real pairs: the one adapter between complex parameters and real solvers.

Linear solvers such as conjugate gradients need an operator that is linear over the
reals and symmetric positive semi-definite. A residual that depends on `z` through
`|.|` (an amplitude) is not complex-analytic in `z`, so its Jacobian is only *real*
linear in `z = x + iy`. Viewing each complex leaf as a real array with a trailing axis
of length 2, `(..., 2) = (x, y)`, makes every Jacobian an ordinary real matrix, and
`J^T J` a genuine symmetric PSD operator on that real vector space.

`to_real` and `from_real` are inverse to each other; real leaves, non-array leaves and
the `None` holes of an `equinox.partition` pass through unchanged.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu


def _is_complex(leaf: Any) -> bool:
    return eqx.is_array(leaf) and jnp.iscomplexobj(leaf)


def _split(leaf: Any) -> Any:
    if _is_complex(leaf):
        return jnp.stack([leaf.real, leaf.imag], axis=-1)
    return leaf


def _join(leaf: Any, like: Any) -> Any:
    if _is_complex(like):
        # `lax.complex` keeps the precision (float32 pairs -> complex64) and is linear.
        return jax.lax.complex(leaf[..., 0], leaf[..., 1]).astype(like.dtype)
    return leaf


def to_real(tree: Any) -> Any:
    """The same PyTree with each complex leaf `z` replaced by `stack([z.real, z.imag], -1)`.

    **Arguments:**

    - `tree`: any PyTree (e.g. the trainable part of a microscope).

    **Returns:**

    A PyTree of the same structure whose array leaves are all real; a complex leaf of
    shape `s` becomes a real leaf of shape `(*s, 2)` of the matching precision.
    """
    return jtu.tree_map(_split, tree)


def from_real(tree: Any, like: Any) -> Any:
    """Undo `to_real`: rebuild complex leaves wherever `like` has them.

    **Arguments:**

    - `tree`: a PyTree as returned by `to_real(like)` (or any PyTree of that shape, such
      as a step or a tangent in the real representation).
    - `like`: the original PyTree; only which leaves are complex, and their dtype, is used.

    **Returns:**

    A PyTree with the structure, shapes and dtypes of `like`.
    """
    return jtu.tree_map(_join, tree, like)
