"""Simulated far-field ptychography datasets with a known ground truth.

The pieces (scan patterns, a test object, a focused probe) are public so that tests
and examples can assemble their own problems; `simulate` puts them together and
`simulate_preset` names four standard sizes (`simulate_preset_cxi` writes them to a file lazily).
"""

import functools
import math
from collections.abc import Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, PRNGKeyArray, Real

from .._custom_types import PairLike, ScalarLike
from .._data import MicroscopeData
from .._validate import check_positive, complex_array, pair, real_array
from ..optics._coherence import polynomial_modes, schell_modes
from ..optics._fft import frequency_grid, ifft2c
from ..optics._probe import Probe
from ..optics._sample import SampleFunction
from ..optics._scan import object_shape_for
from ..scopes._far_field import FarFieldMicroscope
from ._nominal import NOMINAL_CAMERA_PIXEL_SIZE, NOMINAL_DISTANCE, NOMINAL_WAVELENGTH

# Median nearest-neighbour distance of the sunflower pattern r_k = sqrt(k + 1/2),
# theta_k = k * golden angle (measured: 1.68 for 100 points, 1.69 for 1000).
_SPIRAL_SPACING = 1.69
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


class SimulatedDataset(eqx.Module):
    """A simulated dataset together with the ground truth that produced it.

    The truth lives in the frame the data use: `positions` equal `data.positions`
    (metres, `(x, y)`, relative to the object's centre pixel) and the object's pixel is
    the data's far-field object pixel `data.object_pixel_size`. So
    `FarFieldMicroscope(Probe(probe, ...), SampleFunction(object, ...), positions)`
    (see `microscope`) predicts the expectation of `data.intensities` exactly.

    **Arguments:**

    - `data`: the noisy `MicroscopeData`.
    - `object`: `(Y, X)` complex transmission of the object.
    - `probe`: `(modes, y, x)` probe modes, scaled to the simulated photon count
      (mutually incoherent; the intensity is the sum over modes). A `(y, x)` array
      means one mode.
    - `positions`: `(npos, 2)` scan positions in metres, columns `(x, y)`.
    """

    data: MicroscopeData
    object: Complex[Array, "Y X"]
    probe: Complex[Array, "modes y x"]
    positions: Float[Array, "npos 2"]

    def __init__(
        self,
        data: MicroscopeData,
        object: Complex[ArrayLike, "Y X"],
        probe: Complex[ArrayLike, "*modes y x"],
        positions: Real[ArrayLike, "npos 2"],
    ):
        self.data = data
        self.object = complex_array("object", object, ndim=2)
        probe = complex_array("probe", probe)
        self.probe = probe[None] if probe.ndim == 2 else probe
        self.positions = real_array("positions", positions)

    def __check_init__(self):
        if self.probe.ndim != 3 or self.probe.shape[-2:] != self.data.frame_shape:
            raise ValueError(
                f"`probe` must have shape (modes, {self.data.frame_shape[0]}, {self.data.frame_shape[1]}) "
                f"(the frame shape), got shape {self.probe.shape}"
            )
        if self.positions.shape != self.data.positions.shape:
            raise ValueError(
                f"`positions` must have the data's shape {self.data.positions.shape}, got shape {self.positions.shape}"
            )

    @property
    def object_pixel_size(self) -> Float[Array, "2"]:
        """The object's pixel `(x, y)` in metres (the data's far-field object pixel)."""
        return self.data.object_pixel_size

    def microscope(self) -> FarFieldMicroscope:
        """The ground truth as a `FarFieldMicroscope` (its prediction is the noiseless data)."""
        dx = self.object_pixel_size
        probe = Probe(self.probe, self.data.wavelength, dx)
        return FarFieldMicroscope(probe, SampleFunction(self.object, dx), self.positions)

    def expected_intensities(self) -> Float[Array, "npos y x"]:
        """The noiseless intensities: the expectation of `data.intensities`."""
        return _expected_intensities(self.microscope())


# ---- scan patterns ----------------------------------------------------------------------


def raster_scan(
    n_x: int,
    n_y: int,
    step: PairLike,
    *,
    jitter: ScalarLike = 0.0,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "npos 2"]:
    """A rectangular grid of scan positions, centred on zero.

    Rows of constant `y` follow one another; `x` runs fastest. A regular grid gives the
    periodic "raster grid pathology" in reconstructions; a little `jitter` (or a
    `fermat_spiral_scan`) avoids it.

    **Arguments:**

    - `n_x`, `n_y`: number of columns and rows (>= 1).
    - `step`: grid spacing in metres, scalar or `(x, y)`, > 0.
    - `jitter`: each position moves by a uniform random offset in
      `[-jitter, jitter]` metres along each axis (default 0).
    - `key`: PRNG key, required when `jitter > 0`.

    **Returns:**

    `(n_x * n_y, 2)` positions `(x, y)` in metres with mean exactly zero (after jitter
    the whole scan is moved back to zero mean, so a position lies within `2 * jitter`
    of its grid point).
    """
    _check_count("n_x", n_x)
    _check_count("n_y", n_y)
    step = pair("step", step)
    check_positive("step", step)
    x = (jnp.arange(n_x) - (n_x - 1) / 2) * step[0]
    y = (jnp.arange(n_y) - (n_y - 1) / 2) * step[1]
    grid = jnp.stack(
        [jnp.broadcast_to(x[None, :], (n_y, n_x)).ravel(), jnp.broadcast_to(y[:, None], (n_y, n_x)).ravel()],
        axis=1,
    )
    return _jittered(grid, jitter, key)


def fermat_spiral_scan(
    num_positions: int,
    step: ScalarLike,
    *,
    jitter: ScalarLike = 0.0,
    key: PRNGKeyArray | None = None,
) -> Float[Array, "npos 2"]:
    """Scan positions on a Fermat (sunflower) spiral, centred on zero.

    Point `k` sits at radius `c sqrt(k + 1/2)` and angle `k` times the golden angle
    (Huang et al., Opt. Express 22, 12634 (2014)), which covers a disc uniformly with no
    translational symmetry. `c` is chosen so that the median distance to the nearest
    neighbour is `step`.

    **Arguments:**

    - `num_positions`: number of positions (>= 1).
    - `step`: the median nearest-neighbour distance in metres, > 0.
    - `jitter`, `key`: as in `raster_scan`.

    **Returns:**

    `(num_positions, 2)` positions `(x, y)` in metres with mean exactly zero.
    """
    _check_count("num_positions", num_positions)
    step = real_array("step", step, shape=())
    check_positive("step", step)
    return _jittered(_spiral(num_positions, step), jitter, key)


@functools.partial(jax.jit, static_argnums=0)
def _spiral(num_positions: int, step: Float[Array, ""]) -> Float[Array, "npos 2"]:
    k = jnp.arange(num_positions, dtype=step.dtype)
    radius = step / _SPIRAL_SPACING * jnp.sqrt(k + 0.5)
    angle = k * _GOLDEN_ANGLE
    spiral = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=1)
    return spiral - jnp.mean(spiral, axis=0, keepdims=True)


def _check_count(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}")


def _jittered(
    positions: Float[Array, "npos 2"], jitter: ScalarLike, key: PRNGKeyArray | None
) -> Float[Array, "npos 2"]:
    jitter = float(jitter)
    if not (math.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"`jitter` must be finite and >= 0 metres, got {jitter}")
    if jitter == 0:
        return positions
    if key is None:
        raise ValueError(f"`key` is required when `jitter` > 0 (got jitter={jitter} and key=None)")
    offsets = jr.uniform(key, positions.shape, positions.dtype, minval=-jitter, maxval=jitter)
    moved = positions + offsets
    return moved - jnp.mean(moved, axis=0, keepdims=True)


# ---- ground-truth object ----------------------------------------------------------------


def make_test_object(
    shape: tuple[int, int],
    *,
    key: PRNGKeyArray,
    max_phase: ScalarLike = 2.5,
    min_amplitude: ScalarLike = 0.4,
) -> Complex[Array, "Y X"]:
    """A random complex transmission with structure at every scale.

    The phase follows a "thickness" map mixing smooth clouds (a random field with the
    `1/f` amplitude spectrum of natural images) and sharp-edged blobs of many sizes
    (a thresholded random field), so reconstructions are judged on both smooth
    gradients and edges. The absorption half follows the thickness and half an
    independent random field, so amplitude and phase are related but not identical.

    **Arguments:**

    - `shape`: `(Y, X)` in pixels.
    - `key`: PRNG key (same key, same object).
    - `max_phase`: the phase spans `[0, max_phase]` radians (default 2.5).
    - `min_amplitude`: the amplitude spans `[min_amplitude, 1]`; must lie in `(0, 1]`
      (default 0.4).

    With the defaults a unit object `1` is about 0.5 away from the result in janssen's
    object-error metric (`|T - gamma 1| / |T|` with the best complex scale `gamma`):
    strong enough contrast that a failed reconstruction cannot look good.

    **Returns:**

    A complex `(Y, X)` array.
    """
    _check_shape("shape", shape)
    max_phase = float(max_phase)
    min_amplitude = float(min_amplitude)
    if not (math.isfinite(max_phase) and max_phase >= 0):
        raise ValueError(f"`max_phase` must be finite and >= 0 radians, got {max_phase}")
    if not 0 < min_amplitude <= 1:
        raise ValueError(f"`min_amplitude` must lie in (0, 1], got {min_amplitude}")
    return _test_object(tuple(shape), key, max_phase, min_amplitude)


@functools.partial(jax.jit, static_argnums=0)
def _test_object(
    shape: tuple[int, int], key: PRNGKeyArray, max_phase: ScalarLike, min_amplitude: ScalarLike
) -> Complex[Array, "Y X"]:
    k_clouds, k_blobs, k_absorb = jr.split(key, 3)
    clouds = _rescale(_power_law_field(k_clouds, shape, exponent=1.0))
    blobs = (_power_law_field(k_blobs, shape, exponent=1.5) > 0).astype(clouds.dtype)
    thickness = _rescale(0.6 * clouds + 0.4 * blobs)
    absorption = _rescale(0.5 * thickness + 0.5 * _rescale(_power_law_field(k_absorb, shape, exponent=1.0)))
    amplitude = 1.0 - (1.0 - min_amplitude) * absorption
    return amplitude * jnp.exp(1j * max_phase * thickness)


def _power_law_field(key: PRNGKeyArray, shape: tuple[int, int], *, exponent: float) -> Float[Array, "Y X"]:
    """A real Gaussian random field whose amplitude spectrum falls as `1 / f**exponent`."""
    k_re, k_im = jr.split(key)
    dtype = jnp.result_type(float)
    white = jr.normal(k_re, shape, dtype) + 1j * jr.normal(k_im, shape, dtype)
    fx, fy = frequency_grid(shape, jnp.ones(2, dtype))
    f = jnp.sqrt(fx**2 + fy**2)
    # No zero-frequency term: the mean is irrelevant once the field is rescaled.
    envelope = jnp.where(f > 0, 1.0 / jnp.where(f > 0, f, 1.0) ** exponent, 0.0)
    return ifft2c(white * envelope).real


def _rescale(field: Float[Array, "Y X"]) -> Float[Array, "Y X"]:
    """`field` mapped linearly onto `[0, 1]`."""
    low, high = jnp.min(field), jnp.max(field)
    return (field - low) / jnp.where(high > low, high - low, 1.0)


def _check_shape(name: str, shape: tuple[int, int]) -> None:
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"`{name}` must be a (height, width) pair of positive integers, got {shape}")


# ---- probe ------------------------------------------------------------------------------


def make_focused_probe(
    shape: tuple[int, int],
    dx: PairLike,
    wavelength: ScalarLike,
    *,
    diameter_px: ScalarLike,
    modes: int = 1,
    pupil_fraction: ScalarLike = 0.5,
    central_stop: ScalarLike = 0.0,
    coherence_width: PairLike | None = None,
    beam_width: PairLike | None = None,
) -> Complex[Array, "modes y x"]:
    """A defocused probe from a circular pupil, as made by a lens or zone plate.

    The pupil is a disc in the detector plane (optionally with a central stop) carrying
    the Fresnel phase of a defocus `dz`; the probe is its inverse Fourier transform
    (`janssen.optics.ifft2c`). The defocus is chosen so that the cone of light, of
    half-angle `wavelength * f_max` with `f_max` the pupil's cut-off frequency, is
    `diameter_px` pixels wide in the sample plane: `dz = diameter / (2 wavelength
    f_max)`. The result is a compact disc with Fresnel fringes and a diffraction-limited
    edge, and its far field fills `pupil_fraction` of the detector.

    **Partial coherence** (`coherence_width` given). The lens is lit by a Schell-model
    beam: its degree of coherence across the pupil is the Gaussian
    `mu(f1 - f2) = exp(-(fx1 - fx2)**2 / (2 mx**2) - (fy1 - fy2)**2 / (2 my**2))`,
    so the pupil's cross-spectral density is
    `W(f1, f2) = A(f1) conj(A(f2)) g(f1) g(f2) mu(f1 - f2)`, with `A` the coherent pupil
    field above and `g` the beam's amplitude envelope (`1`: the beam overfills the
    lens, the usual case; with `beam_width`, `exp(-fx**2 / (4 sx**2) - fy**2 / (4 sy**2))`,
    a Gaussian–Schell-model beam). This is the same as an incoherent Gaussian source
    imaged onto the sample: every source point gives the coherent probe, shifted. The
    cone maps pupil frequency `f` onto the sample-plane position `wavelength * dz * f`,
    so the widths are given where they act, in the sample plane:
    `coherence_width = wavelength * dz * m` is the rms width of the degree of coherence
    across the illuminated disc in geometric optics (at the presets' Fresnel numbers
    the disc's own fringes lower `|mu|` at one coherence width from 0.61 to about
    0.55), and `beam_width = wavelength * dz * s` the rms width the unclipped beam
    would have there. The returned modes are the `modes` strongest eigenmodes of `W` (Wolf's
    coherent modes), computed numerically: the separable kernel `g g mu` is
    diagonalised along each axis on the pupil's support (`eigh`), the strongest
    products of the two axes' eigenvectors (at most `max(128, 4 * modes)`) are
    multiplied by `A`, and the eigenvectors of those fields' Gram matrix turn them into
    the eigenmodes of `W` with their eigenvalues. The weights are the eigenvalues of
    the kept modes, normalised to a total power of 1 (the power of the weaker modes is
    dropped: the result is the best rank-`modes` approximation of the beam,
    renormalised). For a Gaussian–Schell beam that the aperture does not clip, they are
    the analytic ratios `q_x**m q_y**n` (`janssen.optics.gsm_parameters`).

    Without `coherence_width`, `modes > 1` makes extra modes from the pupil field times
    low-order polynomials of the pupil coordinates (`1, u, v, u**2, uv, v**2, ...`),
    made orthogonal by a QR decomposition; mode `m` carries a power proportional to
    `2**-m`. This is a simple stand-in, not a physical coherence model.

    **Arguments:**

    - `shape`: `(H, W)` of the probe grid (the detector's shape).
    - `dx`: sample-plane pixel in metres, scalar or `(x, y)`, > 0.
    - `wavelength`: metres, > 0.
    - `diameter_px`: diameter of the illuminated disc in (the larger) sample-plane
      pixels, in `(0, min(shape))`.
    - `modes`: number of mutually incoherent modes (>= 1).
    - `pupil_fraction`: pupil diameter as a fraction of the detector's width, in
      `(0, 1]` (default 0.5).
    - `central_stop`: diameter of an opaque central stop as a fraction of the pupil's,
      in `[0, 1)` (default 0, none).
    - `coherence_width`: rms width of the degree of coherence in the sample plane, in
      metres, scalar or `(x, y)`, > 0; `None` (default) for a coherent beam (or the
      polynomial stand-in when `modes > 1`).
    - `beam_width`: rms width of the Gaussian–Schell beam's intensity, mapped onto the
      sample plane, in metres, scalar or `(x, y)`, > 0; `None` (default) for a beam
      that lights the pupil uniformly. Only with `coherence_width`.

    **Returns:**

    `(modes, H, W)` complex modes, orthogonal, with total power `sum |P|**2` equal to 1
    (the weights folded in: mode `m` carries power `sum |P[m]|**2`).
    """
    _check_shape("shape", shape)
    dx = pair("dx", dx)
    wavelength = real_array("wavelength", wavelength, shape=())
    check_positive("dx", dx)
    check_positive("wavelength", wavelength)
    diameter_px, pupil_fraction, central_stop = float(diameter_px), float(pupil_fraction), float(central_stop)
    if not 0 < diameter_px < min(shape):
        raise ValueError(f"`diameter_px` must lie in (0, {min(shape)}) (inside the grid), got {diameter_px}")
    if not 0 < pupil_fraction <= 1:
        raise ValueError(f"`pupil_fraction` must lie in (0, 1], got {pupil_fraction}")
    if not 0 <= central_stop < 1:
        raise ValueError(f"`central_stop` must lie in [0, 1), got {central_stop}")
    _check_count("modes", modes)
    pupil = _Pupil(tuple(shape), dx, wavelength, diameter_px, pupil_fraction, central_stop)
    if coherence_width is None:
        if beam_width is not None:
            raise ValueError("`beam_width` describes a partially coherent beam: give `coherence_width` with it")
        return _focused_probe(pupil, modes)
    coherence_width = _positive_pair("coherence_width", coherence_width)
    beam_width = None if beam_width is None else _positive_pair("beam_width", beam_width)
    return _partially_coherent_probe(pupil, modes, coherence_width, beam_width)


def _positive_pair(name: str, value: PairLike) -> Float[Array, "2"]:
    value = pair(name, value)
    check_positive(name, value)
    return value


class _Pupil(eqx.Module):
    """The coherent pupil of `make_focused_probe`: a disc with the Fresnel phase of a defocus."""

    shape: tuple[int, int] = eqx.field(static=True)
    dx: Float[Array, "2"]
    wavelength: Float[Array, ""]
    diameter_px: ScalarLike
    pupil_fraction: ScalarLike
    central_stop: ScalarLike

    @property
    def f_max(self) -> Float[Array, ""]:
        """The pupil's cut-off frequency (1/m)."""
        return self.pupil_fraction / (2 * jnp.max(self.dx))

    @property
    def defocus(self) -> Float[Array, ""]:
        """`dz` such that the cone is `diameter_px` pixels wide in the sample plane."""
        return self.diameter_px * jnp.max(self.dx) / (2 * self.wavelength * self.f_max)

    def field(self) -> Complex[Array, "y x"]:
        fx, fy = frequency_grid(self.shape, self.dx)
        f2 = fx**2 + fy**2
        inside = (f2 <= self.f_max**2) & (f2 >= (self.central_stop * self.f_max) ** 2)
        return inside * jnp.exp(-1j * jnp.pi * self.wavelength * self.defocus * f2)


def _focused_probe(pupil: _Pupil, modes: int) -> Complex[Array, "modes y x"]:
    field = pupil.field()
    fx, fy = (np.asarray(f, np.float64) for f in frequency_grid(pupil.shape, pupil.dx))
    f_max = float(pupil.f_max)
    first = np.asarray(field, np.complex128)
    first = first / np.linalg.norm(first)
    pupil_modes = np.concatenate([first[None], polynomial_modes(first[None], fx / f_max, fy / f_max, modes - 1)])
    weights = 0.5 ** np.arange(modes)
    weights = weights / np.sum(weights)
    return ifft2c(jnp.asarray(pupil_modes * np.sqrt(weights)[:, None, None], dtype=field.dtype))


@functools.partial(jax.jit, static_argnums=1)
def _partially_coherent_probe(
    pupil: _Pupil, modes: int, coherence_width: Float[Array, "2"], beam_width: Float[Array, "2"] | None
) -> Complex[Array, "modes y x"]:
    """The `modes` strongest coherent modes of the Schell-model pupil (see `make_focused_probe`)."""
    # Geometric optics maps pupil frequency f onto wavelength * dz * f in the sample plane.
    scale = pupil.wavelength * pupil.defocus
    envelope = None if beam_width is None else beam_width / scale
    fx, fy = frequency_grid(pupil.shape, pupil.dx)
    support = jnp.stack([pupil.f_max, pupil.f_max])
    kept, weights = schell_modes(
        pupil.field(), (fx[0], fy[:, 0]), coherence_width / scale, modes, envelope_width=envelope, support=support
    )
    return ifft2c(kept * jnp.sqrt(weights).astype(kept.dtype)[:, None, None])


# ---- measurement ------------------------------------------------------------------------


def simulate_measurement(
    obj: Complex[ArrayLike, "Y X"],
    probe: Complex[ArrayLike, "*modes y x"],
    positions: Real[ArrayLike, "npos 2"],
    *,
    key: PRNGKeyArray,
    photons: ScalarLike | None = 1e6,
    wavelength: ScalarLike = NOMINAL_WAVELENGTH,
    distance: ScalarLike = NOMINAL_DISTANCE,
    camera_pixel_size: PairLike = NOMINAL_CAMERA_PIXEL_SIZE,
) -> SimulatedDataset:
    """Far-field diffraction data of a given object, probe and scan, with Poisson noise.

    The forward model is `janssen.scopes.FarFieldMicroscope`; the object's pixel is
    the far-field pixel `wavelength * distance / (N * camera_pixel_size)`. The probe is
    scaled so that the mean total count per frame of the noiseless data equals
    `photons`, then every pixel is drawn from a Poisson distribution with that mean
    (on the host, by NumPy's generator seeded with the bits of `key`).

    **Arguments:**

    - `obj`: `(Y, X)` complex object transmission.
    - `probe`: `(modes, y, x)` or `(y, x)` probe, on the detector's grid.
    - `positions`: `(npos, 2)` positions `(x, y)` in metres relative to the object's
      centre pixel; every probe window must lie inside the object.
    - `key`: PRNG key for the noise (same key, same data).
    - `photons`: mean total counts per frame (> 0). `None` keeps the probe's own power.
    - `wavelength`, `distance`, `camera_pixel_size`: the geometry in metres (default:
      the nominal X-ray geometry, 0.1 nm, 0.96 m, 75 um).

    **Returns:**

    A `SimulatedDataset` whose probe carries the applied scaling.
    """
    microscope, frames, scaled_probe = _measurement(
        obj, probe, positions, key=key, photons=photons, wavelength=wavelength, distance=distance,
        camera_pixel_size=camera_pixel_size,
    )  # fmt: skip
    counts = jnp.asarray(np.concatenate(list(frames)))
    data = MicroscopeData(counts, microscope.positions, wavelength, camera_pixel_size, distance)
    return SimulatedDataset(data, microscope.sample.sample, scaled_probe, microscope.positions)


#: Positions whose noiseless frames are computed, drawn and handed on together.
_BATCH = 256


def _measurement(
    obj: Complex[ArrayLike, "Y X"],
    probe: Complex[ArrayLike, "*modes y x"],
    positions: Real[ArrayLike, "npos 2"],
    *,
    key: PRNGKeyArray,
    photons: ScalarLike | None,
    wavelength: ScalarLike,
    distance: ScalarLike,
    camera_pixel_size: PairLike,
    batch_size: int = _BATCH,
) -> tuple[FarFieldMicroscope, Iterator[np.ndarray], Complex[Array, "modes y x"]]:
    """`simulate_measurement`'s work, a batch of positions at a time.

    Returns the true microscope with the probe as given, an iterator over the noisy
    frames (float32 NumPy arrays of at most `batch_size` frames, in scan order) and the
    probe `(modes, y, x)` scaled to `photons`. The scale needs every frame's total
    first: a pass over the noiseless frames computes only those, the iterator computes
    the frames again, batch by batch, and draws them. The draws come from one NumPy
    generator in scan order, so the frames do not depend on `batch_size`, and no more
    than one batch is ever held.
    """
    probe = complex_array("probe", probe)
    probe = probe[None] if probe.ndim == 2 else probe
    wavelength = real_array("wavelength", wavelength, shape=())
    camera_pixel_size = pair("camera_pixel_size", camera_pixel_size)
    distance = real_array("distance", distance, shape=())
    for name, value in (("wavelength", wavelength), ("camera_pixel_size", camera_pixel_size), ("distance", distance)):
        check_positive(name, value)
    frame = probe.shape[-2:]
    n = jnp.array([frame[1], frame[0]], dtype=camera_pixel_size.dtype)
    dx = wavelength * distance / (n * camera_pixel_size)
    microscope = FarFieldMicroscope(Probe(probe, wavelength, dx), SampleFunction(obj, dx), positions)
    num = microscope.positions.shape[0]
    blocks = [microscope.positions[first : first + batch_size] for first in range(0, num, batch_size)]
    scale = jnp.ones((), dtype=probe.real.dtype)
    if photons is not None:
        photons = real_array("photons", photons, shape=())
        check_positive("photons", photons)
        totals = jnp.concatenate([_frame_totals(microscope, block) for block in blocks])
        scale = photons / jnp.mean(totals)

    def frames() -> Iterator[np.ndarray]:
        # The generator of `_poisson`, seeded the same way; its draws follow the scan order.
        rng = np.random.default_rng(np.asarray(jr.key_data(key)))
        for block in blocks:
            expected = _intensities_at(microscope, block) * scale
            yield rng.poisson(np.asarray(expected, dtype=np.float64)).astype(expected.dtype)

    return microscope, frames(), probe * jnp.sqrt(scale)


@eqx.filter_jit
def _intensities_at(microscope: FarFieldMicroscope, positions: Float[Array, "n 2"]) -> Float[Array, "n y x"]:
    # Batches of frames bound the memory of the complex exit waves on large scans.
    return jax.lax.map(microscope.intensity, positions, batch_size=64)


@eqx.filter_jit
def _frame_totals(microscope: FarFieldMicroscope, positions: Float[Array, "n 2"]) -> Float[Array, " n"]:
    return jnp.sum(_intensities_at(microscope, positions), axis=(1, 2))


@eqx.filter_jit
def _expected_intensities(microscope: FarFieldMicroscope) -> Float[Array, "npos y x"]:
    return jax.lax.map(microscope.intensity, microscope.positions, batch_size=64)


def _poisson(key: PRNGKeyArray, expected: Float[Array, "npos y x"]) -> Float[Array, "npos y x"]:
    # Drawn on the host with NumPy, seeded by the key's bits: JAX's CPU Poisson sampler
    # compiles for seconds and runs about 15x slower on frames of this size.
    rng = np.random.default_rng(np.asarray(jr.key_data(key)))
    counts = rng.poisson(np.asarray(expected, dtype=np.float64))
    return jnp.asarray(counts, dtype=expected.dtype)


# ---- complete datasets ------------------------------------------------------------------


def simulate(
    frame_shape: int | tuple[int, int],
    num_positions: int,
    *,
    key: PRNGKeyArray,
    photons: ScalarLike = 1e6,
    modes: int = 1,
    coherence_width: PairLike | None = None,
    overlap: ScalarLike = 0.7,
    probe_diameter_px: ScalarLike | None = None,
    padding_px: int | None = None,
    subpixel: bool = False,
    max_phase: ScalarLike = 2.5,
    min_amplitude: ScalarLike = 0.4,
    wavelength: ScalarLike = NOMINAL_WAVELENGTH,
    distance: ScalarLike = NOMINAL_DISTANCE,
    camera_pixel_size: PairLike = NOMINAL_CAMERA_PIXEL_SIZE,
) -> SimulatedDataset:
    """A complete simulated far-field ptychography dataset with its ground truth.

    A `make_focused_probe` probe scans a `make_test_object` object along a
    `fermat_spiral_scan` whose nearest-neighbour step is `(1 - overlap)` probe
    diameters (linear overlap `overlap`). The positions are centred on the midpoint
    of their bounding box, and the object grid is `janssen.optics.object_shape_for`
    the scan plus `padding_px` on every side. `simulate_measurement` then makes the
    noisy frames.

    Real scans are sub-pixel, but by default the positions are snapped to whole
    object pixels: engines can then skip sub-pixel probe shifts and match the truth
    exactly. `subpixel=True` keeps the fractional positions.

    **Arguments:**

    - `frame_shape`: detector `(H, W)`, or one int for a square detector.
    - `num_positions`: number of scan positions.
    - `key`: PRNG key for the object and the noise (same key, same dataset).
    - `photons`: mean total counts per frame before noise (default 1e6).
    - `modes`: number of incoherent probe modes (default 1, a coherent probe).
    - `coherence_width`: rms width of the probe's degree of coherence in the sample
      plane, in metres, scalar or `(x, y)`, > 0. When given, the probe modes are the
      `modes` strongest coherent modes of the focused probe lit by a Schell-model beam
      with this coherence (`make_focused_probe`), their powers the eigenvalues
      (normalised, then scaled to `photons`). `None` (default): a coherent probe, or
      `make_focused_probe`'s polynomial stand-in modes when `modes > 1`.
    - `overlap`: linear overlap of neighbouring probe discs, in `[0, 1)` (default 0.7).
    - `probe_diameter_px`: probe disc diameter in object pixels (default
      `0.375 * min(frame_shape)`).
    - `padding_px`: object pixels added around the scanned area (default
      `min(frame_shape) // 8`).
    - `subpixel`: keep fractional positions (default `False`, whole pixels).
    - `max_phase`, `min_amplitude`: passed to `make_test_object`.
    - `wavelength`, `distance`, `camera_pixel_size`: geometry in metres (default:
      the nominal X-ray geometry, giving a 10 nm object pixel for 128-pixel frames).

    **Returns:**

    A `SimulatedDataset`.
    """
    inputs = _simulation_inputs(
        frame_shape, num_positions, key=key, photons=photons, modes=modes, coherence_width=coherence_width,
        overlap=overlap, probe_diameter_px=probe_diameter_px, padding_px=padding_px, subpixel=subpixel,
        max_phase=max_phase, min_amplitude=min_amplitude, wavelength=wavelength, distance=distance,
        camera_pixel_size=camera_pixel_size,
    )  # fmt: skip
    return simulate_measurement(**inputs)


def _simulation_inputs(
    frame_shape: int | tuple[int, int],
    num_positions: int,
    *,
    key: PRNGKeyArray,
    photons: ScalarLike = 1e6,
    modes: int = 1,
    coherence_width: PairLike | None = None,
    overlap: ScalarLike = 0.7,
    probe_diameter_px: ScalarLike | None = None,
    padding_px: int | None = None,
    subpixel: bool = False,
    max_phase: ScalarLike = 2.5,
    min_amplitude: ScalarLike = 0.4,
    wavelength: ScalarLike = NOMINAL_WAVELENGTH,
    distance: ScalarLike = NOMINAL_DISTANCE,
    camera_pixel_size: PairLike = NOMINAL_CAMERA_PIXEL_SIZE,
) -> dict:
    """`simulate`'s object, probe, scan, noise key and geometry: `simulate_measurement`'s arguments."""
    shape = (frame_shape, frame_shape) if isinstance(frame_shape, int) else tuple(frame_shape)
    _check_shape("frame_shape", shape)
    check_positive("photons", real_array("photons", photons, shape=()))
    overlap = float(overlap)
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must lie in [0, 1), got {overlap}")
    diameter = 0.375 * min(shape) if probe_diameter_px is None else float(probe_diameter_px)
    padding = min(shape) // 8 if padding_px is None else padding_px
    if padding < 0:
        raise ValueError(f"`padding_px` must be >= 0, got {padding}")
    wavelength = real_array("wavelength", wavelength, shape=())
    camera_pixel_size = pair("camera_pixel_size", camera_pixel_size)
    distance = real_array("distance", distance, shape=())
    n = jnp.array([shape[1], shape[0]], dtype=camera_pixel_size.dtype)
    dx = wavelength * distance / (n * camera_pixel_size)
    check_positive("object pixel size (wavelength * distance / (N * camera_pixel_size))", dx)
    positions = fermat_spiral_scan(num_positions, (1 - overlap) * diameter * jnp.max(dx))
    positions = _place_positions(positions, dx, subpixel=subpixel)
    probe = make_focused_probe(
        shape, dx, wavelength, diameter_px=diameter, modes=modes, coherence_width=coherence_width
    )
    k_object, k_noise = jr.split(key)
    obj_shape = object_shape_for(positions, dx, shape, padding)
    obj = make_test_object(obj_shape, key=k_object, max_phase=max_phase, min_amplitude=min_amplitude)
    return dict(
        obj=obj,
        probe=probe,
        positions=positions,
        key=k_noise,
        photons=photons,
        wavelength=wavelength,
        distance=distance,
        camera_pixel_size=camera_pixel_size,
    )


def _place_positions(
    positions: Float[Array, "npos 2"], dx: Float[Array, "2"], *, subpixel: bool
) -> Float[Array, "npos 2"]:
    """Centre on the bounding box's midpoint (as `object_shape_for` assumes); snap unless `subpixel`."""
    midpoint = (jnp.max(positions, axis=0, keepdims=True) + jnp.min(positions, axis=0, keepdims=True)) / 2
    centred = positions - midpoint
    if subpixel:
        return centred
    return jnp.round(centred / dx[None, :]) * dx[None, :]


#: The standard sizes: (detector side in pixels, number of scan positions).
PRESETS: dict[str, tuple[int, int]] = {
    "small": (64, 100),
    "medium": (128, 400),
    "large": (256, 1000),
    "xlarge": (512, 4000),
}


def simulate_preset(
    name: str,
    *,
    key: PRNGKeyArray,
    photons: ScalarLike = 1e6,
    modes: int = 1,
    coherence_width: PairLike | None = None,
) -> SimulatedDataset:
    """One of the standard simulated datasets.

    | name | detector | positions | probe diameter | object pixel |
    |---|---|---|---|---|
    | `"small"` | 64 x 64 | 100 | 24 px | 20 nm |
    | `"medium"` | 128 x 128 | 400 | 48 px | 10 nm |
    | `"large"` | 256 x 256 | 1000 | 96 px | 5 nm |
    | `"xlarge"` | 512 x 512 | 4000 | 192 px | 2.5 nm |

    All use `simulate`'s defaults: 70 % linear overlap on a Fermat spiral, whole-pixel
    positions and the nominal X-ray geometry.

    **Arguments:**

    - `name`: `"small"`, `"medium"`, `"large"` or `"xlarge"`. The `"xlarge"` frames
      take 4.2 GB (float32) and the simulation holds them twice while drawing the
      noise; `simulate_preset_cxi` writes any preset to a CXI file a batch of positions
      at a time instead.
    - `key`: PRNG key (same key, same dataset).
    - `photons`: mean total counts per frame before noise (default 1e6).
    - `modes`: number of incoherent probe modes (default 1).
    - `coherence_width`: rms width of the probe's degree of coherence in the sample
      plane, metres (see `simulate`; default `None`, coherent). The probe disc is 480 nm
      across on every preset, so the same width gives the same mode weights on each
      (with `modes=3`: 0.49 / 0.26 / 0.26 at 120 nm, 0.61 / 0.20 / 0.20 at 180 nm).

    **Returns:**

    A `SimulatedDataset`.
    """
    if name not in PRESETS:
        raise ValueError(f"`name` must be one of {sorted(PRESETS)}, got {name!r}")
    side, num_positions = PRESETS[name]
    return simulate(side, num_positions, key=key, photons=photons, modes=modes, coherence_width=coherence_width)
