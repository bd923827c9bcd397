"""The PIE family: ePIE, rPIE and momentum-accelerated PIE.

One per-position update (`_exit_correction` plus the two update directions) serves both
schedules: *sequential* (`lax.scan` over a fresh random permutation of the positions each
iteration, updating object and probe after every position) and *batched* (`vmap` over all
positions from the same object and probe, updates summed and normalised by the summed
illumination).

Mixed states (a probe of several incoherent modes): the modulus constraint scales every
mode's exit wave by the same ratio, the object update sums over the modes and each mode
gets its own update (Thibault & Menzel 2013). After each iteration the mode powers are
refitted to the data by one Fisher-scoring step (`_mode_power_step`), the probe is
rebuilt through `with_fields` (a `MixedStateProbe` re-orthogonalises its modes, which is
how its weights are refined), and momentum follows the rebuilt modes (`_follow_modes`).

References:

- ePIE: A. M. Maiden and J. M. Rodenburg, "An improved ptychographical phase retrieval
  algorithm for diffractive imaging", Ultramicroscopy 109, 1256 (2009).
- rPIE and mPIE: A. Maiden, D. Johnson and P. Li, "Further improvements to the
  ptychographical iterative engine", Optica 4, 736 (2017).
- Mixed states: P. Thibault and A. Menzel, "Reconstructing state mixtures from
  diffraction measurements", Nature 494, 68 (2013).
"""

import abc
import functools
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, Complex

from ..._data import MicroscopeData
from ...optics._fft import fft2u, ifft2u
from ...optics._scan import add_to_patch, extract_patch, shift_probe
from ...scopes._base import AbstractMicroscope
from .._jit import quick_jit
from .._ramp import move_ramp_to_object, spectrum_centroid
from .._sharding import positions_mesh_of, sum_over_positions
from .._trainable import selected_paths
from .base import AbstractEngine, never_stop

_MODES = ("sequential", "batched")
_DARK = 1e-6


class PIEState(eqx.Module):
    """State of the PIE engines between iterations.

    - `object_velocity`, `probe_velocity`: momentum buffers (zeros when momentum is off).
    - `iteration`: iterations completed (the probe is held for the first `probe_delay`).
    - `probe_centroid`: where the probe's far-field intensity centroid started (pixels).
    - `probe_power`: the probe's total power at the start.
    - `object_alpha`: the object step's regularisation in use (starts at the engine's
      `alpha`; doubled when the loss rises, see `_damping`).
    - `reference_loss`: the loss the next iteration's is compared with (`_damping`).
    - `subpixel`: whether positions need sub-pixel probe shifts (decided once, on the host).
    - `mesh`: the device mesh the data's positions are split over (`None`: one device;
      see `janssen.invert.shard_positions`), decided once, on the host.
    """

    object_velocity: Complex[Array, "Y X"]
    probe_velocity: Complex[Array, "modes y x"]
    iteration: Array
    probe_centroid: Array
    probe_power: Array
    object_alpha: Array
    reference_loss: Array
    subpixel: bool = eqx.field(static=True)
    mesh: Any = eqx.field(default=None, static=True)


class _Config(eqx.Module):
    object_alpha: float
    object_step: float
    probe_alpha: float
    probe_step: float
    momentum: float
    mode: str
    probe_delay: int
    fix_gauge: bool
    adapt_alpha: bool = eqx.field(default=False, static=True)


# ---- detector operators ----------------------------------------------------------------


def _checkerboard(shape: tuple[int, int], dtype) -> Array:
    y = jnp.arange(shape[0])[:, None]
    x = jnp.arange(shape[1])[None, :]
    return (1 - 2 * ((x + y) % 2)).astype(dtype)


class _Optics(eqx.Module):
    """How exit waves reach the detector, in the cheapest exact form for this microscope.

    For a microscope whose detector is the centred DFT of the exit wave
    (`fourier_detector`), of even size, the centred transform equals an uncentred FFT of
    the exit wave modulated by a (+1, -1) checkerboard (which moves the spectrum by half
    a grid); the modulation is folded into the probe for the whole step, so each position
    costs exactly one forward and one inverse FFT.
    """

    microscope: AbstractMicroscope
    fast: bool = eqx.field(static=True)

    def propagate(self, psi, subpixel):
        return fft2u(psi) if self.fast else self.microscope.propagate(psi, subpixel)

    def backpropagate(self, field, subpixel):
        return ifft2u(field) if self.fast else self.microscope.backpropagate(field, subpixel)


def _fast_path(microscope: AbstractMicroscope) -> bool:
    h, w = microscope.detector_shape
    return microscope.fourier_detector and h % 2 == 0 and w % 2 == 0


# ---- the one per-position update ---------------------------------------------------------


# The per-position arithmetic is written for XLA's CPU code: `|z|**2` as `re**2 + im**2`
# (`jnp.abs` takes a square root first) and a complex array times a real reciprocal,
# never divided by a real array, which XLA treats as a full complex division. Measured on
# 128 x 128 arrays: the rPIE step below 9.7 us instead of 74 us, `|z|**2` 5.9 us instead
# of 11.4 us; equal to rounding.
def _abs2(z):
    return z.real**2 + z.imag**2


def _exit_correction(psi, optics, subpixel, measured, valid, background=None):
    """Modulus constraint: the exit-wave change and the sums `_Totals` adds up.

    With a fixed detector `background` `b` the model counts are `|Psi|**2 + b`, and the
    exit wave is scaled by `sqrt(I / (|Psi|**2 + b))`: where the data are background
    alone it barely moves, where subtracting `b` from the data first would feed their
    Poisson noise into the object as diffuse scattering.
    """
    field = optics.propagate(psi, subpixel)
    mode_intensity = _abs2(field)
    amp2 = jnp.sum(mode_intensity, axis=0)
    model = amp2 if background is None else amp2 + background
    # A floor far below one photon keeps the ratio finite where the model is dark.
    ratio = jnp.where(valid > 0, jnp.sqrt((measured + _DARK) / (model + _DARK)), 1.0)
    dpsi = optics.backpropagate(field * (ratio - 1.0)[None], subpixel)
    residual = valid * model * (1.0 - ratio) ** 2  # per pixel: summed once per iteration
    return dpsi, _Totals.at_position(residual, mode_intensity, model, measured, valid)


_STATS_STRIDE = 4


class _Totals(eqx.Module):
    """Sums over positions: the squared amplitude residual, and the mode-power statistics.

    The residual is kept per detector pixel and reduced once, after the sweep: a reduction
    per position was a kernel of its own (small preset, sequential ePIE: 3.5 us of the 56 us
    a position takes).

    With `I_k` the intensity mode `k` predicts and `I = sum_k I_k`, `fisher[k, l] =
    sum I_k I_l / I` and `score[k] = sum I_k I_measured / I` over all frames and valid
    pixels define the Poisson Fisher-scoring step on the mode powers (`_mode_power_step`).
    """

    residual: Array
    fisher: Array
    score: Array

    @staticmethod
    def at_position(residual, mode_intensity, amp2, measured, valid):
        # Every `_STATS_STRIDE`-th detector row: M**2 products per pixel would otherwise
        # cost as much as the FFTs (medium preset, 3 modes: 3.2x the single-mode iteration
        # time, against 2.1x without them), and a quarter of the pixels of every frame
        # still fixes M powers far beyond the accuracy the model allows.
        if mode_intensity.shape[0] == 1:  # one mode: no powers to share, nothing to pay
            return _Totals.zeros(1, amp2.dtype, amp2.shape).replace_residual(residual)
        rows = slice(None, None, _STATS_STRIDE)
        intensity = mode_intensity[:, rows]
        weighted = intensity * (valid[rows] / (amp2[rows] + _DARK))[None]
        fisher = jnp.sum(weighted[:, None] * intensity[None], axis=(-2, -1))
        return _Totals(residual, fisher, jnp.sum(weighted * measured[rows][None], axis=(-2, -1)))

    @staticmethod
    def zeros(modes: int, dtype, frame_shape: tuple[int, ...]) -> "_Totals":
        return _Totals(jnp.zeros(frame_shape, dtype), jnp.zeros((modes, modes), dtype), jnp.zeros((modes,), dtype))

    def replace_residual(self, residual) -> "_Totals":
        return _Totals(residual, self.fisher, self.score)

    def __add__(self, other: "_Totals") -> "_Totals":
        return jtu.tree_map(jnp.add, self, other)

    def weighted(self, live) -> "_Totals":
        """Sum over a leading axis of positions, each weighted by `live`."""
        return jtu.tree_map(lambda x: jnp.tensordot(live, x, axes=1), self)


def _object_direction(probe, dpsi):
    """Numerator and weight of the object update at one position (summed over modes)."""
    return jnp.sum(jnp.conj(probe) * dpsi, axis=0), jnp.sum(_abs2(probe), axis=0)


def _probe_direction(patch, dpsi):
    """Numerator and weight of the probe update at one position (each mode)."""
    return jnp.conj(patch)[None] * dpsi, _abs2(patch)[None]


def _regularised(numerator, weight, alpha, step, weight_max):
    """rPIE's step: `step * numerator / ((1 - alpha) * weight + alpha * max(weight))`."""
    denom = (1.0 - alpha) * weight + alpha * weight_max
    return numerator * (step / jnp.maximum(denom, jnp.finfo(denom.dtype).tiny))


class _Position(eqx.Module):
    corner: Array
    subpixel: Array


def _locate_all(microscope: AbstractMicroscope) -> _Position:
    corner, subpixel = jax.vmap(microscope.locate)(microscope.positions)
    return _Position(corner, subpixel)


# ---- schedules -------------------------------------------------------------------------------


class _Kernel(eqx.Module):
    """The per-position PIE update, shared by both schedules.

    With `checkerboard` set (fast far-field path), the exit wave must carry the (+1, -1)
    modulation. Without sub-pixel shifts the probe is kept pre-modulated for the whole
    step (no per-position cost); with them, the probe is moved first and modulated after.
    """

    optics: _Optics
    valid: Array
    checkerboard: Array | None
    shifted: bool = eqx.field(static=True)
    background: Array | None = None

    def illuminate(self, probe, subpixel):
        if not self.shifted:
            return probe
        moved = shift_probe(probe, subpixel)
        return moved if self.checkerboard is None else moved * self.checkerboard[None]

    def __call__(self, patch, probe, subpixel, frame):
        """Exit-wave change, residual, and both update directions at one position."""
        moved = self.illuminate(probe, subpixel)
        dpsi, totals = _exit_correction(moved * patch[None], self.optics, subpixel, frame, self.valid, self.background)
        obj_num, obj_w = _object_direction(moved, dpsi)
        probe_num, probe_w = _probe_direction(patch, dpsi)
        if self.shifted:
            if self.checkerboard is not None:
                probe_num = probe_num * self.checkerboard[None]
            probe_num = shift_probe(probe_num, -subpixel)
        return obj_num, obj_w, probe_num, probe_w, totals

    def carry_in(self, probe):
        """The probe as the loop carries it (pre-modulated when nothing moves it)."""
        if self.shifted or self.checkerboard is None:
            return probe
        return probe * self.checkerboard[None]

    def carry_out(self, probe):
        return self.carry_in(probe)  # the modulation is its own inverse


def _sequential(cfg, kernel, obj, probe, where, measured, order, update_obj, update_probe):
    def body(carry, index):
        obj, probe, total = carry
        corner = where.corner[index]
        patch = extract_patch(obj, corner, probe.shape[-2:])
        obj_num, obj_w, probe_num, probe_w, totals = kernel(patch, probe, where.subpixel[index], measured[index])
        new_probe = probe
        if update_probe:
            new_probe = probe + _regularised(probe_num, probe_w, cfg.probe_alpha, cfg.probe_step, jnp.max(probe_w))
        if update_obj:
            step = _regularised(obj_num, obj_w, cfg.object_alpha, cfg.object_step, jnp.max(obj_w))
            if update_probe:
                # A data dependency (the factor is exactly 1 for a finite probe) that orders
                # the object's in-place update after the probe update, which reads the old
                # patch: unordered, XLA copied the whole object twice per position (medium
                # preset, sequential mPIE: 0.128 s per iteration with the copies, 0.074 s
                # without; the same results).
                step = step * (1.0 + 0.0 * new_probe[0, 0, 0].real)
            obj = add_to_patch(obj, corner, step)
        return (obj, new_probe, total + totals), None

    start = _Totals.zeros(probe.shape[0], measured.dtype, measured.shape[-2:])
    (obj, probe, total), _ = jax.lax.scan(body, (obj, probe, start), order)
    return obj, probe, total


# Patches in and out of the object, a block of positions at a time. Measured on the medium
# preset (batched mPIE, 2-core CPU): a vectorised `dynamic_slice` (one XLA gather) reads a
# block's patches faster than a loop of slices (0.076 against 0.085 s per iteration), while
# adding the block's updates is fastest as one `dynamic_update_slice` after another,
# unrolled (0.069 s): as a loop each trip costs more than its update, and XLA's scatter
# over the overlapping patches was the slowest (0.090 s).
def _gather(obj, corners, shape):
    return jax.vmap(lambda corner: extract_patch(obj, corner, shape))(corners)


def _scatter_add(obj, corners, patches):
    for i in range(patches.shape[0]):  # a block: a few positions, a static count
        obj = add_to_patch(obj, corners[i], patches[i])
    return obj


# Positions per vectorised block in batched mode: batched FFTs with bounded memory. Measured
# on the medium preset (2-core CPU, batched mPIE): 8 per block runs at 1.31x the FFT floor;
# 4 at 1.44x, 16 at 1.36x and 32 at 2.0x (large blocks are memory-bound).
_CHUNK = 8
_DEFAULT_MOMENTUM = {"sequential": 0.3, "batched": 0.9}


def _batched(cfg, kernel, obj, probe, where, measured, order, update_obj, update_probe, *, mesh=None):
    """All positions from the same object and probe; updates summed, then normalised.

    Positions are processed in blocks of `_CHUNK` (`vmap` inside a `lax.scan`), so the
    FFTs are batched while the intermediate arrays stay a block's size, not the scan's.
    With positions split over devices (`mesh`), each device sums its own positions' updates
    and the sums are reduced over the devices.
    """
    del order
    sums = sum_over_positions(_batch_sums, mesh, num_replicated=3)(kernel, obj, probe, where, measured)
    obj_num, obj_w, probe_num, probe_w, total = sums
    new_obj, new_probe = obj, probe
    if update_obj:
        new_obj = obj + _regularised(obj_num, obj_w, cfg.object_alpha, cfg.object_step, jnp.max(obj_w))
    if update_probe:
        new_probe = probe + _regularised(probe_num, probe_w, cfg.probe_alpha, cfg.probe_step, jnp.max(probe_w))
    return new_obj, new_probe, total


def _batch_sums(kernel, obj, probe, where, measured):
    """The update numerators and weights summed over the given positions, and their residual."""
    count = where.corner.shape[0]
    blocks = -(-count // _CHUNK)
    pad = blocks * _CHUNK - count
    index = jnp.concatenate([jnp.arange(count), jnp.zeros(pad, jnp.int32)]).reshape(blocks, _CHUNK)
    alive = jnp.concatenate([jnp.ones(count), jnp.zeros(pad)]).astype(measured.dtype).reshape(blocks, _CHUNK)
    shape = probe.shape[-2:]

    def block(carry, inputs):
        obj_num, obj_w, probe_num, probe_w, total = carry
        ids, live = inputs
        corners = where.corner[ids]
        patches = _gather(obj, corners, shape)
        one = lambda patch, subpixel, frame: kernel(patch, probe, subpixel, frame)  # noqa: E731
        o_num, o_w, p_num, p_w, totals = jax.vmap(one)(patches, where.subpixel[ids], measured[ids])
        o_num, o_w = o_num * live[:, None, None], o_w * live[:, None, None]
        obj_num = _scatter_add(obj_num, corners, o_num)
        obj_w = _scatter_add(obj_w, corners, o_w)
        probe_num = probe_num + jnp.sum(p_num * live[:, None, None, None], axis=0)
        probe_w = probe_w + jnp.sum(p_w * live[:, None, None, None], axis=0)
        return (obj_num, obj_w, probe_num, probe_w, total + totals.weighted(live)), None

    zeros = jnp.zeros_like(obj)
    init = (
        zeros,
        zeros.real,
        jnp.zeros_like(probe),
        jnp.zeros((1, *shape), obj.real.dtype),
        _Totals.zeros(probe.shape[0], measured.dtype, measured.shape[-2:]),
    )
    sums, _ = jax.lax.scan(block, init, (index, alive))
    return sums


# ---- shared engine logic ------------------------------------------------------------------


def _pie_targets(microscope: AbstractMicroscope, trainable: Any) -> tuple[bool, bool]:
    obj_spec = trainable.sample.sample
    probe_spec = any(jtu.tree_leaves(trainable.probe))
    # Everything else the spec selects: the spec with its object and probe leaves switched off.
    held = eqx.tree_at(
        lambda s: (s.sample.sample, s.probe), trainable, (False, jtu.tree_map(lambda _: False, trainable.probe))
    )
    others = selected_paths(held, held)
    if others:
        raise ValueError(
            f"`trainable`: PIE engines refine only the object and the probe, but {others} were selected; "
            f"use a gradient or Gauss-Newton engine to refine other parameters"
        )
    return bool(obj_spec), bool(probe_spec)


def _pie_init(cfg: _Config, microscope: AbstractMicroscope, data: MicroscopeData, trainable: Any) -> PIEState:
    _pie_targets(microscope, trainable)
    *arrays, largest_subpixel = _initial_arrays(microscope)
    # Decided on the host: off the pixel grid by more than 1e-3 pixel needs sub-pixel shifts.
    damping = (jnp.asarray(cfg.object_alpha, arrays[-1].dtype), jnp.asarray(jnp.inf, arrays[-1].dtype))
    return PIEState(*arrays, *damping, float(largest_subpixel) > 1e-3, positions_mesh_of(data))


@quick_jit
def _initial_arrays(microscope: AbstractMicroscope) -> tuple[Array, ...]:
    # One function, compiled for a short compilation (it runs once): run op by op, these
    # lines compiled some 30 tiny kernels, 0.6 s of a small reconstruction's cold first
    # iteration; as one function with the default options it took 0.13 s, now 0.05 s.
    fields = microscope.probe.fields()
    # The largest sub-pixel offset is reduced on the devices: positions split over
    # processes cannot be fetched whole.
    largest_subpixel = jnp.max(jnp.abs(_locate_all(microscope).subpixel), initial=0.0)
    return (
        jnp.zeros_like(microscope.sample.sample),
        jnp.zeros_like(fields),
        jnp.zeros((), jnp.int32),
        spectrum_centroid(fields),
        _power(fields),
        largest_subpixel,
    )


def _fixed_background(microscope) -> Array | None:
    """The detector's background, which the PIE engines model but do not refine (`None`: none)."""
    detector = microscope.detector
    return None if detector is None else detector.background


def _check_detector(microscope, trainable) -> None:
    detector = microscope.detector
    if detector is None:
        return
    refined = selected_paths(trainable.detector, trainable.detector)
    if refined or detector.frame_scale is not None:
        what = f"refine the detector's {refined}" if refined else "model per-frame scales (`detector.frame_scale`)"
        raise ValueError(
            f"the PIE engines model a fixed detector background but do not {what}: use Gradient, GaussNewton "
            "or OptimistixLeastSquares for them"
        )


def _with_momentum(new, old, velocity, eta):
    velocity = eta * velocity + (new - old)
    return new + eta * velocity, velocity


def _pie_step(cfg: _Config, microscope, state: PIEState, data: MicroscopeData, trainable, key):
    update_obj, update_probe = _pie_targets(microscope, trainable)
    cfg = eqx.tree_at(lambda c: c.object_alpha, cfg, state.object_alpha)
    shifted = state.subpixel
    optics = _Optics(microscope, _fast_path(microscope))
    where = _locate_all(microscope)
    fields = microscope.probe.fields()
    checkerboard = _checkerboard(fields.shape[-2:], fields.real.dtype) if optics.fast else None
    kernel = _Kernel(optics, data.valid, checkerboard, shifted, _fixed_background(microscope))
    obj0 = microscope.sample.sample
    order = jr.permutation(key, microscope.num_positions)
    schedule = _sequential if cfg.mode == "sequential" else functools.partial(_batched, mesh=state.mesh)
    obj, probe, total = schedule(
        cfg, kernel, obj0, kernel.carry_in(fields), where, data.intensities, order, update_obj, update_probe
    )
    probe = jnp.where(state.iteration >= cfg.probe_delay, kernel.carry_out(probe), fields)
    obj_v, probe_v = state.object_velocity, state.probe_velocity
    if cfg.momentum > 0:
        if update_obj:
            obj, obj_v = _with_momentum(obj, obj0, obj_v, cfg.momentum)
        if update_probe:
            probe, probe_v = _with_momentum(probe, fields, probe_v, cfg.momentum)
    if update_probe and fields.shape[0] > 1:
        gain = jnp.where(state.iteration >= cfg.probe_delay, _mode_power_step(total, fields), 1.0)
        probe, probe_v = probe * gain[:, None, None], probe_v * gain[:, None, None]
    if cfg.fix_gauge and update_obj and update_probe:
        obj, probe, obj_v, probe_v = _fix_gauge(cfg, microscope, state, obj, probe, obj_v, probe_v)
    new = eqx.tree_at(lambda m: m.sample.sample, microscope, obj)
    if update_probe:
        rebuilt = new.probe.with_fields(probe)
        if cfg.momentum > 0 and fields.shape[0] > 1:
            probe_v = _follow_modes(probe, rebuilt.fields(), probe_v)
        new = eqx.tree_at(lambda m: m.probe, new, rebuilt)
    count = data.num_positions * jnp.sum(data.valid)
    loss = jnp.sqrt(jnp.sum(total.residual) / count)
    next_state = PIEState(
        obj_v,
        probe_v,
        state.iteration + 1,
        state.probe_centroid,
        state.probe_power,
        *_damping(cfg, state, loss),
        shifted,
        state.mesh,
    )
    return new, next_state, loss


# A loss rise that doubles the object's regularisation: far above the sweep-to-sweep
# jitter of a converging run (a random order each sweep), far below a diverging one's.
_LOSS_RISE = 0.01


def _damping(cfg: _Config, state: PIEState, loss: Array) -> tuple[Array, Array]:
    """The object regularisation `alpha` for the next iteration, and the loss to compare it with.

    rPIE's object step `conj(P) dpsi / ((1 - alpha) |P|^2 + alpha max|P|^2)` is a
    per-position Newton step damped by `alpha` (a Levenberg-Marquardt damping). Each
    position's step is normalised by its own probe intensity, so a sweep composes maps
    that are each contractive in a different metric, and a correction passes from a
    position where a pixel is dim to one where it is bright with a gain up to
    `1 / (2 sqrt(alpha (1 - alpha)))` (1.67 at `alpha = 0.1`). Probes whose intensity
    falls off smoothly (a Gaussian beam) put most of the window at these intermediate
    intensities, and the sweep then amplifies the data's noise: measured on near-field
    data with a Gaussian probe (32 x 32 frames, Fresnel number 102, 1e5 counts per frame,
    started from the true probe), the loss falls to 0.56 and climbs back to 0.74 in 40
    iterations (object error 0.28; refining the object alone 0.24, so the probe update
    is not the cause; without noise 0.13, and with ePIE, `alpha = 1`, 0.08); whole-pixel
    positions diverge alike (not the sub-pixel shifts), and so does the far field with a
    Gaussian probe of curved wavefront (0.78). The stable `alpha` depends on the probe's
    profile, the overlap and the dose (0.15 to 0.3 in these cases), and defocused-disc
    probes need none: so, as Levenberg-Marquardt does, the damping follows the evidence,
    doubling (up to 1, ePIE's step) whenever an iteration's loss exceeds the lowest
    since the last increase by `_LOSS_RISE`. A converging run never triggers it.
    """
    if not cfg.adapt_alpha:  # successive losses not comparable (e.g. one batch of positions per iteration)
        return state.object_alpha, state.reference_loss
    rise = loss > (1.0 + _LOSS_RISE) * state.reference_loss
    alpha = jnp.where(rise, jnp.minimum(2.0 * state.object_alpha, 1.0), state.object_alpha)
    return alpha, jnp.where(rise, loss, jnp.minimum(state.reference_loss, loss))


# Bounds on one iteration's change of a mode's power (a factor), so that a poor early
# model cannot switch a mode off or flood it.
_POWER_STEP = 4.0


def _mode_power_step(totals: _Totals, fields) -> Array:
    """Amplitude factors that share the probe's power among its modes as the data ask.

    The measured counts are modelled as `sum_k c_k I_k`, with `I_k` the intensity mode `k`
    predicts and `c_k` a factor on its power (1 now). One Fisher-scoring step of the
    Poisson likelihood in `c`, from `c = 1`, solves `fisher c = score` (`_Totals`): the
    powers a linear fit of the patterns would choose, given the modes' shapes and the
    object. PIE's own updates change a mode's power only through the common intensity
    ratio, which the modes share, so the powers otherwise creep and settle off the truth
    (measured on the medium preset, 3 modes of weights 0.607 / 0.197 / 0.197: sequential
    rPIE stalls at 0.630 / 0.186 / 0.185). The factors are rescaled to keep the total
    power: the overall scale is the object and probe updates' business, and correcting it
    twice makes batched mPIE oscillate.
    """
    fisher = totals.fisher
    m = fisher.shape[0]
    ridge = 1e-6 * jnp.trace(fisher) / m + jnp.finfo(fisher.dtype).tiny
    factor = jnp.linalg.solve(fisher + ridge * jnp.eye(m, dtype=fisher.dtype), totals.score)
    factor = jnp.clip(factor, 1 / _POWER_STEP, _POWER_STEP)
    powers = jnp.sum(_abs2(fields), axis=(1, 2))
    factor = factor * jnp.sum(powers) / jnp.sum(factor * powers)
    return jnp.sqrt(factor)


def _follow_modes(before, after, velocity):
    """The probe's momentum, carried over to the modes of the rebuilt probe.

    Rebuilding a mixed-state probe re-orthogonalises its fields (`with_fields`): the new
    modes are a mix `C @ before` of the old ones, a unitary whose per-mode phases the SVD
    chooses afresh each time. Left in the old basis, the velocity would push each mode
    along another mode's direction, or its own at another phase: measured on the small
    preset with 3 modes (before `_mode_power_step` existed), batched mPIE then stalled at
    object error 0.16 after 60 iterations, against 0.08 with this correction.
    `C` is the least-squares mix `after before^H (before before^H)^-1`, slightly damped so
    that a dark mode cannot make it singular.
    """
    m = before.shape[0]
    a, b = before.reshape(m, -1), after.reshape(m, -1)
    gram = a @ jnp.conj(a).T
    gram = gram + 1e-6 * jnp.trace(gram).real / m * jnp.eye(m, dtype=gram.dtype)
    mix = jnp.conj(jnp.linalg.solve(gram, a @ jnp.conj(b).T)).T
    return (mix @ velocity.reshape(m, -1)).reshape(velocity.shape)


def _power(fields):
    return jnp.sum(_abs2(fields))


def _fix_gauge(cfg, microscope, state, obj, probe, obj_v, probe_v):
    """Undo the drift along the exact ambiguities of joint object-probe refinement.

    Scale: `c O` with `P / c` predicts the same data, so the probe's power is held at its
    starting value (a probe scaled to the measured counts keeps the object's transmission
    near 1). Far field only, the phase ramp: see `janssen.invert._ramp`. Nothing is
    corrected while the probe is held (`probe_delay`): it has not moved.
    """
    active = state.iteration >= cfg.probe_delay
    scale = jnp.where(active, jnp.sqrt(_power(probe) / state.probe_power), 1.0)
    if microscope.phase_ramp_gauge:
        # The centroid does not depend on the scale: both corrections in one pass.
        drift = jnp.where(active, spectrum_centroid(probe) - state.probe_centroid, 0.0)
        return move_ramp_to_object(drift, obj, probe, obj_v, probe_v, scale=scale)
    inverse = 1.0 / scale  # times the reciprocal: no complex division
    return obj * scale, probe * inverse, obj_v * scale, probe_v * inverse


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}, got {mode!r}")


def _check_steps(**steps: float) -> None:
    for name, value in steps.items():
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"`{name}` must be finite and >= 0, got {value}")
    for name in ("alpha", "object_alpha", "probe_alpha"):
        if name in steps and steps[name] > 1:
            raise ValueError(f"`{name}` must lie in [0, 1], got {steps[name]}")
    if "momentum" in steps and steps["momentum"] >= 1:
        raise ValueError(f"`momentum` must lie in [0, 1), got {steps['momentum']}")


class AbstractPIE(AbstractEngine[PIEState]):
    """The PIE family: subclasses fix the step rule through their fields.

    `init`, `step`, `terminate` and `postprocess` are shared (and never overridden);
    subclasses supply `_config()`. They treat the phase ramp themselves (`fix_gauge`), so
    the driver leaves it to them: with `fix_gauge=False` it is not held at all.
    """

    holds_phase_ramp: ClassVar[bool] = True

    mode: eqx.AbstractVar[str]
    probe_delay: eqx.AbstractVar[int]

    @abc.abstractmethod
    def _config(self) -> _Config:
        """Step sizes, regularisation and momentum as one record."""

    def check_detector(self, microscope, trainable) -> None:
        _check_detector(microscope, trainable)

    def init(self, microscope, data, trainable) -> PIEState:
        return _pie_init(self._config(), microscope, data, trainable)

    def step(self, microscope, state, data, trainable, key):
        return _pie_step(self._config(), microscope, state, data, trainable, key)

    def terminate(self, state, losses):
        del state, losses
        return never_stop()

    def postprocess(self, microscope, state):
        del state
        return microscope


class EPIE(AbstractPIE):
    """The extended ptychographical iterative engine (Maiden & Rodenburg 2009).

    Object and probe are updated with steps normalised by the *maximum* of the other's
    intensity: `O += object_step * conj(P) dpsi / max|P|^2`, and likewise for the probe.

    **Arguments:**

    - `object_step`, `probe_step`: step sizes (ePIE's alpha and beta), >= 0.
    - `mode`: `"sequential"` (update after every position, random order each
      iteration) or `"batched"` (all positions from the same state, updates summed).
    - `probe_delay`: iterations during which the probe is held fixed.
    - `fix_gauge`: when object and probe are refined together, hold the probe's power
      (the `c O`, `P / c` ambiguity) and, for far-field microscopes, its far-field
      centroid (the ramp ambiguity: `O exp(ik.r)`, `P exp(-ik.r)` predict the same
      data) where they started, so neither can drift
      (`janssen.invert.align_probe_to_data` centres a model probe on the data first).
    """

    object_step: float = 1.0
    probe_step: float = 1.0
    mode: str = eqx.field(default="sequential", static=True)
    probe_delay: int = eqx.field(default=1, static=True)
    fix_gauge: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        _check_mode(self.mode)
        _check_steps(object_step=self.object_step, probe_step=self.probe_step)

    def _config(self) -> _Config:
        return _Config(1.0, self.object_step, 1.0, self.probe_step, 0.0, self.mode, self.probe_delay, self.fix_gauge)


class RPIE(AbstractPIE):
    """The regularised PIE (Maiden, Johnson & Li 2017).

    The object step is `conj(P) dpsi / ((1 - alpha) |P|^2 + alpha max|P|^2)`: bright
    regions take near-Newton steps, dim ones are damped by `alpha`. The probe uses the
    same rule with `probe_alpha` and `probe_step`. `alpha` is where the damping starts:
    whenever an iteration's loss rises 1 % above the lowest since the last increase, it
    doubles (up to 1), as a Levenberg-Marquardt damping does. A converging run keeps it;
    with smooth (Gaussian) probes a fixed 0.1 amplifies the noise and diverges (see
    `_damping` in the source for the measurements). The value in use is
    `PIEState.object_alpha`.

    **Arguments:**

    - `alpha`: object regularisation in [0, 1] at the start (1 recovers ePIE).
    - `adapt_alpha`: double `alpha` when the loss rises (default `True`). Set it to
      `False` where successive iterations' losses are not comparable, e.g. streaming one
      batch of positions per iteration (docs/scale.md).
    - `probe_alpha`: probe regularisation in [0, 1].
    - `object_step`, `probe_step`: step sizes, >= 0.
    - `mode`: `"sequential"` or `"batched"` (see `EPIE`).
    - `probe_delay`: iterations during which the probe is held fixed.
    - `fix_gauge`: when object and probe are refined together, hold the probe's power
      (the `c O`, `P / c` ambiguity) and, for far-field microscopes, its far-field
      centroid (the ramp ambiguity: `O exp(ik.r)`, `P exp(-ik.r)` predict the same
      data) where they started, so neither can drift
      (`janssen.invert.align_probe_to_data` centres a model probe on the data first).
    """

    alpha: float = 0.1
    probe_alpha: float = 1.0
    object_step: float = 1.0
    probe_step: float = 0.1
    mode: str = eqx.field(default="sequential", static=True)
    probe_delay: int = eqx.field(default=1, static=True)
    fix_gauge: bool = eqx.field(default=True, static=True)
    adapt_alpha: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        _check_mode(self.mode)
        _check_steps(
            alpha=self.alpha, probe_alpha=self.probe_alpha, object_step=self.object_step, probe_step=self.probe_step
        )

    def _config(self) -> _Config:
        return _Config(
            self.alpha,
            self.object_step,
            self.probe_alpha,
            self.probe_step,
            0.0,
            self.mode,
            self.probe_delay,
            self.fix_gauge,
            self.adapt_alpha,
        )


class MomentumPIE(AbstractPIE):
    """rPIE with momentum (mPIE; Maiden, Johnson & Li 2017).

    After each iteration the change of object and probe feeds a velocity
    `v = momentum * v + (new - old)`, and the estimate moves on by `momentum * v`
    (a heavy-ball step over whole sweeps, which is where mPIE's speed-up comes from).

    **Arguments:**

    - `alpha`, `probe_alpha`, `object_step`, `probe_step`: as for `RPIE`.
    - `momentum`: in [0, 1). Default: 0.3 sequential, 0.9 batched. A sweep of the
      batched schedule is a small, smooth step (all positions from one state), which
      heavy momentum accelerates well; sequential sweeps are already large, and more
      than about 0.5 makes them oscillate (measured on the medium preset: batched
      0.9 reaches object error 0.035 in 50 iterations, sequential 0.9 stalls at 0.12).
    - `mode`, `probe_delay`, `fix_gauge`, `adapt_alpha`: as for `RPIE`.
    """

    alpha: float = 0.1
    probe_alpha: float = 1.0
    object_step: float = 1.0
    probe_step: float = 0.1
    momentum: float | None = None
    mode: str = eqx.field(default="sequential", static=True)
    probe_delay: int = eqx.field(default=1, static=True)
    fix_gauge: bool = eqx.field(default=True, static=True)
    adapt_alpha: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        _check_mode(self.mode)
        _check_steps(
            alpha=self.alpha,
            probe_alpha=self.probe_alpha,
            object_step=self.object_step,
            probe_step=self.probe_step,
            momentum=self._momentum(),
        )

    def _momentum(self) -> float:
        if self.momentum is not None:
            return self.momentum
        return _DEFAULT_MOMENTUM[self.mode] if self.mode in _DEFAULT_MOMENTUM else 0.0

    def _config(self) -> _Config:
        return _Config(
            self.alpha,
            self.object_step,
            self.probe_alpha,
            self.probe_step,
            self._momentum(),
            self.mode,
            self.probe_delay,
            self.fix_gauge,
            self.adapt_alpha,
        )
