"""`AngularSpectrum`: exact scalar propagation of plane-wave components."""

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._custom_types import ScalarLike
from ..._validate import check_positive, real_array
from .._fft import fft2u, ifft2u, uncentred_frequency_grid
from .._wavefront import OpticalWavefront
from .base import (
    AbstractPropagator,
    broadcast_like,
    check_near_field_distance,
    distance_array,
    moved,
)


def _transfer(
    wavefront: OpticalWavefront, distance: Float[Array, ""], refractive_index: Float[Array, ""]
) -> Complex[Array, "y x"]:
    fx, fy = uncentred_frequency_grid(wavefront.shape, wavefront.dx)
    f2 = fx**2 + fy**2
    k = refractive_index / wavefront.wavelength  # wavenumber / (2 pi) in the medium
    arg = k**2 - f2
    propagating = arg > 0
    evanescent = arg < 0
    # The inner `where`s keep every square root on a positive argument, so no branch
    # (taken or not) produces an infinite or NaN gradient.
    kz = jnp.sqrt(jnp.where(propagating, arg, 1.0))
    decay_rate = jnp.sqrt(jnp.where(evanescent, -arg, 1.0))
    # kz - k without cancellation; the constant k z (a piston phase) is dropped.
    phase = jnp.where(propagating, -f2 / (kz + k), -k)
    # Evanescent waves decay with |z| in both directions: forward and backward
    # propagation stay bounded, and the map over -z is the adjoint of the map over z.
    decay = jnp.where(evanescent, jnp.exp(-2 * jnp.pi * jnp.abs(distance) * decay_rate), 1.0)
    return decay * jnp.exp(2j * jnp.pi * distance * phase)


def _apply(
    wavefront: OpticalWavefront, distance: Float[Array, ""], refractive_index: Float[Array, ""]
) -> OpticalWavefront:
    h = _transfer(wavefront, distance, refractive_index).astype(wavefront.field.dtype)
    field = ifft2u(fft2u(wavefront.field) * broadcast_like(wavefront.field, h))
    return moved(wavefront, field, wavefront.dx, wavefront.z_position + distance)


class AngularSpectrum(AbstractPropagator):
    """Exact scalar propagation over `distance` by the angular spectrum method.

    Each plane wave `exp(2 pi i (fx x + fy y))` of the field's spectrum advances with
    its own axial wavenumber `kz = sqrt((n / wavelength)**2 - fx**2 - fy**2)`, with
    `n` the medium's refractive index (so the wavelength in the medium is
    `wavelength / n`). No paraxial approximation is made; the grid is the same in
    both planes. The constant phase `exp(2 pi i n z / wavelength)` is dropped (see
    `AbstractPropagator`).

    Components with `fx**2 + fy**2 > (n / wavelength)**2` are evanescent: they are
    damped by `exp(-2 pi |z| sqrt(fx**2 + fy**2 - (n / wavelength)**2))`, taken with
    `|z|` so that back-propagation does not amplify them. The gradient with respect to
    `distance` is finite everywhere. On a grid without evanescent frequencies
    (`1 / (4 dx_x**2) + 1 / (4 dx_y**2) < (n / wavelength)**2`, the grid's corner
    frequency; `dx > wavelength / (sqrt(2) n)` for a square pitch) the map is unitary
    and `adjoint` is the inverse. With them, `adjoint` (propagation over `-distance`)
    is still the exact adjoint, but power decreases.

    **Arguments:**

    - `distance`: metres, finite; negative values propagate backwards.
    - `refractive_index`: the medium's refractive index, > 0 (default 1).
    """

    distance: Float[Array, ""]
    keeps_pitch = True
    refractive_index: Float[Array, ""]

    def __init__(self, distance: ScalarLike, refractive_index: ScalarLike = 1.0):
        self.distance = distance_array(distance)
        self.refractive_index = real_array("refractive_index", refractive_index, shape=())

    def __check_init__(self):
        check_near_field_distance(self.distance)
        check_positive("refractive_index", self.refractive_index)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return _apply(wavefront, self.distance, self.refractive_index)

    def adjoint(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return _apply(wavefront, -self.distance, self.refractive_index)
