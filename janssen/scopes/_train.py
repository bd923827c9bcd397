"""The optical train as a microscope: `AbstractTrainMicroscope` (the forward map once) and `TrainMicroscope`."""

import abc
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
from ._base import AbstractMicroscope, probe_on_sample
from ._detector import DetectorResponse


def check_field_shape(name: str, field: Complex[Array, "..."], shape: tuple[int, int]) -> None:
    """Raise unless the last two axes of `field` are `shape` (shapes are static: safe under jit)."""
    if tuple(field.shape[-2:]) != tuple(shape):
        raise ValueError(f"`{name}` must end in the shape {tuple(shape)}, got shape {tuple(field.shape)}")


def count_scale(camera_dx: Float[Array, "2"], sample_dx: Float[Array, "2"]) -> Float[Array, ""]:
    """`sqrt(camera pixel area / sample pixel area)`: a physical far field -> photons per camera pixel."""
    return jnp.sqrt(camera_dx[0] * camera_dx[1] / (sample_dx[0] * sample_dx[1]))


class AbstractTrainMicroscope(AbstractMicroscope):
    """A microscope whose optics after the sample are an `OpticalTrain`: the forward map written once.

    A subclass says which train a scan position sees (`train_at`) and whether the
    detector pattern moves with the object (`moves_with_object`); this class derives the
    rest from the train's members: the forward map (`propagate`, the fold of the
    members, in counts), its array adjoint (`backpropagate`, the reverse fold of their
    adjoints), the camera grid (`detector_shape`, `detector_pixel_size`), whether the
    far field is a bare FFT (`fourier_detector`) and whether the phase-ramp gauge applies
    (`phase_ramp_gauge`). `FarFieldMicroscope`, `NearFieldMicroscope`, `SimpleMicroscope`
    and `TrainMicroscope` are thin finals over it; a new member needs no code here or in
    an engine.

    **Counts.** Arrays hold counts: `|P|**2` is photons per sample pixel and the
    prediction photons per camera pixel. The physical field is the array over the square
    root of its pixel area, so the forward map is the train times
    `sqrt(camera pixel area / sample pixel area)` (skipped where every member keeps the
    pitch), and the array adjoint is the members' physical adjoints over that factor.

    **Sub-pixel positions.** The exit wave is computed with the probe moved by the
    sub-pixel remainder of its position. With `moves_with_object` the train's result must
    follow the object, so the exit wave is moved back by that remainder (a Fourier shift)
    before the train, and forward by it after the adjoint. A subclass whose optics move
    with the beam instead (an aperture fixed to the probe) moves them in `train_at`.
    """

    #: Whether the detector pattern moves when the object moves (static).
    moves_with_object: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def train_at(self, subpixel: Float[Array, "2"] | None) -> OpticalTrain:
        """The optics seen at a position whose probe sits `subpixel` pixels off its patch's grid.

        `None` asks for the reference train (its geometry: grids, names), which must have
        the same output grid as every position's.
        """

    def __check_init__(self):
        self.check_geometry()
        self.check_detector()

    # ---- derived from the train (never overridden) --------------------------------------

    def _wavefront(self, fields: Complex[Array, "modes y x"], dx: Float[Array, "2"]) -> OpticalWavefront:
        return OpticalWavefront(fields, self.probe.wavelength, dx)

    def _output_grid(self) -> tuple[Float[Array, "2"], tuple[int, int]]:
        return self.train_at(None).planes(self.probe.wavelength, self.sample.dx, self.probe_shape)[-1]

    def _keeps_pitch(self) -> bool:
        return all(bool(getattr(member, "keeps_pitch", False)) for member in self.train_at(None).members)

    @property
    def detector_shape(self) -> tuple[int, int]:
        return self._output_grid()[1]

    @property
    def detector_pixel_size(self) -> Float[Array, "2"]:
        """The camera pixel `(x, y)` in metres: the train's output pitch."""
        return self._output_grid()[0]

    @property
    def fourier_detector(self) -> bool:
        """The train is one member that declares `fourier_detector` (`FourierTransform`), on a static scan frame."""
        members = self.train_at(None).members
        return len(members) == 1 and bool(getattr(members[0], "fourier_detector", False)) and not self.moves_with_object

    @property
    def phase_ramp_gauge(self) -> bool:
        """Held where the detector sees the exit wave's far field alone (every member is far-field).

        The engines pin the gauge by the probe's far-field centroid. Through other optics
        that pin was measured to fail: ePIE through Fresnel -> phase plate -> Fraunhofer,
        from the true probe, ended at object error 0.999 with the pin (0.068 with the
        object's ramp removed), 0.0066 without it. There nothing is pinned and
        `run_schedule` levels the object's ramp at the end.
        """
        return all(bool(getattr(member, "far_field", False)) for member in self.train_at(None).members)

    def _counts(self, out_dx: Float[Array, "2"]) -> Float[Array, ""]:
        return count_scale(out_dx, self.sample.dx)

    def propagate(
        self, exit_waves: Complex[Array, "modes y x"], subpixel: Float[Array, "2"]
    ) -> Complex[Array, "channels dety detx"]:
        """Exit waves through the train onto the camera, in sqrt(photons) per camera pixel.

        A member may turn each mode into several incoherent channels (a binned sensor), so
        the leading axis of the result need not be the modes': it holds each mode's
        channels one after another (mode-major), which is what the PIE engines' mode
        statistics assume.
        """
        check_field_shape("exit_waves", exit_waves, self.probe_shape)
        if self.moves_with_object:
            exit_waves = fourier_shift(exit_waves, -subpixel)
        out = self.train_at(subpixel)(self._wavefront(exit_waves, self.sample.dx))
        if self._keeps_pitch():
            return out.field
        return out.field * self._counts(out.dx).astype(out.field.dtype)

    def backpropagate(
        self, detector_fields: Complex[Array, "channels dety detx"], subpixel: Float[Array, "2"]
    ) -> Complex[Array, "modes y x"]:
        """The array adjoint of `propagate` (plain sums over pixels in both planes)."""
        check_field_shape("detector_fields", detector_fields, self.detector_shape)
        train = self.train_at(subpixel)
        out_dx, _ = self._output_grid()
        back = train.adjoint(self._wavefront(detector_fields, out_dx), self.sample.dx, self.probe_shape).field
        if not self._keeps_pitch():
            # The members' adjoints are physical (pixel-area weighted); the array adjoint of
            # `c * A` is `A^H / c`. Times the reciprocal: XLA divides complex arrays slowly.
            back = back * (1.0 / self._counts(out_dx)).astype(back.dtype)
        if self.moves_with_object:
            back = fourier_shift(back, subpixel)
        return back


class TrainMicroscope(AbstractTrainMicroscope):
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
        self.probe = probe_on_sample(probe, sample)
        self.sample = sample
        self.positions = real_array("positions", positions)
        self.train = train if isinstance(train, OpticalTrain) else OpticalTrain(*train)
        self.detector = detector
        if not isinstance(moves_with_object, bool):
            raise ValueError(f"`moves_with_object` must be True or False, got {moves_with_object!r}")
        self.moves_with_object = moves_with_object

    def __check_init__(self):
        shape = jax.eval_shape(self.train, self._wavefront(self.probe.fields(), self.sample.dx)).field.shape
        if tuple(shape[-2:]) != self.detector_shape:
            raise ValueError(
                f"`train`: its members map the probe grid {self.probe_shape} to {tuple(shape[-2:])}, but their "
                f"`output_grid` says {self.detector_shape}: a member's output_grid disagrees with its forward map"
            )

    def train_at(self, subpixel: Float[Array, "2"] | None) -> OpticalTrain:
        """The train (the same at every position)."""
        del subpixel
        return self.train

    def optics_aliases(self) -> dict[str, str | tuple[str, ...]]:
        """Every member's names (`OpticalTrain.aliases`), as paths from the microscope."""
        return {name: tuple(f"train.{path}" for path in paths) for name, paths in self.train.aliases().items()}

    def scale_leaves(self) -> tuple[str, ...]:
        """The members' `scale_fields` (distances, magnifications), as paths from the microscope."""
        return tuple(f"train.{path}" for path in self.train.scale_leaves())
