"""`FarFieldMicroscope`: probe x object, then a Fraunhofer transform onto the camera."""

from typing import ClassVar

import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from .._validate import real_array
from ..optics._probe import AbstractProbe
from ..optics._propagator.base import AbstractPropagator
from ..optics._propagator.fourier import FourierTransform
from ..optics._propagator.scaled_fraunhofer import ScaledFraunhofer
from ..optics._sample import SampleFunction
from ..optics._train import OpticalTrain
from ._base import probe_on_sample
from ._detector import DetectorResponse
from ._train import AbstractTrainMicroscope


class FarFieldMicroscope(AbstractTrainMicroscope):
    """The classic far-field ptychography model: `I = sum_m |F[P_m(r - r_j) O(r)]|**2`.

    A thin final over `AbstractTrainMicroscope` whose train is one member: the
    `FourierTransform` or the given `ScaledFraunhofer`. `F` is the centred unitary FFT
    (`janssen.optics.fft2c`): it conserves energy, so the
    total counts of a frame equal the probe power it transmits. The detector has the
    probe's grid; the object pixel is `wavelength * distance / (N * camera_pixel)`.

    **Arguments:**

    - `probe`: an `AbstractProbe` on the sample-plane grid.
    - `sample`: the `SampleFunction`. Its pitch is the microscope's; a probe given with a
      pitch must agree with it, and is kept without one (`probe_on_sample`).
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
    # A far-field intensity ignores a shift of the exit wave: no Fourier shift (two FFTs) a position.
    moves_with_object: ClassVar[bool] = False

    def __init__(
        self,
        probe: AbstractProbe,
        sample: SampleFunction,
        positions: Real[ArrayLike, "npos 2"],
        propagator: AbstractPropagator | None = None,
        *,
        detector: DetectorResponse | None = None,
    ):
        self.probe = probe_on_sample(probe, sample)
        self.sample = sample
        self.positions = real_array("positions", positions)
        if propagator is not None and not isinstance(propagator, ScaledFraunhofer):
            raise ValueError(f"`propagator` must be None or a ScaledFraunhofer, got {type(propagator).__name__}")
        self.propagator = propagator
        self.detector = detector

    def train_at(self, subpixel: Float[Array, "2"] | None) -> OpticalTrain:
        """The FFT (`FourierTransform`) or the `ScaledFraunhofer` propagator: the same at every position."""
        del subpixel
        return OpticalTrain(FourierTransform() if self.propagator is None else self.propagator)

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
