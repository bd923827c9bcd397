"""The amplitude residual `|Psi| - sqrt(I)` over the valid pixels: one definition for every engine.

`|Psi|**2` is the microscope's predicted intensity, after its detector model (per-frame
scales and a background, applied once in `AbstractMicroscope.intensity`), and `I` the
measured counts. Everything in `janssen.invert` that compares amplitudes goes through this
module:

- `amplitude_difference`: the per-pixel misfit of `AmplitudeLoss` and of the exact
  residual (square roots with a zero gradient at 0);
- `AmplitudeResidual`: the residual vector `valid * (sqrt(I_predicted + floor) - sqrt(I))`
  that `GaussNewton`, `OptimistixLeastSquares`, `PositionLM` and `object_std` linearise
  (the small `floor` keeps it differentiable where a prediction is 0), its exact twin
  without the floor, and its per-frame sums;
- `residual_function`: that residual as a function of the trainable leaves in real pairs;
- `report_difference` and `data_residual`: the misfit of reports, where a non-finite
  prediction must show as NaN.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._custom_types import ScalarLike
from .._data import MicroscopeData
from ..scopes._base import AbstractMicroscope
from ._realify import from_real


def safe_sqrt(x: Array) -> Array:
    """`sqrt(max(x, 0))` whose gradient is 0, not infinite or NaN, at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def amplitude_difference(predicted: Array, measured: Array) -> Array:
    """`sqrt(I_predicted) - sqrt(I_measured)` per pixel, negatives counting as 0 (differentiable at 0).

    `measured` is cast to the dtype of `predicted`. Unmasked: weight it by `valid`.
    """
    return safe_sqrt(predicted) - safe_sqrt(measured.astype(predicted.dtype))


def report_difference(predicted: Array, measured: Array) -> Array:
    """`sqrt(I_predicted) - sqrt(I_measured)` with plain square roots: NaN stays NaN.

    For reports (`data_residual`, the verdict), never differentiated: a diverged
    prediction must read as NaN there, not as a dark frame (which `safe_sqrt` would make
    of it). Equal to `amplitude_difference` on non-negative finite intensities.
    """
    return jnp.sqrt(predicted) - jnp.sqrt(measured)


class AmplitudeResidual(eqx.Module):
    """The amplitude residual of measured data, ready to compare with predicted intensities.

    **Arguments:**

    - `amplitude`: `sqrt(I_measured)`, `(npos, H, W)`.
    - `valid`: the bad-pixel mask (1 = counts), `(1, H, W)`, in the data's dtype.
    - `floor`: added to the predicted intensity under the square root of `smooth` (0-d).

    Build it with `AmplitudeResidual.of(data, eps)`.
    """

    amplitude: Float[Array, "npos y x"]
    valid: Float[Array, "1 y x"]
    floor: Float[Array, ""]

    @staticmethod
    def of(data: MicroscopeData, eps: ScalarLike) -> "AmplitudeResidual":
        """The residual of `data`, with `floor` = `eps` times the mean measured intensity over valid pixels."""
        measured = data.intensities
        valid = data.valid[None].astype(measured.dtype)
        floor = eps * jnp.sum(valid * measured) / (data.num_positions * jnp.sum(valid))
        return AmplitudeResidual(safe_sqrt(measured), valid, floor)

    def smooth(self, predicted: Float[Array, "npos y x"]) -> Float[Array, "npos y x"]:
        """`valid * (sqrt(max(I_predicted, 0) + floor) - sqrt(I_measured))`: the residual engines linearise.

        Its derivative is bounded by `1 / (2 sqrt(floor))` where a prediction is 0.
        """
        return self.valid * (jnp.sqrt(jnp.maximum(predicted, 0) + self.floor) - self.amplitude)

    def exact(self, predicted: Float[Array, "npos y x"]) -> Float[Array, "npos y x"]:
        """`valid * (sqrt(I_predicted) - sqrt(I_measured))`, without the floor (acceptance tests, losses)."""
        return self.valid * (safe_sqrt(predicted) - self.amplitude)

    def frame_sums(self, predicted: Float[Array, "npos y x"]) -> Float[Array, " npos"]:
        """The exact squared residual summed over each frame's valid pixels."""
        return jnp.sum(self.exact(predicted) ** 2, axis=(1, 2))

    @property
    def count(self) -> Float[Array, ""]:
        """The number of valid pixels over all frames."""
        return self.amplitude.shape[0] * jnp.sum(self.valid)


def residual_function(static: Any, like: Any, data: MicroscopeData, eps: ScalarLike, *, on_grid: bool = False):
    """The smooth amplitude residual as a function of the trainable leaves in real pairs.

    **Arguments:**

    - `static`, `like`: the two halves of `eqx.partition(microscope, trainable)`; `like`
      gives the complex leaves their dtypes back (`janssen.invert._realify.from_real`).
    - `data`: the measurements.
    - `eps`: the floor under the square root, relative to the mean measured intensity.
    - `on_grid`: predict with `on_grid=True` (see `janssen.invert._trainable.fixed_on_grid`).

    **Returns:**

    `fn(real_params) -> (residual, predicted)`, the residual `AmplitudeResidual.smooth`
    (`(npos, H, W)`) and the predicted intensities as auxiliary output.
    """
    terms = AmplitudeResidual.of(data, eps)

    def fn(real_params):
        predicted = eqx.combine(from_real(real_params, like), static)(on_grid=on_grid)
        return terms.smooth(predicted), predicted

    return fn


def data_residual(microscope: AbstractMicroscope, data: MicroscopeData) -> float:
    """RMS of `sqrt(I_measured) - sqrt(I_predicted)` over all frames and valid pixels."""
    predicted = jax.jit(lambda m: m())(microscope)
    diff = report_difference(predicted, data.intensities) * data.valid[None]
    count = data.num_positions * jnp.sum(data.valid)
    return float(np.sqrt(float(jnp.sum(diff**2)) / float(count)))
