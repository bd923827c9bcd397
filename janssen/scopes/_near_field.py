"""`NearFieldMicroscope`: probe x object, then Fresnel or angular-spectrum propagation."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import ScalarLike
from .._validate import check_positive, real_array
from ..optics._elements.optical_zoom import OpticalZoom
from ..optics._probe import AbstractProbe
from ..optics._propagator.angular_spectrum import AngularSpectrum
from ..optics._propagator.base import AbstractPropagator
from ..optics._propagator.fraunhofer import Fraunhofer
from ..optics._propagator.fresnel import Fresnel
from ..optics._propagator.scaled_fraunhofer import ScaledFraunhofer
from ..optics._sample import SampleFunction
from ..optics._train import OpticalTrain
from ._base import probe_on_sample
from ._detector import DetectorResponse
from ._train import AbstractTrainMicroscope

_PROPAGATORS = {"fresnel": Fresnel, "angular_spectrum": AngularSpectrum}


def _build_propagator(propagator: str | AbstractPropagator, distance: ScalarLike | None) -> AbstractPropagator:
    if isinstance(propagator, AbstractPropagator):
        if distance is not None:
            raise ValueError(
                "`distance` must be None when `propagator` is a Module (its own `distance` is used), "
                f"got distance={distance!r}"
            )
        if isinstance(propagator, (Fraunhofer, ScaledFraunhofer)):
            raise ValueError(
                f"`propagator` must keep the sample grid (a near-field propagator), got {type(propagator).__name__}; "
                "use FarFieldMicroscope or SimpleMicroscope for far-field data"
            )
        return propagator
    if propagator not in _PROPAGATORS:
        raise ValueError(
            f"`propagator` must be one of {sorted(_PROPAGATORS)} or a propagator Module, got {propagator!r}"
        )
    if distance is None:
        raise ValueError("`distance` (sample to detector, metres) is required when `propagator` is a name")
    return _PROPAGATORS[propagator](distance)


class NearFieldMicroscope(AbstractTrainMicroscope):
    """Near-field ptychography: `I = sum_m |D_z[P_m(r - r_j) O(r)]|**2` on the sample's grid.

    `D_z` is a same-grid propagator, Fresnel (paraxial) or angular spectrum (exact
    scalar), and the detector has the probe's shape. Both are unitary on the grid, so a
    frame sums to the exit wave's power, in photons when `|P|**2` is photons per pixel.

    **Sub-pixel positions.** A near-field pattern moves with the object, so the exit
    wave (computed with the probe moved by the sub-pixel remainder) is moved back by
    `-subpixel` with a Fourier shift before propagating. The prediction is then that of
    the object shifted exactly, for a band-limited exit wave that vanishes at the
    probe window's edges (the Fourier shift and the propagator are both periodic).

    **Diverging beam.** With `focus_to_sample = z1` (the distance from a point focus to
    the sample) and `distance = z2` (sample to detector), the Fresnel scaling theorem
    turns the cone-beam geometry into a plane-wave one: the pattern is the plane-wave
    propagation over the effective distance `z2 / M`, magnified by
    `M = (z1 + z2) / z1`. The detector pixel is then `M * dx` (`detector_pixel_size`): the train is the
    propagator over `z2 / M` followed by an `OpticalZoom(M)`.
    The probe must be given *without* the diverging spherical phase of the focus,
    which the theorem accounts for. The theorem is exact in the paraxial
    approximation, so `"fresnel"` is the consistent choice for a cone beam.

    **Arguments:**

    - `probe`: an `AbstractProbe` on the sample-plane grid.
    - `sample`: the `SampleFunction`, with the probe's pixel pitch.
    - `positions`: `(npos, 2)` scan positions `(x, y)` in metres, relative to the
      object's centre pixel.
    - `distance`: sample-to-detector distance `z2` in metres, > 0; required with a
      propagator name, `None` with a propagator Module.
    - `propagator`: `"fresnel"` (default), `"angular_spectrum"`, or a same-grid
      `AbstractPropagator` Module whose `distance` is `z2` (for instance
      `AngularSpectrum(z2, refractive_index=...)`).
    - `focus_to_sample`: `z1` in metres, > 0, for a diverging beam; `None` (default)
      for plane-wave illumination (a static choice).
    - `detector`: an optional `DetectorResponse` (background, per-frame scales); `None`
      (default) predicts the coherent intensity.
    """

    probe: AbstractProbe
    sample: SampleFunction
    positions: Float[Array, "npos 2"]
    propagator: AbstractPropagator
    focus_to_sample: Float[Array, ""] | None
    detector: DetectorResponse | None
    # A near-field pattern moves with the object: the exit wave is moved back before the propagator.
    moves_with_object: ClassVar[bool] = True

    def __init__(
        self,
        probe: AbstractProbe,
        sample: SampleFunction,
        positions: Float[ArrayLike, "npos 2"],
        *,
        distance: ScalarLike | None = None,
        propagator: str | AbstractPropagator = "fresnel",
        focus_to_sample: ScalarLike | None = None,
        detector: DetectorResponse | None = None,
    ):
        self.probe = probe_on_sample(probe, sample)
        self.sample = sample
        self.positions = real_array("positions", positions)
        self.propagator = _build_propagator(propagator, distance)
        if focus_to_sample is not None:
            focus_to_sample = real_array("focus_to_sample", focus_to_sample, shape=())
        self.focus_to_sample = focus_to_sample
        self.detector = detector

    def __check_init__(self):
        check_positive("distance", self.propagator.distance)
        if self.focus_to_sample is not None:
            check_positive("focus_to_sample", self.focus_to_sample)
        out = jax.eval_shape(self.propagator, self._wavefront(self.probe.fields(), self.sample.dx))
        if out.field.shape != self.probe.fields().shape:
            raise ValueError(
                f"`propagator` must keep the grid, but maps {self.probe.fields().shape} to {out.field.shape}"
            )

    def optics_aliases(self) -> dict[str, str | tuple[str, ...]]:
        return {"distance": "propagator.distance", "travel_distance": "propagator.distance"}

    def scale_leaves(self) -> tuple[str, ...]:
        return ("propagator.distance", "focus_to_sample")

    @property
    def distance(self) -> Float[Array, ""]:
        """Sample-to-detector distance `z2` in metres (the propagator's `distance` leaf)."""
        return self.propagator.distance

    @property
    def magnification(self) -> Float[Array, ""]:
        """Cone-beam magnification `M = (z1 + z2) / z1` (1 for a plane wave)."""
        if self.focus_to_sample is None:
            return jnp.ones((), self.distance.dtype)
        return (self.focus_to_sample + self.distance) / self.focus_to_sample

    @property
    def effective_distance(self) -> Float[Array, ""]:
        """The plane-wave propagation distance `z2 / M` of the Fresnel scaling theorem."""
        return self.distance / self.magnification

    def _effective_propagator(self) -> AbstractPropagator:
        if self.focus_to_sample is None:
            return self.propagator
        return eqx.tree_at(lambda p: p.distance, self.propagator, self.effective_distance)

    def train_at(self, subpixel: Float[Array, "2"] | None) -> OpticalTrain:
        """The propagator over the effective distance, then (cone beam) the magnification `M`.

        The Fresnel scaling theorem as a train: plane-wave propagation over `z2 / M`, then
        an `OpticalZoom(M)` onto the detector's grid of pitch `M * dx`. The same at every
        position.
        """
        del subpixel
        if self.focus_to_sample is None:
            return OpticalTrain(self.propagator)
        return OpticalTrain(self._effective_propagator(), OpticalZoom(self.magnification))
