"""`OpticalZoom`: a magnification of the sampling grid."""

from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._custom_types import ScalarLike
from ..._validate import check_positive, real_array
from .._wavefront import OpticalWavefront
from .base import AbstractElement, apply, as_complex


class OpticalZoom(AbstractElement):
    """An ideal magnifier: the image is the same field on a grid `zoom_factor` times coarser.

    The pitch `dx` is multiplied by `zoom_factor` and the amplitude divided by it, so
    that the power `sum |u|**2 dx dy` is conserved; the field's pixels are unchanged.
    Its transmission is therefore the constant `1 / zoom_factor`. The map is unitary in
    the physical inner product, so `adjoint` is its inverse (the array-level adjoint,
    with plain sums over pixels, is the multiplication by `1 / zoom_factor`). The phase
    curvature a real imaging system adds is left out; model it with a `ThinLens`.

    **Arguments:**

    - `zoom_factor`: the magnification, > 0 (values below 1 demagnify).
    """

    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {"zoom": "zoom_factor"}
    scale_fields: ClassVar[tuple[str, ...]] = ("zoom_factor",)

    zoom_factor: Float[Array, ""]

    def __init__(self, zoom_factor: ScalarLike):
        self.zoom_factor = real_array("zoom_factor", zoom_factor, shape=())

    def __check_init__(self):
        check_positive("zoom_factor", self.zoom_factor)

    def transmission(self, wavefront: OpticalWavefront) -> Complex[Array, "y x"]:
        return as_complex(jnp.broadcast_to(1 / self.zoom_factor, wavefront.shape))

    def magnification(self) -> Float[Array, ""]:
        return self.zoom_factor

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return apply(self, wavefront)
