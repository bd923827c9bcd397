"""`PixelBinning`: a sensor whose pixels integrate blocks of a finer grid (an optical-train member)."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float, Real

from .._validate import check_finite, check_nonnegative, real_array
from ._wavefront import OpticalWavefront


class PixelBinning(eqx.Module):
    """A sensor of `factor x factor`-pixel blocks of the fine grid, each fine pixel weighted by `response`.

    A camera pixel collects the light that falls on its area: the **intensities** of
    the fine pixels under it add up, their fields do not interfere. That sum is written
    as a linear map by moving every fine pixel of a block onto its own incoherent
    channel: the field `(..., H, W)` becomes `(... * factor**2, H / factor, W /
    factor)`, channel `k` holding the `k`-th pixel of every block times
    `sqrt(response)`, and a microscope's intensity (the sum over its leading axis)
    is then the weighted block sum `sum_block response * |field|**2`. So a binned
    sensor is one more member of an `OpticalTrain`, after the last propagator.

    The pitch grows by `factor`; the field is divided by `factor`, so with a unit
    response the map conserves power (`sum |u|**2 dx_x dx_y`) and, in the physical
    inner product, its adjoint is its inverse. With a response it is the adjoint
    (not the inverse) that `adjoint_onto` returns.

    The leading axis of the output counts the probe's modes times `factor**2`: the
    gradient and least-squares engines need nothing more; the PIE engines' mode-power
    statistics take that axis for the probe's modes (see docs/api/scopes.md).

    **Arguments:**

    - `factor`: fine pixels per sensor pixel along each axis, an integer >= 1 (static).
    - `response`: the fine grid's `(H, W)` per-pixel sensitivity, >= 0 (default: 1
      everywhere). It is an array leaf, so a gradient engine can refine it.
    """

    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {"pixel_response": "response"}
    scale_fields: ClassVar[tuple[str, ...]] = ()
    far_field: ClassVar[bool] = False

    factor: int = eqx.field(static=True)
    response: Float[Array, "y x"] | None

    def __init__(self, factor: int, response: Real[ArrayLike, "y x"] | None = None):
        if isinstance(factor, bool) or int(factor) != factor or int(factor) < 1:
            raise ValueError(f"`factor` must be an integer >= 1, got {factor!r}")
        self.factor = int(factor)
        self.response = None if response is None else real_array("response", response)

    def __check_init__(self):
        if self.response is not None:
            if self.response.ndim != 2:
                raise ValueError(f"`response` must have shape (H, W), got shape {self.response.shape}")
            check_finite("response", self.response)
            check_nonnegative("response", self.response)

    def _check_grid(self, shape: tuple[int, int]) -> None:
        h, w = shape
        if h % self.factor or w % self.factor:
            raise ValueError(f"`factor` {self.factor} must divide the grid {tuple(shape)} it bins")
        if self.response is not None and tuple(self.response.shape) != tuple(shape):
            raise ValueError(
                f"`response` has shape {tuple(self.response.shape)} but the grid it weights is {tuple(shape)}"
            )

    def output_grid(
        self, wavelength: Float[Array, ""], dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> tuple[Float[Array, "2"], tuple[int, int]]:
        """The sensor grid: pitch `dx * factor`, shape `shape // factor`."""
        del wavelength
        self._check_grid(shape)
        return dx * self.factor, (shape[0] // self.factor, shape[1] // self.factor)

    def _weight(self, shape: tuple[int, int], dtype) -> Complex[Array, "y x"]:
        """`sqrt(response) / factor` on the fine grid, in the field's dtype."""
        if self.response is None:
            return jnp.full(shape, 1.0 / self.factor, dtype)
        return (jnp.sqrt(self.response) / self.factor).astype(dtype)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The field on the sensor's channels, `(... * factor**2, H / factor, W / factor)`."""
        field, m = wavefront.field, self.factor
        self._check_grid(field.shape[-2:])
        h, w = field.shape[-2:]
        lead = field.shape[:-2]
        weighted = field * self._weight((h, w), field.dtype).reshape((1,) * len(lead) + (h, w))
        blocks = weighted.reshape((*lead, h // m, m, w // m, m))
        order = (*range(len(lead)), len(lead) + 1, len(lead) + 3, len(lead), len(lead) + 2)
        channels = jnp.transpose(blocks, order).reshape((-1, h // m, w // m))
        return OpticalWavefront(channels, wavefront.wavelength, wavefront.dx * m, wavefront.z_position)

    def adjoint_onto(
        self, wavefront: OpticalWavefront, dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> OpticalWavefront:
        """The adjoint in the physical inner product: channels back onto the fine grid `(dx, shape)`."""
        m = self.factor
        h, w = shape
        field = wavefront.field
        blocks = field.reshape((-1, m, m, h // m, w // m))
        fine = jnp.transpose(blocks, (0, 3, 1, 4, 2)).reshape((-1, h, w))
        # Physical adjoint = (sensor pixel area / fine pixel area) x the array adjoint.
        fine = fine * (self._weight((h, w), field.dtype) * m**2)[None]
        return OpticalWavefront(fine, wavefront.wavelength, dx, wavefront.z_position)
