"""`ThinLens`: a paraxial quadratic phase."""

from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ..._custom_types import ScalarLike
from ..._validate import check_finite, is_concrete, real_array
from .._wavefront import OpticalWavefront
from .base import AbstractElement, apply, grid_coordinates


class ThinLens(AbstractElement):
    """An ideal thin lens in the paraxial approximation, centred on the grid.

    Transmission `t(r) = exp(-i pi r**2 / (wavelength * f))`: a plane wave becomes a
    spherical wave converging to a focus at distance `f` (with janssen's
    `exp(+i k z)` propagation convention). A negative `f` is a diverging lens.
    The lens has no pupil; put a `CircularAperture` after it for one.

    **Arguments:**

    - `focal_length`: metres, finite and non-zero.
    """

    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {"focal_length": "focal_length"}

    focal_length: Float[Array, ""]

    def __init__(self, focal_length: ScalarLike):
        self.focal_length = real_array("focal_length", focal_length, shape=())

    def __check_init__(self):
        check_finite("focal_length", self.focal_length)
        if is_concrete(self.focal_length) and np.asarray(self.focal_length) == 0:
            raise ValueError("`focal_length` must be non-zero (use no lens for an infinite focal length), got 0.0")

    def transmission(self, wavefront: OpticalWavefront) -> Complex[Array, "y x"]:
        x, y = grid_coordinates(wavefront)
        return jnp.exp(-1j * jnp.pi * (x**2 + y**2) / (wavefront.wavelength * self.focal_length))

    def magnification(self) -> Float[Array, ""]:
        return jnp.ones((), self.focal_length.dtype)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return apply(self, wavefront)
