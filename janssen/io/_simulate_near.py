"""Simulated near-field (Fresnel-regime) ptychography datasets with a known ground truth."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Complex, Float, PRNGKeyArray

from .._custom_types import ScalarLike
from .._data import MicroscopeData
from .._validate import check_positive, complex_array, real_array
from ..optics._fft import frequency_grid, ifft2c
from ..optics._probe import Probe
from ..optics._sample import SampleFunction
from ..optics._scan import object_shape_for
from ..scopes._near_field import NearFieldMicroscope
from ._nominal import NOMINAL_WAVELENGTH
from ._simulate import _check_shape, _place_positions, _poisson, fermat_spiral_scan, make_test_object

_PROBES = ("smooth", "structured")


class SimulatedNearFieldDataset(eqx.Module):
    """A simulated near-field dataset together with the ground truth that produced it.

    `microscope()` is the true `NearFieldMicroscope`: its prediction is the expectation
    of `data.intensities`. The object's pixel is `pixel_size` (the sample plane's);
    `data.camera_pixel_size` is the detector's, `magnification * pixel_size`.

    **Arguments:**

    - `data`: the noisy `MicroscopeData` (`distance` is sample to detector, `z2`).
    - `object`: `(Y, X)` complex transmission.
    - `probe`: `(1, y, x)` probe in the sample plane (without a cone beam's spherical
      phase), scaled to the simulated photon count.
    - `positions`: `(npos, 2)` positions `(x, y)` in metres, relative to the object's
      centre pixel.
    - `pixel_size`: `(x, y)` sample-plane pixel in metres.
    - `focus_to_sample`: `z1` in metres for a cone beam, or `None` (plane wave).
    - `propagator`: `"fresnel"` or `"angular_spectrum"`.
    """

    data: MicroscopeData
    object: Complex[Array, "Y X"]
    probe: Complex[Array, "1 y x"]
    positions: Float[Array, "npos 2"]
    pixel_size: Float[Array, "2"]
    focus_to_sample: Float[Array, ""] | None
    propagator: str = eqx.field(static=True)

    def microscope(self) -> NearFieldMicroscope:
        """The ground truth as a `NearFieldMicroscope` (its prediction is the noiseless data)."""
        probe = Probe(self.probe, self.data.wavelength, self.pixel_size)
        sample = SampleFunction(self.object, self.pixel_size)
        return NearFieldMicroscope(
            probe,
            sample,
            self.positions,
            distance=self.data.distance,
            propagator=self.propagator,
            focus_to_sample=self.focus_to_sample,
        )

    def expected_intensities(self) -> Float[Array, "npos y x"]:
        """The noiseless intensities: the expectation of `data.intensities`."""
        return _expected(self.microscope())


@eqx.filter_jit
def _expected(microscope: NearFieldMicroscope) -> Float[Array, "npos y x"]:
    return jax.lax.map(microscope.intensity, microscope.positions, batch_size=64)


def make_near_field_probe(shape: tuple[int, int], kind: str = "smooth", *, key: PRNGKeyArray) -> Complex[Array, "y x"]:
    """A probe for near-field simulations, vanishing at the window's edges.

    - `"smooth"`: a Gaussian beam, `exp(-r**2 / (2 sigma**2))` with `sigma = min(shape) / 6.4`
      (5 pixels on a 32-pixel window; the intensity at the edges is below 1e-4), flat phase:
      the smooth illumination of a clean (e.g. KB-focused, far from focus) beam.
    - `"structured"`: a soft-edged disc (`exp(-(r / (0.45 R))**6)`, `R` the half-window)
      times a random diffuser phase of 3 rad peak to peak, correlated over about 2 pixels:
      the wavefront-diversity illumination of near-field ptychography with a diffuser.

    **Arguments:**

    - `shape`: `(y, x)` window in pixels.
    - `kind`: `"smooth"` or `"structured"`.
    - `key`: PRNG key of the diffuser (unused for `"smooth"`).

    **Returns:**

    `(y, x)` complex field of peak amplitude 1.
    """
    _check_shape("shape", shape)
    if kind not in _PROBES:
        raise ValueError(f"`probe` must be one of {_PROBES}, got {kind!r}")
    dtype = jnp.result_type(float)
    y = (jnp.arange(shape[0], dtype=dtype) - shape[0] // 2)[:, None]
    x = (jnp.arange(shape[1], dtype=dtype) - shape[1] // 2)[None, :]
    r2 = x**2 + y**2
    if kind == "smooth":
        sigma = min(shape) / 6.4
        return jnp.exp(-r2 / (2 * sigma**2)).astype(jnp.result_type(dtype, jnp.complex64))
    envelope = jnp.exp(-((r2 / (0.45 * min(shape) / 2) ** 2) ** 3))
    return envelope * jnp.exp(3j * _diffuser(key, shape))


def _diffuser(key: PRNGKeyArray, shape: tuple[int, int]) -> Float[Array, "y x"]:
    """Gaussian-filtered white noise on `[0, 1]` (correlation length about 1 / (2 pi 0.15) px)."""
    dtype = jnp.result_type(float)
    k_re, k_im = jr.split(key)
    white = jr.normal(k_re, shape, dtype) + 1j * jr.normal(k_im, shape, dtype)
    fx, fy = frequency_grid(shape, jnp.ones(2, dtype))
    field = ifft2c(white * jnp.exp(-(fx**2 + fy**2) / (2 * 0.15**2))).real
    return (field - jnp.min(field)) / (jnp.max(field) - jnp.min(field))


def simulate_near_field(
    frame_shape: int | tuple[int, int],
    num_positions: int,
    *,
    key: PRNGKeyArray,
    distance: ScalarLike,
    focus_to_sample: ScalarLike | None = None,
    probe: str | Complex[ArrayLike, "y x"] = "smooth",
    photons: ScalarLike = 1e6,
    pixel_size: ScalarLike = 1e-7,
    wavelength: ScalarLike = NOMINAL_WAVELENGTH,
    step_px: ScalarLike | None = None,
    propagator: str = "fresnel",
    subpixel: bool = True,
    max_phase: ScalarLike = 1.0,
    min_amplitude: ScalarLike = 0.6,
) -> SimulatedNearFieldDataset:
    """A complete simulated near-field ptychography dataset with its ground truth.

    A `make_near_field_probe` probe scans a `janssen.io.make_test_object` object along a
    Fermat spiral (`janssen.io.fermat_spiral_scan`) whose nearest-neighbour step is
    `step_px` sample pixels; `janssen.scopes.NearFieldMicroscope` predicts the frames,
    scaled to a mean of `photons` counts per frame, and every pixel is drawn from a
    Poisson distribution. The positions are centred on their bounding box's midpoint
    and the object grid is `janssen.optics.object_shape_for` the scan plus
    `min(frame_shape) // 8` pixels on every side, the grid `init_near_field_microscope`
    builds. The window's Fresnel number is `(N pixel_size)**2 / (wavelength z)` with
    `z = distance / M` the effective distance (`M = (z1 + z2) / z1` for a cone beam, 1
    for a plane wave); the propagator samples its transfer function well while
    `wavelength z <= N pixel_size**2`.

    **Arguments:**

    - `frame_shape`: detector `(H, W)` (the probe window), or one int.
    - `num_positions`: number of scan positions.
    - `key`: PRNG key (same key, same dataset).
    - `distance`: sample-to-detector distance `z2` in metres, > 0.
    - `focus_to_sample`: `z1` in metres for a cone beam from a point focus (the detector
      pixel is then `M * pixel_size`); `None` (default) for a plane wave.
    - `probe`: `"smooth"` or `"structured"` (see `make_near_field_probe`), or a `(y, x)`
      complex probe of the frame shape.
    - `photons`: mean total counts per frame before noise, > 0 (default 1e6).
    - `pixel_size`: sample-plane pixel in metres (default 100 nm).
    - `wavelength`: metres (default 0.1 nm).
    - `step_px`: scan step in sample pixels (default `min(frame_shape) / 8`).
    - `propagator`: `"fresnel"` (default) or `"angular_spectrum"`.
    - `subpixel`: keep fractional positions (default `True`); `False` snaps them to pixels.
    - `max_phase`, `min_amplitude`: passed to `make_test_object` (defaults 1 rad and 0.6).

    **Returns:**

    A `SimulatedNearFieldDataset`.
    """
    shape = (frame_shape, frame_shape) if isinstance(frame_shape, int) else tuple(frame_shape)
    _check_shape("frame_shape", shape)
    photons = real_array("photons", photons, shape=())
    check_positive("photons", photons)
    dx = jnp.broadcast_to(real_array("pixel_size", pixel_size, shape=()), (2,))
    check_positive("pixel_size", dx)
    step = min(shape) / 8 if step_px is None else float(step_px)
    if not step > 0:
        raise ValueError(f"`step_px` must be > 0 pixels, got {step_px}")
    k_probe, k_object, k_noise = jr.split(key, 3)
    if isinstance(probe, str):
        fields = make_near_field_probe(shape, probe, key=k_probe)
    else:
        fields = complex_array("probe", probe, ndim=2)
        if fields.shape != shape:
            raise ValueError(f"`probe` must have the frame shape {shape}, got shape {fields.shape}")
    positions = _place_positions(fermat_spiral_scan(num_positions, step * dx[0]), dx, subpixel=subpixel)
    obj_shape = object_shape_for(positions, dx, shape, min(shape) // 8)
    obj = make_test_object(obj_shape, key=k_object, max_phase=max_phase, min_amplitude=min_amplitude)
    if focus_to_sample is not None:
        focus_to_sample = real_array("focus_to_sample", focus_to_sample, shape=())
    microscope = NearFieldMicroscope(
        Probe(fields[None], wavelength, dx),
        SampleFunction(obj.astype(fields.dtype), dx),
        positions,
        distance=distance,
        propagator=propagator,
        focus_to_sample=focus_to_sample,
    )
    expected = _expected(microscope)
    scale = photons / jnp.mean(jnp.sum(expected, axis=(1, 2)))
    counts = _poisson(k_noise, expected * scale)
    data = MicroscopeData(
        counts, positions, microscope.probe.wavelength, microscope.detector_pixel_size, microscope.distance
    )
    return SimulatedNearFieldDataset(
        data,
        microscope.sample.sample,
        microscope.probe.fields() * jnp.sqrt(scale),
        positions,
        dx,
        focus_to_sample,
        propagator,
    )
