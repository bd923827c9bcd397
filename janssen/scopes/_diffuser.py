"""`diffuser_microscope`: object -> free space -> diffuser -> free space -> (binned) sensor."""

from jaxtyping import ArrayLike, Num, Real

from .._custom_types import ScalarLike
from ..optics._binning import PixelBinning
from ..optics._elements.phase_screen import PhaseScreen
from ..optics._probe import AbstractProbe
from ..optics._propagator.angular_spectrum import AngularSpectrum
from ..optics._sample import SampleFunction
from ._detector import DetectorResponse
from ._train import TrainMicroscope


def diffuser_microscope(
    probe: AbstractProbe,
    sample: SampleFunction,
    positions: Real[ArrayLike, "npos 2"],
    diffuser: Num[ArrayLike, "y x"] | PhaseScreen,
    *,
    distance_to_diffuser: ScalarLike,
    distance_to_sensor: ScalarLike,
    binning: int = 1,
    pixel_response: Real[ArrayLike, "y x"] | None = None,
    refractive_index: ScalarLike = 1.0,
    detector: DetectorResponse | None = None,
) -> TrainMicroscope:
    """Diffuser (coded-surface) ptychography: the geometry of the seed's `epie_optical`.

    The exit wave `P(r - r_j) O(r)` travels `distance_to_diffuser` to a thin diffuser
    that is fixed in the frame of the probe and the sensor, passes it, and travels
    `distance_to_sensor` to a sensor that may integrate `binning x binning` blocks of
    the fine grid (`janssen.optics.PixelBinning`), each fine pixel weighted by
    `pixel_response`. Both distances are `AngularSpectrum` propagations on the probe's
    grid, so the diffuser's transmission has the probe's shape and pitch:

    `I_j = sum_block response * |AS(d2)[D * AS(d1)[P(r - r_j) O(r)]]|**2`.

    The result is a `janssen.scopes.TrainMicroscope` with members `AngularSpectrum(d1)
    -> PhaseScreen(D) -> AngularSpectrum(d2)` (then `PixelBinning` when `binning > 1` or
    a response is given). Its `trainable=` names are the train's: `"screen"` (the
    diffuser), `"distance"` (both distances), `"pixel_response"`, beside `"object"`,
    `"probe"` and `"positions"`. The exit wave is moved back by each position's
    sub-pixel remainder before the train (`moves_with_object=True`): the diffuser does
    not move with the object.

    **Arguments:**

    - `probe`: the illumination on the `(H, W)` grid at the sample's pitch (a uniform
      probe makes the object itself the moving field, as in the seed).
    - `sample`: the `SampleFunction`, at least the probe's size.
    - `positions`: `(npos, 2)` positions `(x, y)` in metres from the object's centre pixel.
    - `diffuser`: the diffuser's complex `(H, W)` transmission, or a `PhaseScreen`.
    - `distance_to_diffuser`, `distance_to_sensor`: metres (keyword-only).
    - `binning`: fine pixels per sensor pixel along each axis (default 1: no binning).
    - `pixel_response`: `(H, W)` sensitivity of the fine pixels, >= 0 (default 1).
    - `refractive_index`: of the medium both propagations cross (default 1).
    - `detector`: an optional `DetectorResponse` (background, per-frame scales).

    **Returns:**

    The `TrainMicroscope`; its camera is `(H // binning, W // binning)` pixels of
    `binning` times the sample pitch.
    """
    screen = diffuser if isinstance(diffuser, PhaseScreen) else PhaseScreen(diffuser)
    members = [
        AngularSpectrum(distance_to_diffuser, refractive_index),
        screen,
        AngularSpectrum(distance_to_sensor, refractive_index),
    ]
    if binning != 1 or pixel_response is not None:
        members.append(PixelBinning(binning, pixel_response))
    return TrainMicroscope(probe, sample, positions, members, detector=detector, moves_with_object=True)
