"""Starting points for a reconstruction, built from the data alone."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Num

from ..io._data import MicroscopeData
from ..optics._fft import ifft2c
from ..optics._probe import AbstractProbe, Probe
from ..optics._propagator.scaled_fraunhofer import ScaledFraunhofer
from ..optics._sample import SampleFunction
from ..optics._scan import object_shape_for
from ..scopes._far_field import FarFieldMicroscope
from ._ramp import align_probe_to_data


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

    **Returns:**

    A `SampleFunction` of ones.
    """
    padding = _default_padding(probe_shape) if padding is None else int(padding)
    if padding < 0:
        raise ValueError(f"`padding` must be >= 0 pixels, got {padding}")
    dx = data.object_pixel_size
    shape = object_shape_for(positions_in_object_frame(data), dx, tuple(probe_shape), padding)
    dtype = jnp.result_type(data.intensities.dtype, jnp.complex64) if dtype is None else dtype
    return SampleFunction(jnp.ones(shape, dtype=dtype), dx)


def _scan_spacing_px(data: MicroscopeData) -> float:
    """Median nearest-neighbour distance of the scan, in object pixels (host-side)."""
    pos = np.asarray(data.positions, dtype=np.float64) / np.asarray(data.object_pixel_size, dtype=np.float64)
    if len(pos) < 2:
        return float(min(data.frame_shape)) / 4
    gaps = np.sqrt(np.sum((pos[:, None] - pos[None]) ** 2, axis=-1))
    np.fill_diagonal(gaps, np.inf)
    return float(np.median(gaps.min(axis=1)))


def init_probe(
    data: MicroscopeData, *, diameter_px: float | int | None = None, overlap: float | int = 0.7
) -> Complex[Array, "1 y x"]:
    """A probe guess whose far field is the measured mean diffraction pattern.

    The detector field has the amplitude `sqrt(mean intensity)` (zero on bad pixels), so
    its far-field extent is the measured bright-field disc and, the transform being
    unitary, a unit object predicts the measured mean counts per frame. Intensities
    carry no phase; the guess gets the quadratic (defocus) phase that spreads the
    bright-field cone over a disc of `diameter_px` object pixels in the sample plane,
    with the sign of `janssen.io.make_focused_probe` (sample downstream of the focus).
    A flat phase (a focused spot) or the opposite sign makes PIE stall on defocused
    probes: on `simulate_preset("small")`, object error 0.55 and 0.52 after 30 rPIE
    iterations, against 0.02 with this guess.

    **Arguments:**

    - `data`: the measurements.
    - `diameter_px`: illuminated disc diameter in object pixels. Default: from the scan,
      assuming a linear `overlap` between neighbours, `spacing / (1 - overlap)` with
      `spacing` the median nearest-neighbour distance.
    - `overlap`: assumed linear overlap, in `[0, 1)` (default 0.7).

    **Returns:**

    `(1, H, W)` complex probe field.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"`overlap` must lie in [0, 1), got {overlap}")
    mean = jnp.mean(data.intensities, axis=0) * data.valid
    diameter = _scan_spacing_px(data) / (1 - overlap) if diameter_px is None else float(diameter_px)
    if not diameter > 0:
        raise ValueError(f"`diameter_px` must be > 0, got {diameter}")
    height, width = data.frame_shape
    # Bright-field radius from the area above half the peak, in cycles per object pixel.
    radius = jnp.sqrt(jnp.sum(mean > 0.5 * jnp.max(mean)) / jnp.pi) / max(height, width)
    fy = (jnp.arange(height) - height // 2) / height
    fx = (jnp.arange(width) - width // 2) / width
    f2 = fx[None, :] ** 2 + fy[:, None] ** 2
    # A defocus dz spreads a cone of cut-off f_max over 2 * wavelength * dz * f_max; in
    # pixel units the Fresnel phase pi * wavelength * dz * f**2 becomes this.
    phase = -jnp.pi * diameter * f2 / (2 * jnp.maximum(radius, 1.0 / max(height, width)))
    dtype = jnp.result_type(mean.dtype, jnp.complex64)
    # Bad pixels carry no measurement: they get no amplitude, so the guess predicts the
    # measured mean counts on the valid pixels.
    pupil = jnp.sqrt(mean) * jnp.exp(1j * phase)
    # The mean frame's intensity centroid is pulled off the beam by the object's own
    # scattering; centre the guess on the bright field's geometric centre instead (the
    # engines keep the probe's far-field centroid where it starts).
    return align_probe_to_data(ifft2c(pupil.astype(dtype))[None], data)


def init_far_field_microscope(
    data: MicroscopeData,
    probe: AbstractProbe | Num[ArrayLike, "*modes y x"] | None = None,
    *,
    padding: int | None = None,
    refine_distance: bool = False,
) -> FarFieldMicroscope:
    """A `FarFieldMicroscope` ready for `reconstruct`: unit object, centred scan, probe guess.

    **Arguments:**

    - `data`: the measurements.
    - `probe`: the starting probe — an `AbstractProbe`, or a `(y, x)` / `(modes, y, x)`
      complex array on the detector's grid in the sample plane (used as given). Default:
      `init_probe(data)`, scaled to the measured mean counts per frame.
    - `padding`: extra object pixels on every side (see `init_object`).
    - `refine_distance`: propagate with a `ScaledFraunhofer` at the data's distance and
      camera pixel (same prediction, several times slower than the FFT), so that
      `trainable=["distance"]` can refine the distance.

    **Returns:**

    A `FarFieldMicroscope` whose positions are `positions_in_object_frame(data)`.
    """
    dx = data.object_pixel_size
    if probe is None:
        probe = Probe(init_probe(data), data.wavelength, dx)
    elif not isinstance(probe, AbstractProbe):
        probe = Probe(np.asarray(probe), data.wavelength, dx)
    shape = tuple(probe.fields().shape[-2:])
    if shape != tuple(data.frame_shape):
        raise ValueError(f"`probe` must have the frame shape {tuple(data.frame_shape)}, got shape {shape}")
    sample = init_object(data, shape, padding=padding, dtype=probe.fields().dtype)
    propagator = ScaledFraunhofer(data.distance, data.camera_pixel_size, shape) if refine_distance else None
    return FarFieldMicroscope(probe, sample, positions_in_object_frame(data), propagator)
