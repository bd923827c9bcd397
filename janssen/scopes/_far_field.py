"""`FarFieldMicroscope`: probe x object, then a Fraunhofer transform onto the camera."""

import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Real

from .._validate import real_array
from ..optics._fft import fft2c, ifft2c
from ..optics._probe import AbstractProbe
from ..optics._propagator.base import AbstractPropagator
from ..optics._propagator.scaled_fraunhofer import ScaledFraunhofer
from ..optics._sample import SampleFunction
from ..optics._wavefront import OpticalWavefront
from ._base import AbstractMicroscope
from ._detector import DetectorResponse
from ._simple import count_scale


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
    - `propagator`: `None` (default) for the FFT above, whose geometry is fixed by the
      object pixel. Or a `ScaledFraunhofer(distance, camera_pixel_size, detector_shape)`:
      the same far field evaluated exactly at the camera pixels for any object pixel,
      in photons per camera pixel, so that `propagator.distance` is a parameter that can
      be refined (`trainable=["distance"]`). With `distance = N * dx * camera_pixel /
      wavelength` both give the same prediction; the FFT is several times faster.
    - `detector`: an optional `DetectorResponse` (background, per-frame scales); `None`
      (default) predicts the coherent intensity.
    """

    probe: AbstractProbe
    sample: SampleFunction
    positions: Float[Array, "npos 2"]
    propagator: ScaledFraunhofer | None
    detector: DetectorResponse | None

    def __init__(
        self,
        probe: AbstractProbe,
        sample: SampleFunction,
        positions: Real[ArrayLike, "npos 2"],
        propagator: AbstractPropagator | None = None,
        *,
        detector: DetectorResponse | None = None,
    ):
        self.probe = probe
        self.sample = sample
        self.positions = real_array("positions", positions)
        if propagator is not None and not isinstance(propagator, ScaledFraunhofer):
            raise ValueError(f"`propagator` must be None or a ScaledFraunhofer, got {type(propagator).__name__}")
        self.propagator = propagator
        self.detector = detector

    def __check_init__(self):
        self.check_geometry()
        self.check_detector()

    @property
    def detector_shape(self) -> tuple[int, int]:
        if self.propagator is None or self.propagator.output_shape is None:
            return self.probe_shape
        return self.propagator.output_shape

    @property
    def fourier_detector(self) -> bool:
        return self.propagator is None

    @property
    def phase_ramp_gauge(self) -> bool:
        return True

    def optics_aliases(self) -> dict[str, str | tuple[str, ...]]:
        # The FFT far field has no distance: its object pixel `wavelength * distance /
        # (N * camera_pixel)` carries it, and refining the pixel refines the distance.
        distance = "sample.dx" if self.propagator is None else "propagator.distance"
        return {"distance": distance, "travel_distance": distance}

    def scale_leaves(self) -> tuple[str, ...]:
        return ("sample.dx",) if self.propagator is None else ("propagator.distance",)

    def camera_distance(self, wavelength: float, camera_pixel_size: Float[Array, "2"]) -> float | None:
        if self.propagator is not None:
            return float(self.propagator.distance)
        # The FFT far field's object pixel is wavelength * distance / (N * camera pixel).
        shape = np.asarray(self.detector_shape[::-1], dtype=np.float64)
        per_axis = np.asarray(self.sample.dx) * shape * np.asarray(camera_pixel_size) / float(wavelength)
        return float(np.mean(per_axis))

    def _count_scale(self) -> Float[Array, ""]:
        return count_scale(self.propagator.output_dx, self.sample.dx)

    def propagate(self, exit_waves: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]):
        # Far-field intensity does not change when the exit wave moves, so `subpixel` is unused.
        del subpixel
        if self.propagator is None:
            return fft2c(exit_waves)
        wave = OpticalWavefront(exit_waves, self.probe.wavelength, self.sample.dx)
        return self.propagator(wave).field * self._count_scale().astype(exit_waves.dtype)

    def backpropagate(self, detector_fields: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]):
        del subpixel
        if self.propagator is None:
            return ifft2c(detector_fields)
        camera = OpticalWavefront(detector_fields, self.probe.wavelength, self.propagator.output_dx)
        back = self.propagator.adjoint(camera, input_dx=self.sample.dx, input_shape=self.probe_shape)
        # The physical adjoint weighs by pixel areas; the array adjoint of `c * F` is `F^H / c`.
        # Times the reciprocal: XLA divides complex arrays as a full complex division.
        return back.field * (1.0 / self._count_scale()).astype(detector_fields.dtype)
