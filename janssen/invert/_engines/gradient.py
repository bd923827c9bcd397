"""`Gradient`: reconstruction by automatic differentiation and an `optax` optimizer.

Every trainable leaf of the microscope (object, probe, positions, any optical element's
array fields) is refined by the same code: the loss of the predicted intensities is
differentiated with `jax.value_and_grad`, complex gradients are conjugated into descent
directions (`janssen.invert._complex`), and the optimizer steps.

References:

- P. Thibault and M. Guizar-Sicairos, "Maximum-likelihood refinement for coherent
  diffractive imaging", New J. Phys. 14, 063004 (2012).
- S. Kandel, S. Maddali, M. Allain, S. O. Hruszkewycz, C. Jacobsen and Y. S. G. Nashed,
  "Using automatic differentiation as a general framework for ptychographic
  reconstruction", Opt. Express 27, 18653 (2019).
- Adam: D. P. Kingma and J. Ba, "Adam: a method for stochastic optimization", ICLR (2015).
"""

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax

from ..._data import MicroscopeData
from ...scopes._base import AbstractMicroscope
from .._complex import descent_gradient
from .._losses import AbstractLoss, AmplitudeLoss, as_loss
from .._trainable import _expand, _get, fixed_on_grid
from .base import AbstractFixedLengthEngine

# Adam moves every parameter by about the learning rate per iteration, whatever the
# gradient's scale; 0.02 suits an object of unit amplitude (see the class docstring).
DEFAULT_LEARNING_RATE = 0.02
_DEFAULT_LABEL = "__default__"


class GradientState(eqx.Module):
    """State of the `Gradient` engine: the optimizer's state over the trainable leaves.

    `on_grid`: whether the positions stay on the sample's pixel grid for the whole run, so
    that the predictions skip the probe's sub-pixel moves (decided in `init`, on the host:
    `janssen.invert._trainable.fixed_on_grid`).
    """

    opt_state: Any
    on_grid: bool = eqx.field(default=False, static=True)


def _path_of(key_path) -> str:
    return jtu.keystr(key_path).lstrip(".")


def _label_of(path: str, rules: list[tuple[str, str]]) -> str:
    """The name whose path is the longest prefix of `path` (`rules`: (path, name) pairs)."""
    matches = [(len(p), name) for p, name in rules if path == p or path.startswith(p + ".")]
    return max(matches)[1] if matches else _DEFAULT_LABEL


def _labels(params: Any, microscope: AbstractMicroscope, learning_rates: dict[str, float]) -> Any:
    """A PyTree like `params` holding, for each trainable leaf, the name of its rate."""
    rules = []
    for name in learning_rates:
        for path in _expand([name], microscope):
            _get(microscope, path)  # raises ValueError for a path the microscope lacks
            rules.append((path, name))
    return jtu.tree_map_with_path(lambda kp, _: _label_of(_path_of(kp), rules), params)


class Gradient(AbstractFixedLengthEngine[GradientState]):
    """Gradient-based refinement with an `optax` optimizer (default: Adam).

    Each iteration predicts the intensities (`vmap` of the one-position forward model,
    over all positions or a random minibatch), evaluates `loss` over the valid pixels,
    differentiates it with respect to the trainable leaves, conjugates the gradients of
    complex leaves (so that the optimizer descends) and applies the optimizer's update.
    The reported loss is the RMS amplitude residual of the same prediction (before the
    update), whatever `loss` is minimised.

    **Arguments:**

    - `optimizer`: an `optax.GradientTransformation`. Default `optax.adam(0.02)`: Adam
      moves each parameter by roughly its learning rate per iteration, so 0.02 suits an
      object of unit amplitude; parts on another scale (a probe of amplitude ~30, or
      positions in metres) need their own rates.
    - `loss`: an `AbstractLoss` or its name (`"amplitude"`, `"intensity"`, `"poisson"`,
      `"mae"`, `"mse"`, `"rmse"`); default `AmplitudeLoss()`.
    - `learning_rates`: per-part factors on the optimizer's step, keyed by trainable
      names (`"object"`, `"probe"`, `"positions"`, … as in `trainable=`) or dotted
      paths (`"aperture.diameter"`). Each named part gets its own copy of `optimizer`
      followed by `optax.scale(rate)` (through `optax.multi_transform`); parts not named
      keep factor 1. For Adam or SGD, a factor is exactly a learning rate multiplier:
      `Gradient(optax.adam(0.02), learning_rates={"probe": 50.0, "positions": 1e-8})`
      runs the object at 0.02, the probe at 1.0 and the positions at 2e-10 m. A factor
      of 0 freezes a part. With the optimizer built at rate 1 (`optax.adam(1.0)`), the
      factors are absolute learning rates.
    - `batch_size`: positions per iteration; `None` (default) uses them all. Otherwise
      each iteration draws a random minibatch (without replacement) with its key, and
      reports the residual over that minibatch.
    - `sweep`: with a `batch_size`, make each iteration an epoch: the positions are
      shuffled with the iteration's key and split into `num_positions // batch_size`
      minibatches (the few left over sit out this epoch, others the next), and the
      optimizer steps once per minibatch, in a `lax.scan`. This is how automatic-
      differentiation ptychography codes usually count iterations, and it gives Adam
      many small steps per pass over the data, as the sequential PIE engines take. The
      reported residual is the RMS over the epoch's minibatches, each taken before its
      own step. Default `False` (one minibatch per iteration).
    """

    models_detector: ClassVar[bool] = True

    optimizer: optax.GradientTransformation = optax.adam(DEFAULT_LEARNING_RATE)
    loss: AbstractLoss = eqx.field(default=AmplitudeLoss(), converter=as_loss)
    learning_rates: dict[str, float] | None = None
    batch_size: int | None = eqx.field(default=None, static=True)
    sweep: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise ValueError(f"`batch_size` must be None or an integer >= 1, got {self.batch_size!r}")
        if self.sweep and self.batch_size is None:
            raise ValueError("`sweep=True` needs a `batch_size` (the positions per optimizer step), got None")
        for name, rate in (self.learning_rates or {}).items():
            if not isinstance(name, str):
                raise ValueError(f"`learning_rates` keys must be trainable names (str), got {name!r}")
            if not (np.isfinite(rate) and rate >= 0):
                raise ValueError(f"`learning_rates[{name!r}]` must be finite and >= 0, got {rate}")

    def _transform(self, params: Any, microscope: AbstractMicroscope) -> optax.GradientTransformation:
        if not self.learning_rates:
            return self.optimizer
        transforms = {_DEFAULT_LABEL: self.optimizer}
        for name, rate in self.learning_rates.items():
            transforms[name] = optax.chain(self.optimizer, optax.scale(rate))
        labels = _labels(params, microscope, self.learning_rates)
        # As a function: optax would call a label tree that is itself callable (a microscope).
        return optax.multi_transform(transforms, lambda _: labels)

    def _minibatch(self, key, num_positions: int):
        if self.batch_size is None:
            return None
        return jr.choice(key, num_positions, (self.batch_size,), replace=False)

    def init(self, microscope: AbstractMicroscope, data: MicroscopeData, trainable: Any) -> GradientState:
        if self.batch_size is not None and self.batch_size > data.num_positions:
            raise ValueError(
                f"`batch_size` must be at most the number of positions ({data.num_positions}), got {self.batch_size}"
            )
        params = eqx.filter(microscope, trainable)
        return GradientState(self._transform(params, microscope).init(params), fixed_on_grid(microscope, trainable))

    def step(self, microscope, state, data, trainable, key):
        params, static = eqx.partition(microscope, trainable)
        transform = self._transform(params, microscope)

        def update(params, opt_state, index):
            measured = data.intensities if index is None else data.intensities[index]

            def objective(p):
                predicted = eqx.combine(p, static).predict(index, on_grid=state.on_grid)
                residual = AmplitudeLoss()(jax.lax.stop_gradient(predicted), measured, data.valid)
                return self.loss(predicted, measured, data.valid), residual

            (_, residual), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, opt_state = transform.update(descent_gradient(grads), opt_state, params)
            return eqx.apply_updates(params, updates), opt_state, residual

        if self.sweep:
            num_batches = microscope.num_positions // self.batch_size
            order = jr.permutation(key, microscope.num_positions)[: num_batches * self.batch_size]

            def body(carry, index):
                params, opt_state, residual = update(*carry, index)
                return (params, opt_state), residual

            (params, opt_state), residuals = jax.lax.scan(
                body, (params, state.opt_state), order.reshape(num_batches, self.batch_size)
            )
            residual = jnp.mean(residuals)
        else:
            index = self._minibatch(key, microscope.num_positions)
            params, opt_state, residual = update(params, state.opt_state, index)
        return eqx.combine(params, static), GradientState(opt_state, state.on_grid), jnp.sqrt(residual)
