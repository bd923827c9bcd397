"""`FourierTransform`: the far field as the centred unitary DFT, on the array's own grid."""

from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from .._fft import fft2c, ifft2c
from .._wavefront import OpticalWavefront
from .base import moved


class FourierTransform(eqx.Module):
    """The far field as the centred unitary DFT (`fft2c`): the classic ptychography transform.

    A member of an `OpticalTrain` with no parameters: its geometry is the object pixel
    alone (the camera pixel is `wavelength * distance / (N * dx)`), so it has no distance
    to refine. It keeps the array's pitch (`output_grid` returns the input grid): the
    DFT is unitary on arrays, so a microscope built on it predicts counts with no scale
    factor, and its adjoint is the inverse transform (`ifft2c`). It declares
    `fourier_detector`, which lets engines take a faster equivalent path (the PIE family:
    an uncentred FFT with a checkerboard), and `far_field`, for the phase-ramp gauge.
    Use `Fraunhofer(distance)` for the physical far field in metres.
    """

    #: The output plane is the far field.
    far_field: ClassVar[bool] = True
    #: The output is exactly `fft2c` of the input (engines may use an equivalent FFT).
    fourier_detector: ClassVar[bool] = True
    #: The output grid has the input's pitch and shape.
    keeps_pitch: ClassVar[bool] = True
    #: No parameters to refine.
    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {}
    scale_fields: ClassVar[tuple[str, ...]] = ()

    def output_grid(
        self, wavelength: Float[Array, ""], dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> tuple[Float[Array, "2"], tuple[int, int]]:
        """The input grid: the transform is indexed on the array's own pitch."""
        del wavelength
        return dx, shape

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return moved(wavefront, fft2c(wavefront.field), wavefront.dx, wavefront.z_position)

    def adjoint(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The inverse transform (the DFT is unitary)."""
        return moved(wavefront, ifft2c(wavefront.field), wavefront.dx, wavefront.z_position)

    def adjoint_onto(
        self, wavefront: OpticalWavefront, dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> OpticalWavefront:
        """`adjoint` (the input grid is the output grid)."""
        del dx, shape
        return self.adjoint(wavefront)
