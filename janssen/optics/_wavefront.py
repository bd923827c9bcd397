"""`OpticalWavefront`: a sampled complex field with its wavelength and pitch."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float, Num

from .._custom_types import PairLike, ScalarLike
from .._validate import check_finite, check_positive, complex_array, pair, real_array


class OpticalWavefront(eqx.Module):
    """A monochromatic complex field sampled on a regular grid.

    The field's last two axes are `(y, x)`; any leading axes (coherent modes, a batch)
    are carried along by every propagator and element.

    **Arguments:**

    - `field`: complex array `(..., y, x)`.
    - `wavelength`: wavelength in metres, > 0.
    - `dx`: sampling pitch in metres, a scalar or an `(x, y)` pair, > 0.
    - `z_position`: position along the optical axis in metres (default 0).
    """

    field: Complex[Array, "*batch y x"]
    wavelength: Float[Array, ""]
    dx: Float[Array, "2"]
    z_position: Float[Array, ""]

    def __init__(
        self,
        field: Num[ArrayLike, "*batch y x"],
        wavelength: ScalarLike,
        dx: PairLike,
        z_position: ScalarLike = 0.0,
    ):
        self.field = complex_array("field", field)
        self.wavelength = real_array("wavelength", wavelength, shape=())
        self.dx = pair("dx", dx)
        self.z_position = real_array("z_position", z_position, shape=())

    def __check_init__(self):
        if self.field.ndim < 2:
            raise ValueError(f"`field` must have at least 2 dimensions (y, x), got shape {self.field.shape}")
        check_positive("wavelength", self.wavelength)
        check_positive("dx", self.dx)
        check_finite("field", self.field)
        check_finite("z_position", self.z_position)

    @property
    def shape(self) -> tuple[int, int]:
        """The grid shape `(H, W)`."""
        return self.field.shape[-2:]

    @property
    def intensity(self) -> Float[Array, "*batch y x"]:
        """`|field|**2`."""
        return jnp.abs(self.field) ** 2

    @property
    def power(self) -> Float[Array, ""]:
        """Total power `sum |field|**2 * dx * dy` (all leading axes summed)."""
        return jnp.sum(self.intensity) * self.dx[0] * self.dx[1]

    def replace_field(self, field: Complex[Array, "*batch y x"]) -> "OpticalWavefront":
        """A copy with a new field (same wavelength, pitch and position)."""
        return eqx.tree_at(lambda w: w.field, self, field)
