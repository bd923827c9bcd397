"""The seed API for the simple microscope: field of view, starting point, and PIE.

Every function here works on one field of view (FOV), the one `compute_fov_and_positions`
defines, and on janssen's `SimpleMicroscope` forward model, which predicts the camera's
own pixels (no resampling of measured data). `simple_microscope_epie` is a thin layer
over `janssen.invert.reconstruct` with the `RPIE` engine.
"""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._custom_types import PairLike, ScalarLike
from ..._data import MicroscopeData
from ..._validate import check_positive, pair, real_array
from ...io._geometry_check import nearest_distances
from ...optics._probe import Probe
from ...optics._sample import SampleFunction
from ...optics._wavefront import OpticalWavefront
from ...scopes._simple import SimpleMicroscope
from .._engines.pie import RPIE, PIEState
from .._init import _bright_field_radius
from .._patterns import mean_pattern
from .._reconstruct import reconstruct
from .._residual import data_residual
from .types import EpieData, PtychographyParams, PtychographyReconstruction

# Positions that land within this many pixels above a whole number count as on it, so
# that metres -> pixels round-off never adds a column to the FOV.
_SNAP = 1e-6


def _padding_pair(padding, default: np.ndarray) -> np.ndarray:
    if padding is None:
        return default
    value = int(padding)
    if value < 0 or value != padding:
        raise ValueError(f"`padding` must be a non-negative integer number of pixels, got {padding!r}")
    return np.array([value, value])


def _fov(raw_px: np.ndarray, probe_shape: tuple[int, int], pad: np.ndarray) -> tuple[int, int, np.ndarray]:
    """FOV `(H, W)` and the probe-centre positions `(x, y)` in FOV pixels."""
    half = np.array([probe_shape[1] // 2, probe_shape[0] // 2])
    low = raw_px.min(axis=0)
    span = np.ceil(raw_px.max(axis=0) - low - _SNAP).clip(min=0).astype(int)
    width, height = span + 2 * pad + np.array([probe_shape[1], probe_shape[0]])
    return int(height), int(width), raw_px - low + pad + half


def compute_fov_and_positions(
    experimental_data: MicroscopeData,
    probe_lightwave: OpticalWavefront,
    padding: int | np.integer | None = None,
) -> tuple[int, int, Float[Array, "npos 2"], Float[Array, "2"]]:
    """The field of view that holds every scan position, and the positions in its pixels.

    Positions are converted from metres to pixels of the probe's pitch and translated so
    that the smallest `(x, y)` lands at `padding + half the probe` (the probe's centre
    pixel `(W // 2, H // 2)` is where a position puts the beam). The FOV is the scan's
    extent plus the probe plus `padding` on every side, so every probe patch lies inside
    it with at least `padding` pixels to spare.

    **Arguments:**

    - `experimental_data`: the measurements; only `positions` (metres, `(x, y)`) are used.
    - `probe_lightwave`: the probe; its grid shape and pitch `dx` set the pixels.
    - `padding`: extra pixels on every side; default half the probe size along each axis.

    **Returns:**

    `(fov_height, fov_width, positions_px, dx)`: Python ints, the `(npos, 2)` probe-centre
    positions `(x, y)` in FOV pixels, and the pixel pitch `(x, y)` in metres (the
    original returned a scalar `dx`; janssen keeps both axes).
    """
    dx = probe_lightwave.dx
    shape = tuple(probe_lightwave.shape)
    raw = np.asarray(experimental_data.positions, dtype=np.float64) / np.asarray(dx, dtype=np.float64)
    pad = _padding_pair(padding, np.array([shape[1] // 2, shape[0] // 2]))
    height, width, pos = _fov(raw, shape, pad)
    return height, width, jnp.asarray(pos, dtype=dx.dtype), dx


def _centred_metres(pos_px, height: int, width: int, dx) -> Float[Array, "npos 2"]:
    """FOV-pixel positions as metres relative to the FOV's centre pixel."""
    centre = jnp.array([width // 2, height // 2], dtype=pos_px.dtype)
    return (pos_px - centre[None]) * dx[None]


def _microscope(
    reconstruction: PtychographyReconstruction, camera_pixel_size, detector_shape: tuple[int, int]
) -> SimpleMicroscope:
    """The `SimpleMicroscope` a reconstruction describes."""
    wave = reconstruction.lightwave
    return SimpleMicroscope(
        Probe(wave.field, wave.wavelength, wave.dx),
        reconstruction.sample,
        reconstruction.translated_positions,
        zoom_factor=reconstruction.zoom_factor,
        aperture_diameter=reconstruction.aperture_diameter,
        aperture_center=reconstruction.aperture_center,
        travel_distance=reconstruction.travel_distance,
        camera_pixel_size=camera_pixel_size,
        detector_shape=tuple(detector_shape),
    )


@eqx.filter_jit
def _frame_totals(microscope: SimpleMicroscope, valid) -> Float[Array, " npos"]:
    return jnp.sum(microscope() * valid[None], axis=(1, 2))


def _starting_object(microscope: SimpleMicroscope, data: MicroscopeData, regularization: float) -> Array:
    """A uniform real transmission whose predicted counts match the measured total."""
    measured = jnp.sum(data.intensities * data.valid[None])
    predicted = jnp.sum(_frame_totals(microscope, data.valid))
    level = jnp.sqrt(measured / (predicted + regularization * jnp.maximum(measured, 1.0)))
    return jnp.full(microscope.sample.shape, level, microscope.sample.sample.dtype)


def init_simple_microscope(
    experimental_data: MicroscopeData,
    probe_lightwave: OpticalWavefront,
    zoom_factor: ScalarLike,
    aperture_diameter: ScalarLike,
    travel_distance: ScalarLike,
    camera_pixel_size: PairLike,
    aperture_center: PairLike | None = None,
    padding: int | np.integer | None = None,
    regularization: float = 1e-6,
    seed: int = 42,
) -> PtychographyReconstruction:
    """The starting point (iteration 0) of a simple-microscope reconstruction.

    Sets up the field of view of `compute_fov_and_positions` and a uniform, real
    starting object on it, scaled so that the predicted counts summed over all frames
    equal the measured ones (the probe keeps its own scale). Up to that global factor,
    which the object error removes, this is the unit object.

    Why not something smarter: the original's random-phase back-projection starts
    further from the truth than a unit object. A low-resolution absorption map (each
    frame's total counts against a unit object's, averaged under the probe) was tried
    and improved the object error by at most 2%, and not on every simulated dataset,
    so the simple, predictable start was kept. PIE moves away from it within a few
    sweeps (see `tests/test_seed_api.py`).

    **Arguments:**

    - `experimental_data`: the measurements (positions in metres, `(x, y)`).
    - `probe_lightwave`: the illumination, on the probe grid at the sample's pitch.
    - `zoom_factor`, `aperture_diameter`, `travel_distance`, `camera_pixel_size`,
      `aperture_center`: the `SimpleMicroscope`'s optics (metres); `None` centres the
      aperture.
    - `padding`: extra FOV pixels on every side; default half the probe size.
    - `regularization`: relative floor in the divisions (default 1e-6).
    - `seed`: accepted for compatibility with the original; the start is deterministic
      and does not use it.

    **Returns:**

    A `PtychographyReconstruction` whose `losses` hold the single row
    `(0, residual of the start)` (the original stored NaN there).
    """
    del seed
    check_positive("regularization", regularization)
    height, width, pos_px, dx = compute_fov_and_positions(experimental_data, probe_lightwave, padding)
    unit = SampleFunction(jnp.ones((height, width), probe_lightwave.field.dtype), dx)
    fresh = PtychographyReconstruction(
        unit,
        probe_lightwave,
        _centred_metres(pos_px, height, width, dx),
        zoom_factor,
        aperture_diameter,
        aperture_center,
        travel_distance,
        jnp.zeros((0, 2)),
    )
    microscope = _microscope(fresh, pair("camera_pixel_size", camera_pixel_size), experimental_data.frame_shape)
    level = _starting_object(microscope, experimental_data, regularization)
    start = eqx.tree_at(lambda m: m.sample.sample, microscope, level)
    loss = data_residual(start, experimental_data)
    return eqx.tree_at(
        lambda r: (r.sample, r.losses), fresh, (start.sample, jnp.array([[0.0, loss]], dtype=fresh.losses.dtype))
    )


#: Diameters of the probe guesses `init_simple_epie` tries, as factors of the scan-derived one.
_SEARCH_FACTORS = (0.5, 0.64, 0.8, 1.0, 1.25, 1.56, 1.95)
#: rPIE sweeps that score each guess (as `janssen.invert.search_probe`).
_SEARCH_ITERATIONS = 4


def _cycles_per_camera_pixel(microscope: SimpleMicroscope) -> float:
    """How many cycles per sample pixel one camera pixel spans, times the frame width (host-side).

    `1` when the camera samples the discrete Fourier grid of the sample's pixels (the
    "FFT-compatible" choice `effective_dx = wavelength * distance / (N * zoom * camera)`).
    """
    camera = np.asarray(microscope.propagator.output_dx, dtype=np.float64)
    zoomed = np.asarray(microscope.sample.dx * microscope.zoom.zoom_factor, dtype=np.float64)
    distance = float(microscope.propagator.distance)
    width = microscope.detector_shape[1]
    return float(np.mean(camera * zoomed) * width / (float(microscope.probe.wavelength) * distance))


def _probe_guess(microscope: SimpleMicroscope, mean: np.ndarray, diameter_px: float, sign: int) -> Array:
    """A sample-plane probe whose far field through the optics is `sqrt(mean)` with a defocus phase.

    The phase spreads the bright-field cone over a disc of `diameter_px` sample pixels
    (the rule of `janssen.invert.init_probe`, converted from camera pixels to sample
    pixels); the optics' adjoint takes it to the sample plane.
    """
    height, width = mean.shape
    fy = (np.arange(height) - height // 2) / height
    fx = (np.arange(width) - width // 2) / width
    f2 = fx[None, :] ** 2 + fy[:, None] ** 2
    scale = _cycles_per_camera_pixel(microscope)
    phase = -sign * np.pi * diameter_px * scale * f2 / (2 * _bright_field_radius(mean))
    dtype = microscope.probe.fields().dtype
    pupil = jnp.asarray(np.sqrt(mean) * np.exp(1j * phase), dtype=dtype)[None]
    return microscope.backpropagate(pupil, jnp.zeros(2, microscope.sample.dx.dtype))[0]


def _scored(microscope: SimpleMicroscope, data: MicroscopeData, probe: Array) -> float:
    """The residual after a few rPIE sweeps from `probe` and a uniform object (inf if the run failed)."""
    start = eqx.tree_at(lambda m: m.probe, microscope, microscope.probe.with_fields(probe[None]))
    start = eqx.tree_at(lambda m: m.sample.sample, start, _starting_object(start, data, 1e-6))
    solution = reconstruct(start, data, RPIE(), trainable=("object", "probe"), num_iterations=_SEARCH_ITERATIONS)
    return float(solution.losses[-1]) if solution.iteration == _SEARCH_ITERATIONS else float("inf")


def _searched_probe(microscope: SimpleMicroscope, data: MicroscopeData, spacing_px: float) -> Array:
    """The best-scoring guess over both sides of focus and `_SEARCH_FACTORS` of the scan's diameter."""
    mean = mean_pattern(data)
    base = spacing_px / (1 - 0.7)  # a linear overlap of 0.7, as `janssen.invert.init_probe`
    candidates = [_probe_guess(microscope, mean, factor * base, sign) for sign in (1, -1) for factor in _SEARCH_FACTORS]
    scores = [_scored(microscope, data, probe) for probe in candidates]
    return candidates[int(np.argmin(scores))]


def _median_spacing(raw_px: np.ndarray, default: float) -> float:
    if len(raw_px) < 2:
        return default
    return float(np.median(nearest_distances(raw_px)))


def init_simple_epie(
    experimental_data: MicroscopeData,
    effective_dx: PairLike,
    wavelength: ScalarLike,
    zoom_factor: ScalarLike,
    aperture_diameter: ScalarLike,
    travel_distance: ScalarLike,
    camera_pixel_size: PairLike,
    padding: int | np.integer | None = None,
) -> EpieData:
    """Pixel-unit inputs for a PIE reconstruction with no probe measurement at hand.

    The probe is guessed from the data, as janssen's default path does for far-field
    data (`janssen.invert.init_probe`, `search_probe`): a field whose far field through
    the microscope's optics (zoom, field stop, scaled Fraunhofer onto the camera) has
    the measured mean amplitude `sqrt(mean frame)`, given the quadratic phase of a
    defocus that spreads the bright field over a disc in the sample plane. Which side of
    focus and how large a disc are not in the mean frame; both signs and seven sizes
    (0.5 to 1.95 times `scan spacing / 0.3`) each start 4 rPIE sweeps from a uniform
    object, and the lowest residual wins. The original's plane wave through the stop
    ends far from the truth on focused-probe data: object error 0.997 after 30 rPIE
    sweeps of `simple_microscope_epie`, against 0.06 (0.04 with the phase ramp removed)
    from this guess (`tests/test_seed_api.py`).

    The guess lives on the camera frame's grid at `effective_dx`, scaled so that its
    power equals the mean counts per frame. The object is a unit transmission on a
    field of view built by the same rule as `compute_fov_and_positions` for that probe
    grid. The measured patterns are passed through unchanged: janssen's
    `SimpleMicroscope` evaluates the far field at the camera's own pixels, so the
    original's resampling onto an FFT grid (which lost energy and shifted the patterns)
    is not needed.

    **Arguments:**

    - `experimental_data`: the measurements.
    - `effective_dx`: sample-plane pixel in metres, scalar or `(x, y)`, > 0.
    - `wavelength`: metres, > 0.
    - `zoom_factor`: magnification, > 0.
    - `aperture_diameter`: metres in the image plane, > 0 (the field stop the guess is
      seen through).
    - `travel_distance`: aperture-to-camera distance in metres, > 0.
    - `camera_pixel_size`: metres, scalar or `(x, y)`, > 0.
    - `padding`: extra FOV pixels on every side; default half the aperture's size in
      sample pixels (the original's default).

    **Returns:**

    An `EpieData`.
    """
    dx = pair("effective_dx", effective_dx)
    wavelength = real_array("wavelength", wavelength, shape=())
    zoom_factor = real_array("zoom_factor", zoom_factor, shape=())
    for name, value in [
        ("effective_dx", dx),
        ("wavelength", wavelength),
        ("zoom_factor", zoom_factor),
        ("aperture_diameter", aperture_diameter),
        ("travel_distance", travel_distance),
        ("camera_pixel_size", camera_pixel_size),
    ]:
        check_positive(name, value)
    shape = tuple(experimental_data.frame_shape)
    stop = aperture_diameter / zoom_factor
    aperture_px = np.asarray(stop, dtype=np.float64) / np.asarray(dx, dtype=np.float64)
    pad = _padding_pair(padding, np.round(aperture_px / 2).astype(int))
    raw = np.asarray(experimental_data.positions, dtype=np.float64) / np.asarray(dx, dtype=np.float64)
    height, width, pos = _fov(raw, shape, pad)
    positions = jnp.asarray(pos - [width // 2, height // 2], dtype=dx.dtype)
    camera = pair("camera_pixel_size", camera_pixel_size)
    plane = jnp.ones(shape, jnp.result_type(complex))
    optics = SimpleMicroscope(
        Probe(plane, wavelength, dx),
        SampleFunction(jnp.ones((height, width), plane.dtype), dx),
        positions * dx[None],
        zoom_factor=zoom_factor,
        aperture_diameter=aperture_diameter,
        travel_distance=travel_distance,
        camera_pixel_size=camera,
        detector_shape=shape,
    )
    probe = _searched_probe(optics, experimental_data, _median_spacing(raw, min(shape) / 4))
    mean_counts = jnp.mean(jnp.sum(experimental_data.intensities * experimental_data.valid[None], axis=(1, 2)))
    probe = probe * jnp.sqrt(mean_counts / jnp.sum(jnp.abs(probe) ** 2)).astype(probe.dtype)
    return EpieData(
        experimental_data.intensities,
        probe,
        jnp.ones((height, width), probe.dtype),
        positions,
        dx,
        wavelength,
        camera,
        zoom_factor,
    )


def _resumable(reconstruction: PtychographyReconstruction, microscope: SimpleMicroscope):
    """The previous PIE `Solution` with the reconstruction's current microscope, else the microscope."""
    previous = reconstruction.solution
    if previous is None or not isinstance(previous.state, PIEState):
        return microscope
    return eqx.tree_at(lambda s: s.microscope, previous, microscope)


def _append_history(
    reconstruction: PtychographyReconstruction, solution, previous_count: int, *, step_scales=()
) -> PtychographyReconstruction:
    """The reconstruction after a run: new estimates, loss rows and snapshots appended.

    `step_scales` are the run's own (see `PtychographyReconstruction`); a run that has
    none leaves none.
    """
    offset = reconstruction.iteration
    new_losses = solution.losses[previous_count:]
    steps = jnp.arange(1, new_losses.shape[0] + 1, dtype=new_losses.dtype) + offset
    rows = jnp.concatenate([reconstruction.losses, jnp.stack([steps, new_losses], axis=1)])
    first = solution.iteration - new_losses.shape[0]
    lightwave = _lightwave(reconstruction.lightwave, solution.microscope)
    snapshots = tuple(
        (offset + it - first, m.sample, _lightwave(reconstruction.lightwave, m)) for it, m in solution.snapshots
    )
    return PtychographyReconstruction(
        solution.microscope.sample,
        lightwave,
        reconstruction.translated_positions,
        reconstruction.zoom_factor,
        reconstruction.aperture_diameter,
        reconstruction.aperture_center,
        reconstruction.travel_distance,
        rows,
        reconstruction.snapshots + snapshots,
        # The snapshots live in the reconstruction; the stored solution need not repeat them.
        dataclasses.replace(solution, snapshots=()),
        step_scales,
    )


def _lightwave(template: OpticalWavefront, microscope: SimpleMicroscope) -> OpticalWavefront:
    """The microscope's probe as a wavefront shaped like `template` (a 2-D field stays 2-D)."""
    return template.replace_field(microscope.probe.fields().reshape(template.field.shape))


def simple_microscope_epie(
    experimental_data: MicroscopeData,
    reconstruction: PtychographyReconstruction,
    params: PtychographyParams,
) -> PtychographyReconstruction:
    """Refine object and probe with the regularised PIE, resumably.

    Builds the `SimpleMicroscope` the reconstruction describes (same field of view as
    `init_simple_microscope`, camera pixel `params.camera_pixel_size`, camera frame
    shape from the data) and runs `params.num_iterations` sweeps of
    `janssen.invert.RPIE` (Maiden, Johnson & Li 2017) with `params.learning_rate` as
    the object step, through `janssen.invert.reconstruct`. The probe is refined from
    the second iteration on. The optics (zoom, aperture, distance) are not refined by
    PIE; `params`' bounds are therefore unused here.

    Passing the result back continues the same run: the PIE state, the iteration
    counter and the random order of positions carry over through
    `reconstruction.solution`, so two calls of N and M iterations equal one of N + M.
    If `reconstruction.solution` comes from another engine, PIE starts afresh from the
    reconstruction's estimates and the history is still appended.

    **Arguments:**

    - `experimental_data`: the measurements (frames and positions must match the
      reconstruction's positions).
    - `reconstruction`: from `init_simple_microscope` or a previous call.
    - `params`: `num_iterations`, `learning_rate` (the object step; ~1 is usual),
      `camera_pixel_size` and `save_every` are used.

    **Returns:**

    The updated `PtychographyReconstruction`: new sample and lightwave, one
    `(iteration, loss)` row per completed iteration appended (the RMS amplitude
    residual during the sweep), and a snapshot every `params.save_every` iterations.
    If a sweep produced non-finite values the run stops and the last finite estimate is
    returned with fewer rows.
    """
    microscope = _microscope(reconstruction, params.camera_pixel_size, experimental_data.frame_shape)
    start = _resumable(reconstruction, microscope)
    previous_count = 0 if start is microscope else int(start.losses.shape[0])
    solution = reconstruct(
        start,
        experimental_data,
        RPIE(object_step=float(params.learning_rate)),
        trainable=("object", "probe"),
        num_iterations=params.num_iterations,
        save_every=params.save_every,
    )
    return _append_history(reconstruction, solution, previous_count)
