"""`quick_jit`: compilation options for the small functions the driver and engines call once per iteration."""

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.random as jr

# XLA options for small functions that run once per iteration or once per run (the
# iteration's PRNG key, an engine's initial state): without LLVM's optimisations and with
# XLA's classic loop emitters they compile in a fraction of the time (`jr.fold_in`: 0.04 s
# instead of 0.09 s on 2 busy cores), and on a handful of numbers they run in microseconds
# either way. Not for a step: its loops would run several times slower.
_QUICK_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_quick_options_known = [True]


def quick_jit(fun: Callable) -> Callable:
    """`eqx.filter_jit(fun)`, compiled for a short compilation rather than a fast run.

    For functions whose compilation costs far more than all their runs (see
    `_QUICK_OPTIONS`). An XLA that lacks one of the options compiles with its defaults.
    """
    quick, plain = eqx.filter_jit(fun, compiler_options=_QUICK_OPTIONS), eqx.filter_jit(fun)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        if _quick_options_known[0]:
            try:
                return quick(*args, **kwargs)
            except jax.errors.JaxRuntimeError as error:
                if "compile option" not in str(error):
                    raise
                _quick_options_known[0] = False
        return plain(*args, **kwargs)

    return call


# The driver derives each iteration's key; run op by op, `fold_in` would compile with
# the default options.
iteration_key = quick_jit(jr.fold_in)
