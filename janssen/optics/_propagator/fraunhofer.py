"""`Fraunhofer`: far-field propagation by one centred FFT."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._custom_types import ScalarLike
from .._fft import fft2c, ifft2c
from .._wavefront import OpticalWavefront
from .base import (
    AbstractPropagator,
    broadcast_like,
    check_far_field_distance,
    distance_array,
    moved,
    output_plane_phase,
)


def far_field_pitch(
    wavelength: Float[Array, ""], distance: Float[Array, ""], shape: tuple[int, int], dx: Float[Array, "2"]
) -> Float[Array, "2"]:
    """The far-field pitch `wavelength * distance / (N * dx)` per axis, `(x, y)`."""
    n = jnp.array([shape[1], shape[0]], dtype=dx.dtype)
    return wavelength * distance / (n * dx)


def _amplitude(shape: tuple[int, int], dx: Float[Array, "2"], wavelength, distance) -> Float[Array, ""]:
    # sqrt(dx_in_x dx_in_y / (dx_out_x dx_out_y)), written without a square root: the
    # factor that turns the unitary FFT into the physical Fraunhofer integral.
    return dx[0] * dx[1] * (shape[0] * shape[1]) ** 0.5 / (wavelength * distance)


class Fraunhofer(AbstractPropagator):
    """Far-field (Fraunhofer) propagation over `distance`, by one centred FFT.

    The output field is the Fraunhofer integral
    `U(x', y') = 1 / (wavelength z) * integral u(x, y) exp(-2 pi i (x x' + y y') / (wavelength z)) dx dy`
    sampled on the grid of pitch `wavelength * z / (N * dx)` along each axis (`x` and `y`
    separately, so non-square grids and anisotropic pitches are handled). With the
    unitary centred FFT this scaling conserves the power `sum |u|**2 dx_x dx_y`
    exactly, and the map is unitary in the physical inner product: `adjoint` is the
    inverse. Zero frequency sits on pixel `(H // 2, W // 2)`.

    The constant phase `exp(i k z) / i` is dropped (see `AbstractPropagator`). The
    output-plane curvature `exp(i pi (x'**2 + y'**2) / (wavelength z))` is dropped too
    unless `quadratic_phase=True`: intensities never see it, but a field propagated
    further (through a lens or another propagator) does.

    **Arguments:**

    - `distance`: metres, finite and > 0.
    - `quadratic_phase`: static; whether to include the output-plane curvature
      (default `False`).
    """

    distance: Float[Array, ""]
    quadratic_phase: bool = eqx.field(static=True)

    def __init__(self, distance: ScalarLike, *, quadratic_phase: bool = False):
        self.distance = distance_array(distance)
        self.quadratic_phase = bool(quadratic_phase)

    def __check_init__(self):
        check_far_field_distance(self.distance)

    far_field = True

    def output_grid(self, wavelength, dx, shape):
        return far_field_pitch(wavelength, self.distance, shape, dx), shape

    def output_dx(self, wavefront: OpticalWavefront) -> Float[Array, "2"]:
        """The far-field pitch `(x, y)` in metres for an input `wavefront`."""
        return far_field_pitch(wavefront.wavelength, self.distance, wavefront.shape, wavefront.dx)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        out_dx = self.output_dx(wavefront)
        scale = _amplitude(wavefront.shape, wavefront.dx, wavefront.wavelength, self.distance)
        field = fft2c(wavefront.field) * scale.astype(wavefront.field.dtype)
        if self.quadratic_phase:
            phase = output_plane_phase(wavefront.shape, out_dx, wavefront.wavelength, self.distance)
            field = field * broadcast_like(field, phase)
        return moved(wavefront, field, out_dx, wavefront.z_position + self.distance)

    def adjoint(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        # The input pitch follows from the output one by the same reciprocal relation.
        in_dx = far_field_pitch(wavefront.wavelength, self.distance, wavefront.shape, wavefront.dx)
        field = wavefront.field
        if self.quadratic_phase:
            phase = output_plane_phase(wavefront.shape, wavefront.dx, wavefront.wavelength, self.distance)
            field = field * broadcast_like(field, jnp.conj(phase))
        scale = _amplitude(wavefront.shape, in_dx, wavefront.wavelength, self.distance)
        field = ifft2c(field) * (1.0 / scale).astype(field.dtype)  # XLA divides complex arrays slowly
        return moved(wavefront, field, in_dx, wavefront.z_position - self.distance)
