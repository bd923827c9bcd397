"""`PhaseScreen`: a learnable complex transmission on the wavefront's grid (a diffuser)."""

from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._validate import check_finite, complex_array
from .._wavefront import OpticalWavefront
from .base import AbstractElement, apply


class PhaseScreen(AbstractElement):
    """A thin screen with an arbitrary complex transmission, pixel for pixel.

    Models a diffuser, a phase plate or any other thin scatterer whose transmission is
    itself to be reconstructed: `surface` is an ordinary complex leaf. The screen has
    no pitch of its own; it must have the same `(H, W)` as the wavefronts it is applied
    to, which is checked when it is called.

    **Arguments:**

    - `surface`: complex `(H, W)` transmission (for a pure phase screen,
      `exp(1j * phase)`).
    """

    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {"screen": "surface"}

    surface: Complex[Array, "y x"]

    def __init__(self, surface: Complex[Array, "y x"]):
        self.surface = complex_array("surface", surface, ndim=2)

    def __check_init__(self):
        check_finite("surface", self.surface)

    def transmission(self, wavefront: OpticalWavefront) -> Complex[Array, "y x"]:
        if tuple(self.surface.shape) != tuple(wavefront.shape):
            raise ValueError(
                f"`surface` has shape {tuple(self.surface.shape)} but the wavefront's grid is "
                f"{tuple(wavefront.shape)}; a PhaseScreen must match the grid it is applied to"
            )
        return self.surface

    def magnification(self) -> Float[Array, ""]:
        return jnp.ones((), self.surface.real.dtype)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return apply(self, wavefront)
