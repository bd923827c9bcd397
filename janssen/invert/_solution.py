"""`Solution`: what `reconstruct` returns, and what it takes to resume."""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..scopes._base import AbstractMicroscope
from ._results import RESULTS


class Solution(eqx.Module):
    """The outcome of `reconstruct`.

    Pass it back to `reconstruct` in place of a microscope to continue the run: the
    engine state (momentum, optimizer moments, damping), the iteration counter and the
    random key carry over, so N + M iterations in two calls equal N + M in one.

    **Attributes:**

    - `microscope`: the refined microscope.
    - `state`: the engine's state after the last completed iteration.
    - `losses`: `(iterations,)` RMS amplitude residual of every completed iteration.
    - `iteration`: number of completed iterations over all calls.
    - `result`: a `RESULTS` code; `RESULTS[solution.result]` explains it.
    - `key`: the base PRNG key (iteration `i` uses `jax.random.fold_in(key, i)`).
    - `trainable`: the boolean filter spec that was refined.
    - `snapshots`: `(iteration, microscope)` pairs kept every `save_every` iterations.
    """

    microscope: AbstractMicroscope
    state: Any
    losses: Float[Array, " iterations"]
    iteration: int = eqx.field(static=True)
    result: RESULTS
    key: PRNGKeyArray
    trainable: Any = eqx.field(static=True)
    snapshots: tuple = ()

    @property
    def final_loss(self) -> float:
        """The last recorded loss (NaN when none was recorded)."""
        # On the host: indexing the device array compiled a slice for every new length
        # (about 1.1 MB kept and 40 ms each; a streamed run asks after every batch).
        losses = np.asarray(self.losses)
        return float(losses[-1]) if losses.size else float("nan")


def empty_losses() -> Float[Array, " 0"]:
    return jnp.zeros((0,), dtype=jnp.result_type(float))


def losses_array(values: Sequence[float], dtype: Any = None) -> Float[Array, " n"]:
    """Losses kept on the host as a device array (default dtype: JAX's default float).

    A transfer: `jnp.asarray` of a Python list compiles a program for every new length
    (about 1.4 MB and 40 ms each on the CPU), which a run that hands out its losses once
    an epoch or a batch would pay, and keep, every time.
    """
    return jax.device_put(np.asarray(values, dtype=jnp.result_type(float) if dtype is None else dtype))
