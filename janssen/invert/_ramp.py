"""The far-field phase-ramp ambiguity, and the tools that pin it down.

In far-field ptychography `O(r) exp(i k.r)` together with `P(r) exp(-i k.r)` predicts
exactly the same data: every exit wave only gains a constant phase. Joint refinement of
object and probe can therefore drift along this ramp, and the object picks up a linear
phase that no data can remove. A ramp on the probe moves its far field: the ramp is
pinned by holding the probe's far-field intensity centroid where it started.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float

from .._data import MicroscopeData
from ..scopes._base import AbstractMicroscope
from ._patterns import mean_pattern


def spectrum_centroid(fields: Complex[Array, "modes y x"]) -> Float[Array, "2"]:
    """Centroid `(x, y)` in pixels of the far-field intensity `sum_m |fft2c(fields_m)|**2`.

    Computed without the centring shifts, which cost more to compile than the FFT: a
    circular shift of the input only changes the phase of its transform, so
    `|fft2c(f)|**2` is `|fft2(f)|**2` (up to the constant normalisation) rolled by half
    the grid, and the roll goes into the coordinates, index `k` sitting at
    `(k + n // 2) % n`. Equal to the centroid of the centred spectrum to rounding.
    """
    intensity = jnp.sum(jnp.abs(jnp.fft.fft2(fields, axes=(-2, -1))) ** 2, axis=0)
    h, w = intensity.shape
    x = ((jnp.arange(w) + w // 2) % w).astype(intensity.dtype)
    y = ((jnp.arange(h) + h // 2) % h).astype(intensity.dtype)
    total = jnp.sum(intensity)
    return jnp.stack([jnp.sum(intensity * x[None, :]), jnp.sum(intensity * y[:, None])]) / total


def intensity_centroid(intensity: Float[Array, "y x"]) -> Float[Array, "2"]:
    """Centroid `(x, y)` in pixels of a non-negative image."""
    h, w = intensity.shape
    total = jnp.sum(intensity)
    cx = jnp.sum(intensity * jnp.arange(w, dtype=intensity.dtype)[None, :]) / total
    cy = jnp.sum(intensity * jnp.arange(h, dtype=intensity.dtype)[:, None]) / total
    return jnp.stack([cx, cy])


def phase_ramp(shape: tuple[int, int], frequency: Float[Array, "2"]) -> Complex[Array, "y x"]:
    """`exp(2 pi i (fx x + fy y))` on a pixel-index grid; `frequency` in cycles per pixel."""
    y = jnp.arange(shape[0], dtype=frequency.dtype)[:, None]
    x = jnp.arange(shape[1], dtype=frequency.dtype)[None, :]
    angle = 2 * jnp.pi * (frequency[0] * x + frequency[1] * y)
    # cos + i sin of a real angle: the same values as the complex `exp`, fewer kernels to compile.
    return jax.lax.complex(jnp.cos(angle), jnp.sin(angle))


def move_ramp_to_object(drift_px, obj, probe, *others_obj_probe, scale=None):
    """Undo a far-field drift of `drift_px` of the probe by trading the ramp to the object.

    Returns `obj, probe` (and any further `(object-like, probe-like)` pairs, e.g. momentum
    buffers) multiplied by the opposite ramps; predictions do not change. With `scale` the
    object-likes are also multiplied by it and the probe-likes divided by it (the other
    exact ambiguity, `c O` with `P / c`), in the same pass.
    """
    h, w = probe.shape[-2:]
    frequency = drift_px / jnp.array([w, h], dtype=drift_px.dtype)
    to_probe = phase_ramp((h, w), -frequency)[None]
    to_object = phase_ramp(obj.shape, frequency)
    if scale is not None:
        to_probe, to_object = to_probe * (1.0 / scale), to_object * scale  # no complex division
    out = [obj * to_object, probe * to_probe]
    for o, p in zip(others_obj_probe[::2], others_obj_probe[1::2]):
        out += [o * to_object, p * to_probe]
    return tuple(out)


def align_probe_to_data(probe: Complex[Array, "*modes y x"], data: MicroscopeData) -> Complex[Array, "*modes y x"]:
    """Tilt a model probe so that its far field is centred where the measured frames are.

    A probe guess from a lens or zone-plate model is centred on the detector's middle,
    while the beam may hit the camera a few pixels off. Because the engines hold the
    probe's far-field centroid fixed (to pin the phase-ramp ambiguity), such a guess
    would force a compensating phase ramp onto the object. This moves the guess's far
    field onto the geometric centre of the bright field: the centroid of the pixels where
    the mean measured frame exceeds a fifth of its maximum. (The plain intensity
    centroid would be biased by the object's own scattering.)

    Only pixels that are valid and whose mirror image through the frame's centre pixel
    is valid count, so bad pixels leave holes in pairs that do not move the centre. The
    start must be centred to a few hundredths of a pixel: with holes left as they were,
    or filled from their neighbours, 1-2 % bad pixels moved the centre by 0.02-0.03 px,
    and the ramp that went onto the object cost object errors of 0.045-0.057 instead of
    0.007-0.015 (independent simulator, 48-pixel frames, `default_schedule`).

    **Arguments:**

    - `probe`: `(y, x)` or `(modes, y, x)` probe in the sample plane.
    - `data`: the measurements (frames of the probe's shape).

    **Returns:**

    The probe times a linear phase ramp, same shape.
    """
    fields = probe if probe.ndim == 3 else probe[None]
    tilted = align_to_pattern(fields, mean_pattern(data), data.valid)
    return tilted if probe.ndim == 3 else tilted[0]


def align_to_pattern(
    fields: Complex[Array, "modes y x"], mean: Float[ArrayLike, "y x"], valid: ArrayLike
) -> Complex[Array, "modes y x"]:
    """`align_probe_to_data` given the mean pattern (computed once by the probe search)."""
    mean = jnp.asarray(mean, dtype=jnp.real(fields).dtype)
    valid = jnp.asarray(valid) != 0
    h, w = valid.shape
    rows, cols = (2 * (h // 2) - jnp.arange(h)) % h, (2 * (w // 2) - jnp.arange(w)) % w
    paired = valid & valid[rows][:, cols]
    bright = paired & (mean > 0.2 * jnp.max(jnp.where(paired, mean, 0.0)))
    drift = intensity_centroid(bright.astype(mean.dtype)) - spectrum_centroid(fields)
    return fields * phase_ramp((h, w), drift / jnp.array([w, h], dtype=drift.dtype))[None]


#: Rows of the object multiplied at a time by `linear_phase_steps` (temporaries of this many rows only).
_STEP_ROWS = 512


def linear_phase_steps(obj: Complex[ArrayLike, "y x"]) -> tuple[np.floating, np.floating]:
    """The object's mean phase step between neighbouring pixels `(along x, along y)`, in radians.

    The angle of the sum of `O[y, x + 1] * conj(O[y, x])` (and of the same along y): the
    steps weighted by amplitude, no unwrapping needed (`remove_linear_phase` removes the
    ramp they make). Host-side NumPy, a block of rows at a time, so that a large object
    needs no full-size temporary; in the object's precision (an object of at most 512 rows
    is one block).

    **Arguments:**

    - `obj`: `(y, x)` complex object.

    **Returns:**

    `(gx, gy)` in radians per pixel.
    """
    values = np.asarray(obj)
    along_x, along_y = [], []
    for top in range(0, max(values.shape[0], 1), _STEP_ROWS):
        block = values[top : top + _STEP_ROWS + 1]  # one row more for the steps along y
        along_x.append(np.sum(block[:_STEP_ROWS, 1:] * np.conj(block[:_STEP_ROWS, :-1])))
        along_y.append(np.sum(block[1:, :] * np.conj(block[:-1, :])))
    return np.angle(np.sum(np.asarray(along_x))), np.angle(np.sum(np.asarray(along_y)))


def remove_linear_phase(obj: Complex[ArrayLike, "y x"]) -> np.ndarray:
    """The object without its mean linear phase ramp and mean phase (host-side, NumPy).

    The ramp is the mean phase step between neighbouring pixels, weighted by amplitude
    (no phase unwrapping needed). Far-field data cannot determine it (see
    `align_probe_to_data`), so compare or display phases after removing it.

    **Arguments:**

    - `obj`: `(y, x)` complex object.

    **Returns:**

    A complex NumPy array of the same shape.
    """
    values = np.asarray(obj)
    gx, gy = linear_phase_steps(values)
    rows, cols = np.indices(values.shape)
    flat = values * np.exp(-1j * (gx * cols + gy * rows))
    return flat * np.exp(-1j * np.angle(np.sum(flat)))


def object_ramp(obj: Complex[Array, "y x"], weights: Float[Array, "y x"]) -> Float[Array, "2"]:
    """The object's mean linear phase `(fx, fy)` in cycles per pixel, weighted by `weights`.

    The weighted mean phase step between neighbouring pixels (no unwrapping needed), as in
    `remove_linear_phase`, each pair weighted by the smaller of its two weights.
    """
    wx = jnp.minimum(weights[:, 1:], weights[:, :-1])
    wy = jnp.minimum(weights[1:, :], weights[:-1, :])
    gx = jnp.angle(jnp.sum(wx * obj[:, 1:] * jnp.conj(obj[:, :-1])))
    gy = jnp.angle(jnp.sum(wy * obj[1:, :] * jnp.conj(obj[:-1, :])))
    return jnp.stack([gx, gy]) / (2 * jnp.pi)


def level_phase_ramp(microscope: AbstractMicroscope) -> AbstractMicroscope:
    """The same fit with the object's mean linear phase ramp moved onto the probe.

    `O exp(ik.r)` with `P exp(-ik.r)` predicts the same data (every exit wave gains a
    constant phase), so a joint refinement leaves the ramp wherever the start and the
    iterations put it. In the far field the engines pin it by the probe's far-field
    centroid, which the data-derived start puts on the measured bright field
    (`align_probe_to_data`). Where nothing pins it (`microscope.phase_ramp_gauge` is
    `False`: the near field), this fixes it afterwards: no mean linear phase over the
    well-illuminated region of the object (illumination above half its 99th percentile,
    as `object_error` counts), the probe taking the opposite ramp. The predictions do
    not change (exactly for whole-pixel positions; sub-pixel shifts treat the tilted
    probe as periodic).

    **Arguments:**

    - `microscope`: a microscope whose object and probe were refined together.

    **Returns:**

    The microscope with the ramp moved.
    """
    from ._metrics import illumination_map

    obj, fields = microscope.sample.sample, microscope.probe.fields()
    light = illumination_map(microscope)
    weights = (light > 0.5 * jnp.percentile(light, 99)).astype(light.dtype)
    h, w = fields.shape[-2:]
    drift = -object_ramp(obj, weights) * jnp.array([w, h], dtype=light.dtype)
    obj, fields = move_ramp_to_object(drift, obj, fields)
    return eqx.tree_at(lambda m: (m.sample.sample, m.probe), microscope, (obj, microscope.probe.with_fields(fields)))
