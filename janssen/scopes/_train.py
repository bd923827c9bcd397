"""`TrainMicroscope`: probe x object, then any `OpticalTrain` onto the camera."""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float, Real

from .._validate import real_array
from ..optics._fft import fourier_shift
from ..optics._probe import AbstractProbe
from ..optics._sample import SampleFunction
from ..optics._train import OpticalTrain
from ..optics._wavefront import OpticalWavefront
from ._base import AbstractMicroscope
from ._detector import DetectorResponse
from ._simple import check_field_shape


def _pixel_root(dx: Float[Array, "2"]) -> Float[Array, ""]:
    return jnp.sqrt(dx[0] * dx[1])


class TrainMicroscope(AbstractMicroscope):
    """Ptychography through any optics: `I = sum_m |A[P_m(r - r_j) O(r)]|**2`, `A` an `OpticalTrain`.

    The exit wave leaves the sample on the probe's grid and passes the train's members
    in order (lenses, apertures, phase screens, your own elements, propagators) onto
    the camera, whose grid is the train's output grid. Arrays hold counts: `|P|**2` is
    photons per sample pixel and the prediction photons per camera pixel, so a train
    that conserves power (the propagators, phase-only elements) conserves the counts.
    The backward map is the array adjoint of that forward map, built from the members'
    own adjoints in reverse order; no member needs code in an engine.

    The PIE engines update object and probe through the train (they use `propagate` and
    `backpropagate`), the gradient and least-squares engines refine any member's array
    leaves: `trainable=` takes the members' declared names (`distance`, `focal_length`,
    `screen`, `aberrations`, `aperture`, ...: `trainable_aliases()`) or the path
    `train.members.<index>.<field>`.

    **Arguments:**

    - `probe`: an `AbstractProbe` on the sample-plane grid.
    - `sample`: the `SampleFunction`, with the probe's pixel pitch.
    - `positions`: `(npos, 2)` scan positions `(x, y)` in metres, relative to the
      object's centre pixel.
    - `train`: an `OpticalTrain`, or a sequence of members to build one from.
    - `detector`: an optional `DetectorResponse` (background, per-frame scales).
    - `moves_with_object`: whether the detector pattern moves when the object moves
      (static). `True` (default): the exit wave is moved back by the sub-pixel
      remainder of its position before the train (a Fourier shift), as for near-field
      optics and any train with a fixed element after the sample. `False` for a train
      whose intensity ignores a shift of the exit wave (a far-field transform right
      after the sample), which saves two FFTs a position.
    """

    probe: AbstractProbe
    sample: SampleFunction
    positions: Float[Array, "npos 2"]
    train: OpticalTrain
    detector: DetectorResponse | None
    moves_with_object: bool = eqx.field(static=True)

    def __init__(
        self,
        probe: AbstractProbe,
        sample: SampleFunction,
        positions: Real[ArrayLike, "npos 2"],
        train: OpticalTrain | Sequence[Any],
        *,
        detector: DetectorResponse | None = None,
        moves_with_object: bool = True,
    ):
        self.probe = probe
        self.sample = sample
        self.positions = real_array("positions", positions)
        self.train = train if isinstance(train, OpticalTrain) else OpticalTrain(*train)
        self.detector = detector
        if not isinstance(moves_with_object, bool):
            raise ValueError(f"`moves_with_object` must be True or False, got {moves_with_object!r}")
        self.moves_with_object = moves_with_object

    def __check_init__(self):
        self.check_geometry()
        self.check_detector()
        shape = jax.eval_shape(self.train, self._wavefront(self.probe.fields(), self.sample.dx)).field.shape
        if tuple(shape[-2:]) != self.detector_shape:
            raise ValueError(
                f"`train`: its members map the probe grid {self.probe_shape} to {tuple(shape[-2:])}, but their "
                f"`output_grid` says {self.detector_shape}: a member's output_grid disagrees with its forward map"
            )

    def _wavefront(self, fields: Complex[Array, "modes y x"], dx: Float[Array, "2"]) -> OpticalWavefront:
        return OpticalWavefront(fields, self.probe.wavelength, dx)

    def _output_grid(self) -> tuple[Float[Array, "2"], tuple[int, int]]:
        return self.train.planes(self.probe.wavelength, self.sample.dx, self.probe_shape)[-1]

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self._output_grid()[1]

    @property
    def detector_pixel_size(self) -> Float[Array, "2"]:
        """The camera pixel `(x, y)` in metres: the train's output pitch."""
        return self._output_grid()[0]

    @property
    def phase_ramp_gauge(self) -> bool:
        """Held where the detector sees the exit wave's far field alone (every member is far-field).

        The engines pin the gauge by the probe's far-field centroid, as for
        `FarFieldMicroscope`. Through other optics that pin was measured to fail: ePIE
        through Fresnel -> phase plate -> Fraunhofer, from the true probe, ended at object
        error 0.999 with the pin (0.068 with the object's ramp removed), 0.0066 without
        it. There nothing is pinned and `run_schedule` levels the object's ramp at the end.
        """
        return all(bool(getattr(member, "far_field", False)) for member in self.train.members)

    def optics_aliases(self) -> dict[str, str | tuple[str, ...]]:
        """Every member's names (`OpticalTrain.aliases`), as paths from the microscope."""
        return {name: tuple(f"train.{path}" for path in paths) for name, paths in self.train.aliases().items()}

    def scale_leaves(self) -> tuple[str, ...]:
        """The members' `scale_fields` (distances, magnifications), as paths from the microscope."""
        return tuple(f"train.{path}" for path in self.train.scale_leaves())

    def _counts(self) -> Float[Array, ""]:
        # Arrays hold counts per pixel: the physical field is the array over sqrt(pixel area).
        return _pixel_root(self._output_grid()[0]) / _pixel_root(self.sample.dx)

    def propagate(self, exit_waves: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]):
        check_field_shape("exit_waves", exit_waves, self.probe_shape)
        if self.moves_with_object:
            exit_waves = fourier_shift(exit_waves, -subpixel)
        out = self.train(self._wavefront(exit_waves, self.sample.dx)).field
        return out * self._counts().astype(out.dtype)

    def backpropagate(self, detector_fields: Complex[Array, "modes dety detx"], subpixel: Float[Array, "2"]):
        check_field_shape("detector_fields", detector_fields, self.detector_shape)
        dx_out, _ = self._output_grid()
        back = self.train.adjoint(self._wavefront(detector_fields, dx_out), self.sample.dx, self.probe_shape).field
        back = back * (1.0 / self._counts()).astype(back.dtype)
        if self.moves_with_object:
            back = fourier_shift(back, subpixel)
        return back
