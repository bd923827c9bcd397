"""`SimpleMicroscope`: exit wave -> zoom -> aperture -> scaled Fraunhofer -> camera; `simple_microscope`."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import PairLike, ScalarLike
from .._data import MicroscopeData
from .._validate import check_finite, check_positive, pair, real_array
from ..optics._elements.circular_aperture import CircularAperture
from ..optics._elements.optical_zoom import OpticalZoom
from ..optics._probe import AbstractProbe, Probe
from ..optics._propagator.scaled_fraunhofer import ScaledFraunhofer
from ..optics._sample import SampleFunction
from ..optics._train import OpticalTrain
from ..optics._wavefront import OpticalWavefront
from ._base import AbstractMicroscope, probe_on_sample
from ._detector import DetectorResponse
from ._train import AbstractTrainMicroscope


def detector_shape_or(name: str, shape, default: tuple[int, int]) -> tuple[int, int]:
    """A static `(H, W)` of positive ints (`default` when `shape` is None), or a `ValueError`."""
    if shape is None:
        return default
    arr = np.asarray(shape)
    if arr.shape != (2,) or not np.issubdtype(arr.dtype, np.integer) or np.any(arr <= 0):
        raise ValueError(f"`{name}` must be a pair of positive integers (H, W), got {shape!r}")
    return int(arr[0]), int(arr[1])


class SimpleMicroscope(AbstractTrainMicroscope):
    """Probe x object, magnified, cut by a circular aperture, then far-field onto a camera.

    The original janssen's optical chain, for one scan position:
    exit wave `psi = P(r - r_j) O(r)` -> `OpticalZoom(zoom_factor)` (the image of the
    exit plane, `zoom_factor` times larger) -> `CircularAperture` in that image plane ->
    `ScaledFraunhofer(travel_distance)` evaluated directly at the camera pixels
    (`camera_pixel_size`, `detector_shape`) -> intensity.

    A thin final over `AbstractTrainMicroscope`: its train is `(zoom, aperture,
    propagator)`. Each element is a sub-Module (`zoom`, `aperture`, `propagator`), so every parameter
    is an array leaf that an engine can refine: `zoom.zoom_factor`, `aperture.diameter`,
    `aperture.center`, `aperture.edge_width`, `propagator.distance`,
    `propagator.output_dx`.

    **Intensity scale.** `|P|**2` is read as photons per sample-plane pixel and the
    prediction is photons per camera pixel: the detector field is the physical
    Fraunhofer field times `sqrt(camera pixel area / sample pixel area)`. A frame
    therefore sums to the power the aperture transmits (in the probe's units) when the
    camera window holds the whole diffraction pattern, and with `zoom_factor = 1`, an
    aperture larger than the probe and `camera_pixel_size = wavelength * distance /
    (N * dx)`, the prediction equals `FarFieldMicroscope`'s.

    **Sub-pixel positions.** The aperture is fixed relative to the beam, not to the
    object, so it is moved with the probe by the sub-pixel remainder (`subpixel * dx`
    in the zoomed plane). The prediction then depends only on the object in the
    beam's frame, and is exact for a band-limited exit wave. The aperture's edge is
    what limits this: with the default edge of one zoomed pixel, a position `p + s`
    predicts the object shifted by `-s` to about `1e-4` of the frame's peak; an edge
    three zoomed pixels wide brings it to about `1e-7`, while a hard edge is only as
    good as its pixel sampling.

    **Arguments:**

    - `probe`: an `AbstractProbe` on the sample-plane grid.
    - `sample`: the `SampleFunction`, with the probe's pixel pitch.
    - `positions`: `(npos, 2)` scan positions `(x, y)` in metres, relative to the
      object's centre pixel.
    - `zoom_factor`: magnification of the exit plane onto the aperture plane, > 0.
    - `aperture_diameter`: metres in the zoomed plane, > 0.
    - `aperture_center`: `(x, y)` of the aperture in the zoomed plane, metres, relative
      to the beam axis (default on axis).
    - `travel_distance`: aperture-to-camera distance in metres, > 0.
    - `camera_pixel_size`: metres, scalar or `(x, y)`, > 0.
    - `detector_shape`: static `(H, W)` of the camera; default the probe's shape.
    - `aperture_edge_width`: width of the aperture's soft edge in metres (see
      `CircularAperture`). The default, `"pixel"`, is one pixel of the zoomed plane,
      `zoom_factor * max(dx)`: the sharpest edge the grid resolves, and still
      differentiable in the aperture's diameter and centre. `None` makes the edge hard
      (its diameter and centre then get zero gradients).
    - `detector`: an optional `DetectorResponse` (background, per-frame scales); `None`
      (default) predicts the coherent intensity.
    """

    probe: AbstractProbe
    sample: SampleFunction
    positions: Float[Array, "npos 2"]
    zoom: OpticalZoom
    aperture: CircularAperture
    propagator: ScaledFraunhofer
    detector: DetectorResponse | None
    # The aperture is fixed to the beam: it moves in `train_at`, the exit wave does not.
    moves_with_object: ClassVar[bool] = False

    def __init__(
        self,
        probe: AbstractProbe,
        sample: SampleFunction,
        positions: Float[ArrayLike, "npos 2"],
        *,
        zoom_factor: ScalarLike,
        aperture_diameter: ScalarLike,
        travel_distance: ScalarLike,
        camera_pixel_size: PairLike,
        aperture_center: PairLike = 0.0,
        detector_shape: tuple[int, int] | None = None,
        aperture_edge_width: ScalarLike | str | None = "pixel",
        detector: DetectorResponse | None = None,
    ):
        self.probe = probe_on_sample(probe, sample)
        self.sample = sample
        self.positions = real_array("positions", positions)
        zoom_factor = real_array("zoom_factor", zoom_factor, shape=())
        # Checked here so the errors name the microscope's arguments, not the elements'.
        for name, value in [
            ("zoom_factor", zoom_factor),
            ("aperture_diameter", aperture_diameter),
            ("travel_distance", travel_distance),
            ("camera_pixel_size", camera_pixel_size),
        ]:
            check_positive(name, value)
        check_finite("aperture_center", pair("aperture_center", aperture_center))
        if isinstance(aperture_edge_width, str):
            if aperture_edge_width != "pixel":
                raise ValueError(
                    f'`aperture_edge_width` must be a width in metres, "pixel" or None, got {aperture_edge_width!r}'
                )
            aperture_edge_width = zoom_factor * jnp.max(sample.dx)
        elif aperture_edge_width is not None:
            check_positive("aperture_edge_width", aperture_edge_width)
        shape = detector_shape_or("detector_shape", detector_shape, tuple(probe.fields().shape[-2:]))
        self.zoom = OpticalZoom(zoom_factor)
        self.aperture = CircularAperture(aperture_diameter, aperture_center, aperture_edge_width)
        self.propagator = ScaledFraunhofer(travel_distance, camera_pixel_size, shape)
        self.detector = detector

    def optics_aliases(self) -> dict[str, str | tuple[str, ...]]:
        return {
            "distance": "propagator.distance",
            "travel_distance": "propagator.distance",
            "zoom": "zoom.zoom_factor",
            "aperture": ("aperture.diameter", "aperture.center"),
            "aperture_diameter": "aperture.diameter",
            "aperture_center": "aperture.center",
        }

    def scale_leaves(self) -> tuple[str, ...]:
        return ("propagator.distance", "zoom.zoom_factor")

    def camera_distance(self, wavelength: float, camera_pixel_size: Float[Array, "2"]) -> float | None:
        del wavelength, camera_pixel_size
        return float(self.propagator.distance)

    def train_at(self, subpixel: Float[Array, "2"] | None) -> OpticalTrain:
        """Zoom -> aperture -> scaled Fraunhofer, the aperture moved with the beam by `subpixel` pixels.

        The beam sits `subpixel` pixels off its patch's grid and the aperture, fixed to the
        beam, moves with it (`subpixel * dx` in the zoomed plane); `None`: on axis.
        """
        aperture = self.aperture
        if subpixel is not None:
            zoomed_dx = self.sample.dx * self.zoom.zoom_factor
            aperture = eqx.tree_at(lambda a: a.center, aperture, aperture.center + subpixel * zoomed_dx)
        return OpticalTrain(self.zoom, aperture, self.propagator)


def simple_microscope(
    sample: SampleFunction,
    positions: Float[ArrayLike, "npos 2"],
    lightwave: OpticalWavefront,
    zoom_factor: ScalarLike,
    aperture_diameter: ScalarLike,
    travel_distance: ScalarLike,
    camera_pixel_size: PairLike,
    aperture_center: PairLike | None = None,
) -> eqx.Module:  # a `janssen.io.MicroscopeData` (imported when called: see below)
    """Simulate a ptychographic scan through a `SimpleMicroscope` (the original janssen's function).

    Builds `SimpleMicroscope(probe, sample, positions, ...)` with the lightwave as a
    coherent probe, the camera as large as the probe grid and the default soft aperture
    edge (one zoomed pixel), and predicts every frame.

    **Arguments:**

    - `sample`: the object's `SampleFunction`.
    - `positions`: `(npos, 2)` beam positions `(x, y)` in metres, relative to the
      sample's centre pixel.
    - `lightwave`: the illumination as an `OpticalWavefront` on the sample's pitch
      (leading axes, if any, are incoherent modes).
    - `zoom_factor`, `aperture_diameter`, `travel_distance`, `camera_pixel_size`,
      `aperture_center`: as in `SimpleMicroscope` (`None` centres the aperture).

    **Returns:**

    A `MicroscopeData` with the noise-free intensities, the positions, the lightwave's
    wavelength, `camera_pixel_size` and `distance = travel_distance`.
    """
    probe = Probe(lightwave.field, lightwave.wavelength, lightwave.dx)
    microscope = SimpleMicroscope(
        probe,
        sample,
        positions,
        zoom_factor=zoom_factor,
        aperture_diameter=aperture_diameter,
        aperture_center=0.0 if aperture_center is None else aperture_center,
        travel_distance=travel_distance,
        camera_pixel_size=camera_pixel_size,
    )
    return MicroscopeData(
        _predict(microscope),
        microscope.positions,
        lightwave.wavelength,
        microscope.propagator.output_dx,
        microscope.propagator.distance,
    )


@eqx.filter_jit
def _predict(microscope: AbstractMicroscope) -> Float[Array, "npos dety detx"]:
    return microscope()
