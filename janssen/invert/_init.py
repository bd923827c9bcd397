"""Starting points for a reconstruction, built from the data alone."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Num, PRNGKeyArray

from .._data import MicroscopeData, frames_within
from ..io._geometry_check import nearest_distances
from ..optics._fft import ifft2c
from ..optics._probe import AbstractProbe, Probe
from ..optics._propagator.scaled_fraunhofer import ScaledFraunhofer
from ..optics._sample import SampleFunction
from ..optics._scan import object_shape_for
from ..scopes._detector import DetectorResponse
from ..scopes._far_field import FarFieldMicroscope
from ._engines.base import AbstractEngine
from ._init_detector import background_start
from ._patterns import fill_bad_pixels as fill_bad_pixels, mean_pattern
from ._ramp import align_probe_to_data, align_to_pattern


def _default_padding(probe_shape: tuple[int, int]) -> int:
    # The same margin `janssen.io.simulate` uses, so a reconstruction of simulated data
    # lands on the ground truth's grid.
    return min(probe_shape) // 8


def positions_in_object_frame(data: MicroscopeData) -> Float[Array, "npos 2"]:
    """The scan positions relative to the midpoint of their bounding box.

    `FarFieldMicroscope` measures positions from the object's centre pixel; centring the
    scan there makes the smallest object grid (`init_object`) hold every probe window.

    **Arguments:**

    - `data`: the measurements.

    **Returns:**

    `(npos, 2)` positions `(x, y)` in metres whose bounding box is centred on 0.
    """
    positions = data.positions
    midpoint = (jnp.max(positions, axis=0, keepdims=True) + jnp.min(positions, axis=0, keepdims=True)) / 2
    return positions - midpoint


def init_object(
    data: MicroscopeData,
    probe_shape: tuple[int, int],
    *,
    padding: int | None = None,
    dtype=None,
    pixel_size: Float[ArrayLike, "2"] | None = None,
) -> SampleFunction:
    """A uniform object (transmission 1) large enough for every probe window of the scan.

    The grid is `janssen.optics.object_shape_for` the centred scan
    (`positions_in_object_frame`) with `padding` pixels on every side; the pixel is the
    data's far-field object pixel `data.object_pixel_size`.

    **Arguments:**

    - `data`: the measurements.
    - `probe_shape`: `(H, W)` of the probe grid (the detector's shape).
    - `padding`: extra object pixels on every side, >= 0 (default `min(probe_shape) // 8`,
      as `janssen.io.simulate` uses).
    - `dtype`: complex dtype of the object (default: complex64, or complex128 when the
      data are float64).
    - `pixel_size`: the object pixel `(x, y)` in metres (default: the far-field
      `data.object_pixel_size`; the near field passes its sample pixel).

    **Returns:**

    A `SampleFunction` of ones.
    """
    padding = _default_padding(probe_shape) if padding is None else int(padding)
    if padding < 0:
        raise ValueError(f"`padding` must be >= 0 pixels, got {padding}")
    dx = data.object_pixel_size if pixel_size is None else jnp.asarray(pixel_size)
    shape = object_shape_for(positions_in_object_frame(data), dx, tuple(probe_shape), padding)
    dtype = jnp.result_type(data.intensities.dtype, jnp.complex64) if dtype is None else dtype
    return SampleFunction(jnp.ones(shape, dtype=dtype), dx)


def _scan_spacing_px(data: MicroscopeData) -> float:
    """Median nearest-neighbour distance of the scan, in object pixels (host-side)."""
    pos = np.asarray(data.positions, dtype=np.float64) / np.asarray(data.object_pixel_size, dtype=np.float64)
    if len(pos) < 2:
        return float(min(data.frame_shape)) / 4
    return float(np.median(nearest_distances(pos)))


def _bright_field_radius(mean: np.ndarray) -> float:
    """Radius of the bright field in cycles per object pixel (area above half the peak)."""
    height, width = mean.shape
    radius = np.sqrt(np.sum(mean > 0.5 * np.max(mean)) / np.pi) / max(height, width)
    return max(float(radius), 1.0 / max(height, width))


def init_probe(
    data: MicroscopeData,
    *,
    diameter_px: float | int | None = None,
    overlap: float | int = 0.7,
    defocus_sign: int = 1,
) -> Complex[Array, "1 y x"]:
    """A probe guess whose far field is the measured mean diffraction pattern.

    The detector field has the amplitude `sqrt(mean intensity)`, bad pixels filled from
    their neighbours (`fill_bad_pixels`), so its far-field extent is the measured
    bright-field disc and, the transform being unitary, a unit object predicts the
    measured mean counts per frame. Intensities carry no phase; the guess gets the
    quadratic (defocus) phase that spreads the bright-field cone over a disc of
    `diameter_px` object pixels in the sample plane. Which side of the focus the sample
    sits on is not in the mean pattern: `defocus_sign=1` is the sign of
    `janssen.io.make_focused_probe` (sample downstream of the focus), `-1` the other
    side. `search_probe` chooses both the sign and the diameter from the data. A flat
    phase (a focused spot) or the wrong sign makes PIE stall on defocused probes: on
    `simulate_preset("small")`, object error 0.55 and 0.64 after 30 rPIE iterations,
    against 0.02 with the right guess.

    **Arguments:**

    - `data`: the measurements.
    - `diameter_px`: illuminated disc diameter in object pixels. Default: from the scan,
      assuming a linear `overlap` between neighbours, `spacing / (1 - overlap)` with
      `spacing` the median nearest-neighbour distance.
    - `overlap`: assumed linear overlap, in `[0, 1)` (default 0.7).
    - `defocus_sign`: `1` or `-1`, the side of the focus (see above).

    **Returns:**

    `(1, H, W)` complex probe field.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must lie in [0, 1), got {overlap}")
    if defocus_sign not in (1, -1):
        raise ValueError(f"`defocus_sign` must be 1 or -1, got {defocus_sign!r}")
    diameter = _scan_spacing_px(data) / (1 - overlap) if diameter_px is None else float(diameter_px)
    if not diameter > 0:
        raise ValueError(f"`diameter_px` must be > 0, got {diameter}")
    return _defocused_guess(data, mean_pattern(data), diameter, defocus_sign)


def _defocused_guess(
    data: MicroscopeData, mean: np.ndarray, diameter: float, defocus_sign: int
) -> Complex[Array, "1 y x"]:
    """`init_probe`'s guess from the mean pattern (computed once by `search_probe` for all candidates)."""
    height, width = data.frame_shape
    fy = (np.arange(height) - height // 2) / height
    fx = (np.arange(width) - width // 2) / width
    f2 = fx[None, :] ** 2 + fy[:, None] ** 2
    # A defocus dz spreads a cone of cut-off f_max over 2 * wavelength * dz * f_max; in
    # pixel units the Fresnel phase pi * wavelength * dz * f**2 becomes this.
    phase = -defocus_sign * np.pi * diameter * f2 / (2 * _bright_field_radius(mean))
    dtype = jnp.result_type(data.intensities.dtype, jnp.complex64)
    pupil = jnp.asarray(np.sqrt(mean) * np.exp(1j * phase), dtype=dtype)
    return _guess_in_sample_plane(pupil, mean, data.valid)


@jax.jit
def _guess_in_sample_plane(pupil: Complex[Array, "y x"], mean: Float[ArrayLike, "y x"], valid: ArrayLike):
    """The detector-plane guess `pupil` in the sample plane, its far field centred on the bright field.

    One compiled program: op by op, the guess compiled 73 small programs that held 100 MB
    until the caches were cleared.
    """
    # The mean frame's intensity centroid is pulled off the beam by the object's own
    # scattering; centre the guess on the bright field's geometric centre instead (the
    # engines keep the probe's far-field centroid where it starts).
    return align_to_pattern(ifft2c(pupil)[None], mean, valid)


class ProbeSearch(eqx.Module):
    """What `search_probe` tried and what it chose.

    - `fields`: `(1, y, x)` the chosen probe guess.
    - `defocus_sign`, `diameter_px`: the chosen candidate.
    - `candidates`: `(sign, diameter_px, loss)` for every candidate tried, in order.
    - `background`: the detector background every candidate modelled
      (`background_start(data)`, `None` for none), for the start built on the guess.
    """

    fields: Complex[Array, "1 y x"]
    defocus_sign: int = eqx.field(static=True)
    diameter_px: float = eqx.field(static=True)
    candidates: tuple[tuple[int, float, float], ...] = eqx.field(static=True)
    background: float | None = eqx.field(static=True, default=None)


#: Diameters tried by `search_probe`, as factors of the scan-derived diameter: a factor
#: of 1.25 between neighbours (on the small preset a guess 0.6x or 1.6x the true size
#: stalls at object error 0.4 after 30 rPIE iterations).
SEARCH_FACTORS = (0.5, 0.64, 0.8, 1.0, 1.25, 1.56, 1.95)


#: Positions `search_probe` scores its candidates on, at most (see there).
SEARCH_POSITIONS = 512

#: Frame pixels, summed over the positions, `search_probe` scores its candidates on, at
#: most: 512 frames of 128 x 128 (see there).
SEARCH_PIXELS = 512 * 128 * 128

#: Positions `search_probe` scores on however large the frames, where the scan has them.
SEARCH_MIN_POSITIONS = 64


def central_indices(positions: ArrayLike, count: int) -> np.ndarray:
    """Indices of the `count` positions `(N, 2)` nearest the centre of their bounding box, in scan order."""
    positions = np.asarray(positions, dtype=np.float64)
    centre = (positions.max(axis=0) + positions.min(axis=0)) / 2
    return np.sort(np.argsort(np.sum((positions - centre) ** 2, axis=1), kind="stable")[: int(count)])


def _central_positions(data: MicroscopeData, count: int | None) -> MicroscopeData:
    """The `count` positions nearest the centre of the scan's bounding box (all if no more), in scan order."""
    if count is None or data.num_positions <= count:
        return data
    return data.batch(central_indices(data.positions, count))


def search_count(frame_shape: tuple[int, int], max_positions: int | None, max_pixels: int | None) -> int | None:
    """How many positions `search_probe` scores on frames of `frame_shape` (`None`: all)."""
    if max_pixels is None:
        return max_positions
    fitting = max(frames_within(frame_shape, max_pixels), SEARCH_MIN_POSITIONS)
    return fitting if max_positions is None else min(int(max_positions), fitting)


def search_probe(
    data: MicroscopeData,
    *,
    engine: AbstractEngine | None = None,
    iterations: int = 4,
    factors: tuple[float, ...] = SEARCH_FACTORS,
    overlap: float | int = 0.7,
    key: PRNGKeyArray | None = None,
    max_positions: int | None = SEARCH_POSITIONS,
    max_pixels: int | None = SEARCH_PIXELS,
) -> ProbeSearch:
    """Choose the probe guess's side of focus and size from the data.

    Every candidate `init_probe(data, diameter_px=f * d, defocus_sign=s)`, for `s` in
    `(1, -1)` and `f` in `factors` (`d` from the scan and `overlap`), starts `iterations`
    iterations of `engine` from a unit object; the candidate whose last iteration has the
    lowest loss wins. The losses separate clearly: on the small preset after 4 rPIE
    iterations the right sign and size reach 1.2 sqrt(counts), every other candidate
    stays above 3.6, and with the probe on the other side of focus the same search picks
    the other sign. All candidates have the same shapes, so the engine compiles once. A
    detector background is modelled where `background_start` finds one.

    **Arguments:**

    - `data`: far-field measurements.
    - `engine`: the engine that scores the candidates (default: sequential `RPIE()`).
    - `iterations`: iterations per candidate, >= 1 (default 4).
    - `factors`: diameters to try, as factors of the scan-derived diameter.
    - `overlap`: linear overlap assumed for the scan-derived diameter (see `init_probe`).
    - `key`: PRNG key of the candidates' runs (default `PRNGKey(0)`).
    - `max_positions`: the candidates are scored on at most this many positions, those
      nearest the centre of the scan (a compact patch of it), so that the search costs
      the same on any larger scan (default `SEARCH_POSITIONS`, 512; `None`: all). The
      mean pattern and the scan spacing the guesses are built from use every frame.
      On the xlarge preset (4000 frames of 512 x 512) scoring every position would take
      14 x 4 full iterations.
    - `max_pixels`: and on at most this many frame pixels in all, positions times pixels
      per frame, but on at least `SEARCH_MIN_POSITIONS` (64) positions (default
      `SEARCH_PIXELS`, 512 frames of 128 x 128; `None`: `max_positions` alone). Frames of
      up to 128 x 128 are scored on 512 positions, 256 x 256 on 128 and 512 x 512 on 64.
      On the large preset (1000 frames of 256 x 256) 128 positions pick the same side of
      focus and size as 512 do in a quarter of the time (29 s against 113 s on 2 CPU
      cores), and the copy of the scored frames is 34 MB, not 134 MB.

    **Returns:**

    A `ProbeSearch`.
    """
    from ._engines.pie import RPIE
    from ._reconstruct import reconstruct

    if iterations < 1:
        raise ValueError(f"`iterations` must be >= 1, got {iterations}")
    if max_positions is not None and (
        isinstance(max_positions, bool) or int(max_positions) != max_positions or max_positions < 1
    ):
        raise ValueError(f"`max_positions` must be an integer >= 1 or None, got {max_positions!r}")
    if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) != max_pixels or max_pixels < 1):
        raise ValueError(f"`max_pixels` must be an integer >= 1 or None, got {max_pixels!r}")
    if not factors or not all(f > 0 for f in factors):
        raise ValueError(f"`factors` must be a non-empty sequence of numbers > 0, got {factors!r}")
    engine = RPIE() if engine is None else engine
    base = _scan_spacing_px(data) / (1 - overlap)
    mean = mean_pattern(data)  # the same for every candidate: only the defocus phase differs
    background = background_start(data)  # modelled by every candidate where it matters
    scored = _central_positions(data, search_count(data.frame_shape, max_positions, max_pixels))
    best, tried = None, []
    for sign in (1, -1):
        for factor in factors:
            fields = _defocused_guess(data, mean, factor * base, sign)
            start = init_far_field_microscope(scored, fields, align=False, background=background)
            solution = reconstruct(start, scored, engine, num_iterations=iterations, key=key)
            loss = float(solution.losses[-1]) if solution.iteration == iterations else float("inf")
            tried.append((sign, factor * base, loss))
            if best is None or loss < best[0]:
                best = (loss, fields, sign, factor * base)
    assert best is not None
    return ProbeSearch(best[1], best[2], best[3], tuple(tried), background)


def scale_probe_to_counts(fields: Num[ArrayLike, "*modes y x"], data: MicroscopeData) -> Array:
    """`fields` scaled so that their power, `sum |P|**2` over modes and pixels, is the data's mean counts per frame.

    With a unit object the model then predicts the measured power. The counts are summed in
    float64 frame by frame, without a float64 copy of the frames.

    **Raises:** `ValueError` when `fields` are zero everywhere.
    """
    fields = jnp.asarray(fields)
    fields = fields.astype(jnp.promote_types(fields.dtype, jnp.float32))  # integer fields become real
    counts = float(np.mean(np.sum(np.asarray(data.intensities), axis=(1, 2), dtype=np.float64)))
    power = float(np.sum(np.abs(np.asarray(fields, dtype=np.complex128)) ** 2))
    if not power > 0:
        raise ValueError("`probe` must have some power to scale to the counts, got one zero everywhere")
    return fields * np.sqrt(counts / power).astype(fields.real.dtype)


def init_far_field_microscope(
    data: MicroscopeData,
    probe: AbstractProbe | Num[ArrayLike, "*modes y x"] | None = None,
    *,
    padding: int | None = None,
    refine_distance: bool = False,
    align: bool = True,
    background: float | str | None = "auto",
    scale_probe: bool = False,
) -> FarFieldMicroscope:
    """A `FarFieldMicroscope` ready for `reconstruct`: unit object, centred scan, probe guess.

    **Arguments:**

    - `data`: the measurements.
    - `probe`: the starting probe — an `AbstractProbe`, or a `(y, x)` / `(modes, y, x)`
      complex array on the detector's grid in the sample plane. Default: the guess
      `search_probe(data)` chooses (side of focus and size from the data), whose power
      is the measured mean counts per frame.
    - `padding`: extra object pixels on every side (see `init_object`).
    - `refine_distance`: propagate with a `ScaledFraunhofer` at the data's distance and
      camera pixel (same prediction, several times slower than the FFT), so that
      `trainable=["distance"]` can refine the distance.
    - `align`: tilt a given `probe` so that its far field is centred on the measured
      bright field (`align_probe_to_data`; the data-derived guess always is). The engines
      hold the probe's far-field centroid where the start puts it (the phase-ramp
      gauge), so a start a fraction of a pixel off leaves a ramp on the object: the true
      probe blurred, with a 0.3 rad phase error and 0.1-0.3 px off-centre, reached object
      errors of 0.34-0.49 through `default_schedule` as given, 0.009-0.011 aligned
      (independent simulator, either side of focus). `False` uses it as given.
    - `background`: a detector background in counts per pixel to model
      (`DetectorResponse`), `None` for none, or `"auto"` (default): `background_start(data)`,
      the estimated level where it exceeds 1 % of the mean counts per pixel.
    - `scale_probe`: scale a given `probe` so that its power (`sum |P|**2` over its modes
      and pixels) is the measured mean counts per frame, which a unit object then
      predicts (default `False`: its power as given). The guess is always so scaled.

    **Returns:**

    A `FarFieldMicroscope` whose positions are `positions_in_object_frame(data)`.
    """
    dx = data.object_pixel_size
    given = probe is not None
    if probe is None:
        search = search_probe(data)
        probe = Probe(search.fields, data.wavelength, dx)
        if isinstance(background, str) and background == "auto":
            background = search.background  # the same estimate, not a second pass over the frames
    elif not isinstance(probe, AbstractProbe):
        probe = Probe(np.asarray(probe), data.wavelength, dx)
    shape = tuple(probe.fields().shape[-2:])
    if shape != tuple(data.frame_shape):
        raise ValueError(f"`probe` must have the frame shape {tuple(data.frame_shape)}, got shape {shape}")
    if given and scale_probe:
        probe = probe.with_fields(scale_probe_to_counts(probe.fields(), data))
    if given and align:
        probe = probe.with_fields(align_probe_to_data(probe.fields(), data))
    sample = init_object(data, shape, padding=padding, dtype=probe.fields().dtype)
    propagator = ScaledFraunhofer(data.distance, data.camera_pixel_size, shape) if refine_distance else None
    if isinstance(background, str):
        if background != "auto":
            raise ValueError(f"`background` must be a level in counts, None or 'auto', got {background!r}")
        background = background_start(data)
    detector = None if background is None else DetectorResponse(background)
    return FarFieldMicroscope(probe, sample, positions_in_object_frame(data), propagator, detector=detector)
