"""`FarFieldMicroscope`: probe x object, then a Fraunhofer transform onto the camera."""

from jaxtyping import Array, ArrayLike, Complex, Float, Real

from .._validate import real_array
from ..optics._fft import fft2c, ifft2c
from ..optics._probe import AbstractProbe
from ..optics._sample import SampleFunction
from ._base import AbstractMicroscope


class FarFieldMicroscope(AbstractMicroscope):
    """The classic far-field ptychography model: `I = sum_m |F[P_m(r - r_j) O(r)]|**2`.

    `F` is the centred unitary FFT (`janssen.optics.fft2c`): it conserves energy, so the
    total counts of a frame equal the probe power it transmits. The detector has the
    probe's grid; the object pixel is `wavelength * distance / (N * camera_pixel)`.

    **Arguments:**

    - `probe`: an `AbstractProbe` on the sample-plane grid.
    - `sample`: the `SampleFunction`, with the same pixel pitch as the probe.
    - `positions`: `(npos, 2)` scan positions `(x, y)` in metres, relative to the
      object's centre pixel.
    """

    probe: AbstractProbe
    sample: SampleFunction
    positions: Float[Array, "npos 2"]

    def __init__(self, probe: AbstractProbe, sample: SampleFunction, positions: Real[ArrayLike, "npos 2"]):
        self.probe = probe
        self.sample = sample
        self.positions = real_array("positions", positions)

    def __check_init__(self):
        self.check_geometry()

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self.probe_shape

    def propagate(self, exit_waves: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]):
        # Far-field intensity does not change when the exit wave moves, so `subpixel` is unused.
        del subpixel
        return fft2c(exit_waves)

    def backpropagate(self, detector_fields: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]):
        del subpixel
        return ifft2c(detector_fields)
