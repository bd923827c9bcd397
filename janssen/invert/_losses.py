"""Losses (noise models) comparing predicted and measured data, with bad pixels masked.

Every loss is the average of a per-pixel misfit over the **valid** pixels of every frame:
`sum(valid * misfit) / sum(valid)`, with `valid` (1 = counts, 0 = bad pixel) broadcast
over the leading (frame) axes. A masked pixel therefore contributes nothing, whatever
its value, and the loss does not depend on how many pixels are masked.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.scipy.special as jss
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Inexact, Real, Shaped

from ._residual import amplitude_difference, safe_sqrt


def _modulus(x: Array) -> Array:
    """`|x|`, with a finite gradient at 0 for complex `x` too."""
    if jnp.iscomplexobj(x):
        return safe_sqrt(x.real**2 + x.imag**2)
    return jnp.abs(x)


def _masked_mean(misfit: Array, valid: Array | None) -> Float[Array, ""]:
    """The one reduction of every loss: `sum(valid * misfit) / sum(valid)` (the plain mean for `None`).

    `valid` is broadcast over the leading (frame) axes of the per-pixel `misfit`.
    """
    if valid is None:
        return jnp.mean(misfit)
    weights = jnp.broadcast_to(jnp.asarray(valid, misfit.dtype), misfit.shape)
    return jnp.sum(weights * misfit) / jnp.sum(weights)


class AbstractLoss(eqx.Module):
    """A scalar misfit between predicted and measured data.

    Called as `loss(predicted, measured, valid)`: `predicted` and `measured` have the
    same shape `(..., y, x)` (for ptychography: intensities of every frame), `valid`
    weights the pixels (`(y, x)`, broadcast over the frames; 1 = use, 0 = bad pixel) or
    is `None` (every pixel counts). The result is averaged over the valid pixels.
    """

    @abc.abstractmethod
    def __call__(
        self,
        predicted: Inexact[Array, "*shape"],
        measured: Real[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        """The loss, averaged over valid pixels."""


class AmplitudeLoss(AbstractLoss):
    """Gaussian noise on amplitudes: the mean of `(sqrt(I_measured) - sqrt(I_predicted))^2`.

    The square root of this loss is the RMS amplitude residual every engine reports. It
    is the standard, well-conditioned choice for photon-counting data: its curvature
    does not grow with the counts, unlike `IntensityLoss`. Negative measured values
    (after background subtraction) count as zero.
    """

    def __call__(
        self,
        predicted: Float[Array, "*shape"],
        measured: Real[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        return _masked_mean(amplitude_difference(predicted, measured) ** 2, valid)


class IntensityLoss(AbstractLoss):
    """Gaussian noise of uniform variance on intensities: the mean of `(I_predicted - I_measured)^2`.

    The same value as `MSELoss` on intensities; named for what it models. Bright pixels
    dominate it, so it suits data whose noise does not grow with the signal.
    """

    def __call__(
        self,
        predicted: Float[Array, "*shape"],
        measured: Real[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        return _masked_mean((predicted - measured) ** 2, valid)


class PoissonLoss(AbstractLoss):
    """Poisson noise: the negative log-likelihood of the counts, less its minimum.

    With `lam = I_predicted + floor` and `n = I_measured` (negatives count as 0), the
    per-pixel misfit is `lam - n - n log(lam / n)` (with `0 log 0 = 0`): the Poisson
    negative log-likelihood `lam - n log lam` up to a constant, shifted so that a
    perfect fit scores 0. Its gradient in `I_predicted` is `1 - n / lam`.

    **Arguments:**

    - `floor`: added to the predicted intensity so that the logarithm stays finite
      where the model is dark (in the data's units, default `1e-2` counts). It moves
      the minimum to `I_predicted = I_measured - floor`, far below a count's noise, and
      it bounds the gradient in the field of a dark pixel with `n` counts by about
      `n / sqrt(floor)`. A much smaller floor lets pixels the model predicts dark but
      where the data have counts (outside the probe's pupil, from a unit-object start)
      drive the gradient with their rounding noise: on a 100-frame test scan (976 counts
      a pixel) Adam reached object error 0.0070 from the unit object but 0.113 from the
      same start perturbed by 1e-6 with `floor=1e-6`; 0.0079 from both with `1e-2`
      (`tests/test_detector_terms.py`).
    """

    floor: float = 1e-2

    def __check_init__(self):
        if not (np.isfinite(self.floor) and self.floor > 0):
            raise ValueError(f"`floor` must be a finite number > 0, got {self.floor}")

    def __call__(
        self,
        predicted: Float[Array, "*shape"],
        measured: Real[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        lam = jnp.maximum(predicted, 0) + self.floor
        counts = jnp.maximum(measured.astype(predicted.dtype), 0)
        misfit = lam - counts + jss.xlogy(counts, counts) - jss.xlogy(counts, lam)
        return _masked_mean(misfit, valid)


class MAELoss(AbstractLoss):
    """Mean absolute error `mean |predicted - measured|` (complex predictions allowed)."""

    def __call__(
        self,
        predicted: Inexact[Array, "*shape"],
        measured: Shaped[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        return _masked_mean(_modulus(predicted - measured), valid)


class MSELoss(AbstractLoss):
    """Mean squared error `mean |predicted - measured|^2` (complex predictions allowed)."""

    def __call__(
        self,
        predicted: Inexact[Array, "*shape"],
        measured: Shaped[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        return _masked_mean(_modulus(predicted - measured) ** 2, valid)


class RMSELoss(AbstractLoss):
    """Root mean squared error `sqrt(mean |predicted - measured|^2)`; its gradient is 0 at a perfect fit."""

    def __call__(
        self,
        predicted: Inexact[Array, "*shape"],
        measured: Shaped[Array, "*shape"],
        valid: Real[Array, "..."] | None = None,
    ) -> Float[Array, ""]:
        return safe_sqrt(MSELoss()(predicted, measured, valid))


_LOSSES: dict[str, Callable[[], AbstractLoss]] = {
    "amplitude": AmplitudeLoss,
    "intensity": IntensityLoss,
    "poisson": PoissonLoss,
    "mae": MAELoss,
    "mse": MSELoss,
    "rmse": RMSELoss,
}


def loss_from_name(name: str) -> AbstractLoss:
    """The loss Module with default settings for a name.

    **Arguments:**

    - `name`: one of `"amplitude"`, `"intensity"`, `"poisson"`, `"mae"`, `"mse"`,
      `"rmse"` (case-insensitive).

    **Returns:**

    An `AbstractLoss`. Raises `ValueError` for any other name, listing the valid ones.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _LOSSES:
        raise ValueError(f"`loss` must be one of {sorted(_LOSSES)}, got {name!r}")
    return _LOSSES[key]()


def as_loss(loss: AbstractLoss | str) -> AbstractLoss:
    """A loss Module from a Module or a name (see `loss_from_name`)."""
    return loss if isinstance(loss, AbstractLoss) else loss_from_name(loss)


def create_loss_function(
    forward_function: Callable[..., Array],
    experimental_data: Shaped[ArrayLike, "..."],
    loss_type: str = "mae",
) -> Callable[..., Float[Array, ""]]:
    """A jitted loss of a forward model against fixed data (the seed API).

    `loss_fn(*args, **kwargs)` evaluates `forward_function(*args, **kwargs)` and compares
    it with `experimental_data` through the loss named by `loss_type`, averaged over all
    elements. Differentiate it with `jax.grad` / `eqx.filter_grad`; for a complex
    parameter the result is the *conjugate* of the steepest-ascent direction, so step
    along `-conj(grad)` (the `Gradient` engine does this for you).

    **Arguments:**

    - `forward_function`: the forward model; its output must have the shape of
      `experimental_data`.
    - `experimental_data`: the measurements.
    - `loss_type`: `"mae"` (default), `"mse"`, `"rmse"`, or the noise models
      `"amplitude"`, `"intensity"`, `"poisson"` (for intensity data).

    **Returns:**

    `loss_fn`, a jitted function returning a scalar. Raises `ValueError` for an
    unknown `loss_type`.
    """
    loss = loss_from_name(loss_type)
    data = jnp.asarray(experimental_data)

    @eqx.filter_jit
    def loss_fn(*args, **kwargs):
        return loss(forward_function(*args, **kwargs), data)

    return loss_fn
