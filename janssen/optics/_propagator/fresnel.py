"""`Fresnel`: paraxial near-field propagation with the Fresnel transfer function."""

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._custom_types import ScalarLike
from .._fft import fft2u, ifft2u, uncentred_frequency_grid
from .._wavefront import OpticalWavefront
from .base import (
    AbstractPropagator,
    broadcast_like,
    check_near_field_distance,
    distance_array,
    moved,
)


def _transfer(wavefront: OpticalWavefront, distance: Float[Array, ""]) -> Complex[Array, "y x"]:
    fx, fy = uncentred_frequency_grid(wavefront.shape, wavefront.dx)
    return jnp.exp(-1j * jnp.pi * wavefront.wavelength * distance * (fx**2 + fy**2))


def _apply(wavefront: OpticalWavefront, distance: Float[Array, ""]) -> OpticalWavefront:
    h = _transfer(wavefront, distance).astype(wavefront.field.dtype)
    field = ifft2u(fft2u(wavefront.field) * broadcast_like(wavefront.field, h))
    return moved(wavefront, field, wavefront.dx, wavefront.z_position + distance)


class Fresnel(AbstractPropagator):
    """Paraxial (Fresnel) propagation over `distance` with the transfer function.

    Multiplies the spectrum by `H(fx, fy) = exp(-i pi wavelength z (fx**2 + fy**2))`
    (the constant `exp(i k z)` is dropped, see `AbstractPropagator`). The grid is the
    same in both planes and the map is unitary, so power is conserved exactly and
    `adjoint` (propagation over `-distance`) is the inverse. The convolution is
    periodic: keep the field away from the grid's edges, and note that the transfer
    function is well sampled only while `wavelength z <= N dx**2` along each axis.

    **Arguments:**

    - `distance`: metres, finite; negative values propagate backwards.
    """

    distance: Float[Array, ""]
    keeps_pitch = True

    def __init__(self, distance: ScalarLike):
        self.distance = distance_array(distance)

    def __check_init__(self):
        check_near_field_distance(self.distance)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return _apply(wavefront, self.distance)

    def adjoint(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return _apply(wavefront, -self.distance)
