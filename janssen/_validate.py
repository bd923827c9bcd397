"""Validation helpers: clear `ValueError`s at construction time.

Checks on *values* run only when the value is concrete (not a tracer), so the same
constructor can be used inside `jax.jit` without host round-trips. Checks on shapes
and dtypes always run, as shapes are static.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when `x` holds actual values (not an abstract tracer)."""
    return not isinstance(x, jax.core.Tracer)


def _describe(x: Any) -> str:
    arr = np.asarray(x)
    if arr.size <= 4:
        return repr(arr.tolist())
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return f"an array of shape {arr.shape} with no finite element"
    return f"an array of shape {arr.shape} (finite values from {finite.min():.3g} to {finite.max():.3g})"


def real_array(name: str, value: Any, *, shape: tuple[int, ...] | None = None) -> jax.Array:
    """Convert to a floating JAX array (float32 unless x64 is on), checking its shape."""
    if np.iscomplexobj(value):
        raise ValueError(f"`{name}` must be real, got a complex value of dtype {np.asarray(value).dtype}")
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    if shape is not None and arr.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape}, got shape {arr.shape}")
    return arr


def complex_array(name: str, value: Any, *, ndim: int | None = None) -> jax.Array:
    """Convert to a complex JAX array (complex64 unless x64 is on), checking its rank."""
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.complexfloating):
        arr = arr.astype(jnp.result_type(complex))
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"`{name}` must be a {ndim}-d array, got shape {arr.shape}")
    return arr


def pair(name: str, value: Any) -> jax.Array:
    """A (x, y) pair from a scalar (same value in both) or a 2-vector."""
    arr = real_array(name, value)
    if arr.ndim == 0:
        return jnp.stack([arr, arr])
    if arr.shape != (2,):
        raise ValueError(f"`{name}` must be a scalar or an (x, y) pair of shape (2,), got shape {arr.shape}")
    return arr


def optional_pair(name: str, value: Any) -> jax.Array | None:
    """`pair(name, value)`, or `None` where `value` is `None`."""
    return None if value is None else pair(name, value)


def check_positive(name: str, value: Any) -> None:
    """Raise unless every element is finite and > 0 (concrete values only)."""
    if is_concrete(value):
        arr = np.asarray(value)
        if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
            raise ValueError(f"`{name}` must be finite and positive, got {_describe(arr)}")


def check_finite(name: str, value: Any) -> None:
    """Raise if any element is NaN or infinite (concrete values only)."""
    if is_concrete(value):
        arr = np.asarray(value)
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"`{name}` must be finite, got {bad} NaN or infinite element(s) in {_describe(arr.real)}")


def check_nonnegative(name: str, value: Any) -> None:
    """Raise if any element is negative or not finite (concrete values only)."""
    check_finite(name, value)
    if is_concrete(value):
        arr = np.asarray(value)
        if np.any(arr < 0):
            raise ValueError(
                f"`{name}` must be non-negative, got {int(np.count_nonzero(arr < 0))} negative element(s), "
                f"minimum {arr.min():.3g}"
            )
