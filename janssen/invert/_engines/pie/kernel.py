"""The PIE kernel: one position's exit-wave correction and the object and probe update directions.

Shared by both schedules (`schedules.py`). `Optics` is what the kernel asks of the microscope,
resolved once per iteration; `fast_path` says whether the far field is a bare FFT.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array

from ....optics._scan import shift_probe
from ....scopes._base import AbstractMicroscope

DARK = 1e-6


def checkerboard(shape: tuple[int, int], dtype) -> Array:
    y = jnp.arange(shape[0])[:, None]
    x = jnp.arange(shape[1])[None, :]
    return (1 - 2 * ((x + y) % 2)).astype(dtype)


class Optics(eqx.Module):
    """How exit waves reach the detector, in the cheapest exact form for this microscope.

    For a microscope whose detector is the centred DFT of the exit wave
    (`fourier_detector`), of even size, the centred transform equals an uncentred FFT of
    the exit wave modulated by a (+1, -1) checkerboard (which moves the spectrum by half
    a grid); the modulation is folded into the probe for the whole step, so each position
    costs exactly one forward and one inverse FFT. Those two are left unnormalised (the
    forward one unscaled, the inverse one divided by the pixel count, as `jnp.fft`
    does): the detector's counts are then `abs2(field) * intensity_scale`, a real
    factor, while the unitary pair scaled every complex field twice, and XLA's CPU
    code multiplies a complex array by a real number as by a complex one. The
    exit-wave change is the same: `ifft2u(fft2u(psi) * g) == ifft2(fft2(psi) * g)`.
    """

    microscope: AbstractMicroscope
    fast: bool = eqx.field(static=True)

    def propagate(self, psi, subpixel):
        return jnp.fft.fft2(psi) if self.fast else self.microscope.propagate(psi, subpixel)

    def backpropagate(self, field, subpixel):
        return jnp.fft.ifft2(field) if self.fast else self.microscope.backpropagate(field, subpixel)

    def intensity_scale(self, shape: tuple[int, ...]) -> float:
        """What turns `abs2(propagate(psi))` into counts."""
        return 1.0 / (shape[-2] * shape[-1]) if self.fast else 1.0


def fast_path(microscope: AbstractMicroscope) -> bool:
    h, w = microscope.detector_shape
    return microscope.fourier_detector and h % 2 == 0 and w % 2 == 0


# The per-position arithmetic is written for XLA's CPU code: `|z|**2` as `re**2 + im**2`
# (`jnp.abs` takes a square root first) and a complex array times a real reciprocal,
# never divided by a real array, which XLA treats as a full complex division. Measured on
# 128 x 128 arrays: the rPIE step below 9.7 us instead of 74 us, `|z|**2` 5.9 us instead
# of 11.4 us; equal to rounding.
def abs2(z):
    return z.real**2 + z.imag**2


def real_times(z, r):
    """`z * r` for a real `r`: two real products per element (XLA's CPU code converts `r`
    to complex and multiplies as complex numbers, four products and two sums)."""
    return jax.lax.complex(z.real * r, z.imag * r)


def exit_correction(psi, optics, subpixel, measured, valid, background=None):
    """Modulus constraint: the exit-wave change and the sums `Totals` adds up.

    With a fixed detector `background` `b` the model counts are `|Psi|**2 + b`, and the
    exit wave is scaled by `sqrt(I / (|Psi|**2 + b))`: where the data are background
    alone it barely moves, where subtracting `b` from the data first would feed their
    Poisson noise into the object as diffuse scattering.
    """
    field = optics.propagate(psi, subpixel)
    channel_intensity = abs2(field) * optics.intensity_scale(field.shape)
    amp2 = jnp.sum(channel_intensity, axis=0)
    # A member may split each mode into several incoherent channels (a binned sensor),
    # each mode's channels contiguous: the mode statistics sum a mode's channels.
    modes = psi.shape[0]
    if channel_intensity.shape[0] == modes:
        mode_intensity = channel_intensity
    else:
        mode_intensity = channel_intensity.reshape(modes, -1, *channel_intensity.shape[-2:]).sum(axis=1)
    model = amp2 if background is None else amp2 + background
    # A floor far below one photon keeps the ratio finite where the model is dark.
    ratio = jnp.where(valid > 0, jnp.sqrt((measured + DARK) / (model + DARK)), 1.0)
    dpsi = optics.backpropagate(real_times(field, (ratio - 1.0)[None]), subpixel)
    residual = valid * model * (1.0 - ratio) ** 2  # per pixel: summed once per iteration
    return dpsi, Totals.at_position(residual, mode_intensity, model, measured, valid)


STATS_STRIDE = 4


class Totals(eqx.Module):
    """Sums over positions: the squared amplitude residual, and the mode-power statistics.

    The residual is kept per detector pixel and reduced once, after the sweep: a reduction
    per position was a kernel of its own (small preset, sequential ePIE: 3.5 us of the 56 us
    a position takes).

    With `I_k` the intensity mode `k` predicts and `I = sum_k I_k`, `fisher[k, l] =
    sum I_k I_l / I` and `score[k] = sum I_k I_measured / I` over all frames and valid
    pixels define the Poisson Fisher-scoring step on the mode powers (`mode_power_step`).
    """

    residual: Array
    fisher: Array
    score: Array

    @staticmethod
    def at_position(residual, mode_intensity, amp2, measured, valid):
        # Every `STATS_STRIDE`-th detector row: M**2 products per pixel would otherwise
        # cost as much as the FFTs (medium preset, 3 modes: 3.2x the single-mode iteration
        # time, against 2.1x without them), and a quarter of the pixels of every frame
        # still fixes M powers far beyond the accuracy the model allows.
        if mode_intensity.shape[0] == 1:  # one mode: no powers to share, nothing to pay
            return Totals.zeros(1, amp2.dtype, amp2.shape).replace_residual(residual)
        rows = slice(None, None, STATS_STRIDE)
        intensity = mode_intensity[:, rows]
        weighted = intensity * (valid[rows] / (amp2[rows] + DARK))[None]
        fisher = jnp.sum(weighted[:, None] * intensity[None], axis=(-2, -1))
        return Totals(residual, fisher, jnp.sum(weighted * measured[rows][None], axis=(-2, -1)))

    @staticmethod
    def zeros(modes: int, dtype, frame_shape: tuple[int, ...]) -> "Totals":
        return Totals(jnp.zeros(frame_shape, dtype), jnp.zeros((modes, modes), dtype), jnp.zeros((modes,), dtype))

    def replace_residual(self, residual) -> "Totals":
        return Totals(residual, self.fisher, self.score)

    def __add__(self, other: "Totals") -> "Totals":
        return jtu.tree_map(jnp.add, self, other)

    def weighted(self, live) -> "Totals":
        """Sum over a leading axis of positions, each weighted by `live`."""
        return jtu.tree_map(lambda x: jnp.tensordot(live, x, axes=1), self)


def object_direction(probe, dpsi):
    """Numerator and weight of the object update at one position (summed over modes)."""
    return jnp.sum(jnp.conj(probe) * dpsi, axis=0), jnp.sum(abs2(probe), axis=0)


def probe_direction(patch, dpsi):
    """Numerator and weight of the probe update at one position (each mode)."""
    return jnp.conj(patch)[None] * dpsi, abs2(patch)[None]


def weight_peak(weight, alpha, fields):
    """`max(weight)` for `regularised`, where `weight = sum_k |fields[k]|**2`.

    When the step divides by the peak alone (`alpha` fixed at 1), nothing else reads the
    weight, and XLA fuses its squares into the reduction, which its CPU code then runs
    through YNNPACK at some 15 us per 128 x 128 frame against 3 us for a reduction of a
    stored array. A single mode's peak is taken as `max |field|` squared instead: the
    complex modulus stays in XLA's own loop (medium preset, sequential ePIE: 9 us for
    the peak instead of 20). Otherwise the weight is stored anyway and reduced as it is.
    """
    if isinstance(alpha, (int, float)) and alpha == 1 and fields.shape[0] == 1:
        return jnp.square(jnp.max(jnp.abs(fields[0])))
    return jnp.max(weight)


def regularised(numerator, weight, alpha, step, weight_max):
    """rPIE's step: `step * numerator / ((1 - alpha) * weight + alpha * max(weight))`.

    A fixed `alpha` of 1 (ePIE's step, rPIE's default for the probe) divides by the
    maximum alone: a scalar. Written as the general rule, XLA keeps `0 * weight` (it may
    not fold a product with 0, which is NaN for an infinite factor) and builds the whole
    denominator and its reciprocal per position: medium preset, sequential rPIE, 29 us
    of the 190 us a position took.
    """
    if isinstance(alpha, (int, float)) and alpha == 1:
        return real_times(numerator, step / jnp.maximum(weight_max, jnp.finfo(weight_max.dtype).tiny))
    denom = (1.0 - alpha) * weight + alpha * weight_max
    return real_times(numerator, step / jnp.maximum(denom, jnp.finfo(denom.dtype).tiny))


class Position(eqx.Module):
    """Every position's whole-pixel corner, the probe's sub-pixel shift, and the sample's.

    `sample_shift` is `None` unless the sample is periodic (the microscope's
    `split_shift`): then the sample takes the remainder and `subpixel` is zero.
    """

    corner: Array
    subpixel: Array
    sample_shift: Array | None = None

    def shift_at(self, index):
        return None if self.sample_shift is None else self.sample_shift[index]


def locate_all(microscope: AbstractMicroscope) -> Position:
    corner, subpixel = jax.vmap(microscope.locate)(microscope.positions)
    return Position(corner, *microscope.split_shift(subpixel))


class Kernel(eqx.Module):
    """The per-position PIE update, shared by both schedules.

    With `checkerboard` set (fast far-field path), the exit wave must carry the (+1, -1)
    modulation. Without sub-pixel shifts the probe is kept pre-modulated for the whole
    step (no per-position cost); with them, the probe is moved first and modulated after.
    `valid` is the detector's mask of measured pixels (`None` for a kernel that only carries
    the probe in and out, visiting no position).
    """

    optics: Optics
    valid: Array | None
    checkerboard: Array | None
    shifted: bool = eqx.field(static=True)
    background: Array | None = None

    def illuminate(self, probe, subpixel):
        if not self.shifted:
            return probe
        moved = shift_probe(probe, subpixel)
        return moved if self.checkerboard is None else moved * self.checkerboard[None]

    def __call__(self, patch, probe, subpixel, frame):
        """Exit-wave change, residual, both update directions and the probe as it lit this position."""
        moved = self.illuminate(probe, subpixel)
        dpsi, totals = exit_correction(moved * patch[None], self.optics, subpixel, frame, self.valid, self.background)
        obj_num, obj_w = object_direction(moved, dpsi)
        probe_num, probe_w = probe_direction(patch, dpsi)
        if self.shifted:
            if self.checkerboard is not None:
                probe_num = probe_num * self.checkerboard[None]
            probe_num = shift_probe(probe_num, -subpixel)
        return obj_num, obj_w, probe_num, probe_w, totals, moved

    def carry_in(self, probe):
        """The probe as the loop carries it (pre-modulated when nothing moves it)."""
        if self.shifted or self.checkerboard is None:
            return probe
        return probe * self.checkerboard[None]

    def carry_out(self, probe):
        return self.carry_in(probe)  # the modulation is its own inverse
