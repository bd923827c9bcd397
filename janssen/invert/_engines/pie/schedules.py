"""The two PIE schedules: sequential (a `lax.scan` over a permutation) and batched (all positions from one state)."""

import jax
import jax.numpy as jnp

from ....optics._scan import put_window, take_window
from ..._sharding import sum_over_positions
from .kernel import Totals, regularised, weight_peak


def sequential_sweep(cfg, kernel, obj, probe, where, measured, order, update_obj, update_probe):
    def body(carry, index):
        obj, probe, total = carry
        corner, shift = where.corner[index], where.shift_at(index)
        patch = take_window(obj, corner, shift, probe.shape[-2:])
        obj_num, obj_w, probe_num, probe_w, totals, moved = kernel(patch, probe, where.subpixel[index], measured[index])
        new_probe = probe
        if update_probe:
            peak = weight_peak(probe_w, cfg.probe_alpha, patch[None])
            new_probe = probe + regularised(probe_num, probe_w, cfg.probe_alpha, cfg.probe_step, peak)
        if update_obj:
            peak = weight_peak(obj_w, cfg.object_alpha, moved)
            step = regularised(obj_num, obj_w, cfg.object_alpha, cfg.object_step, peak)
            if update_probe:
                # A data dependency (the factor is exactly 1 for a finite probe) that orders
                # the object's in-place update after the probe update, which reads the old
                # patch: unordered, XLA copied the whole object twice per position (medium
                # preset, sequential mPIE: 0.128 s per iteration with the copies, 0.074 s
                # without; the same results).
                step = step * (1.0 + 0.0 * new_probe[0, 0, 0].real)
            obj = put_window(obj, corner, shift, step)
        return (obj, new_probe, total + totals), None

    start = Totals.zeros(probe.shape[0], measured.dtype, measured.shape[-2:])
    (obj, probe, total), _ = jax.lax.scan(body, (obj, probe, start), order)
    return obj, probe, total


# Patches in and out of the object, a block of positions at a time. Measured on the medium
# preset (batched mPIE, 2-core CPU): a vectorised `dynamic_slice` (one XLA gather) reads a
# block's patches faster than a loop of slices (0.076 against 0.085 s per iteration), while
# adding the block's updates is fastest as one `dynamic_update_slice` after another,
# unrolled (0.069 s): as a loop each trip costs more than its update, and XLA's scatter
# over the overlapping patches was the slowest (0.090 s).
# A periodic sample's windows also carry its sub-pixel shifts (`shifts`, else `None`).
def gather(obj, corners, shifts, shape):
    if shifts is None:
        return jax.vmap(lambda corner: take_window(obj, corner, None, shape))(corners)
    return jax.vmap(lambda corner, shift: take_window(obj, corner, shift, shape))(corners, shifts)


def scatter_add(obj, corners, shifts, patches):
    for i in range(patches.shape[0]):  # a block: a few positions, a static count
        obj = put_window(obj, corners[i], None if shifts is None else shifts[i], patches[i])
    return obj


# Positions per vectorised block in batched mode: batched FFTs with bounded memory. Measured
# on the medium preset (2-core CPU, batched mPIE): 8 per block runs at 1.31x the FFT floor;
# 4 at 1.44x, 16 at 1.36x and 32 at 2.0x (large blocks are memory-bound).
CHUNK = 8


DEFAULT_MOMENTUM = {"sequential": 0.3, "batched": 0.9}


def batched_sweep(cfg, kernel, obj, probe, where, measured, order, update_obj, update_probe, *, mesh=None):
    """All positions from the same object and probe; updates summed, then normalised.

    Positions are processed in blocks of `CHUNK` (`vmap` inside a `lax.scan`), so the
    FFTs are batched while the intermediate arrays stay a block's size, not the scan's.
    With positions split over devices (`mesh`), each device sums its own positions' updates
    and the sums are reduced over the devices.
    """
    del order
    sums = sum_over_positions(batch_sums, mesh, num_replicated=3)(kernel, obj, probe, where, measured)
    return apply_sums(cfg, obj, probe, sums, update_obj, update_probe)


def apply_sums(cfg, obj, probe, sums, update_obj, update_probe):
    """The batched update from `batch_sums`' sums (over any grouping of the positions): new object, probe, totals."""
    obj_num, obj_w, probe_num, probe_w, total = sums
    new_obj, new_probe = obj, probe
    if update_obj:
        new_obj = obj + regularised(obj_num, obj_w, cfg.object_alpha, cfg.object_step, jnp.max(obj_w))
    if update_probe:
        new_probe = probe + regularised(probe_num, probe_w, cfg.probe_alpha, cfg.probe_step, jnp.max(probe_w))
    return new_obj, new_probe, total


def batch_sums(kernel, obj, probe, where, measured):
    """The update numerators and weights summed over the given positions, and their residual."""
    count = where.corner.shape[0]
    blocks = -(-count // CHUNK)
    pad = blocks * CHUNK - count
    index = jnp.concatenate([jnp.arange(count), jnp.zeros(pad, jnp.int32)]).reshape(blocks, CHUNK)
    alive = jnp.concatenate([jnp.ones(count), jnp.zeros(pad)]).astype(measured.dtype).reshape(blocks, CHUNK)
    shape = probe.shape[-2:]

    def block(carry, inputs):
        obj_num, obj_w, probe_num, probe_w, total = carry
        ids, live = inputs
        corners, shifts = where.corner[ids], where.shift_at(ids)
        patches = gather(obj, corners, shifts, shape)
        one = lambda patch, subpixel, frame: kernel(patch, probe, subpixel, frame)  # noqa: E731
        o_num, o_w, p_num, p_w, totals, _ = jax.vmap(one)(patches, where.subpixel[ids], measured[ids])
        o_num, o_w = o_num * live[:, None, None], o_w * live[:, None, None]
        obj_num = scatter_add(obj_num, corners, shifts, o_num)
        obj_w = scatter_add(obj_w, corners, shifts, o_w)
        probe_num = probe_num + jnp.sum(p_num * live[:, None, None, None], axis=0)
        probe_w = probe_w + jnp.sum(p_w * live[:, None, None, None], axis=0)
        return (obj_num, obj_w, probe_num, probe_w, total + totals.weighted(live)), None

    zeros = jnp.zeros_like(obj)
    init = (
        zeros,
        zeros.real,
        jnp.zeros_like(probe),
        jnp.zeros((1, *shape), obj.real.dtype),
        Totals.zeros(probe.shape[0], measured.dtype, measured.shape[-2:]),
    )
    sums, _ = jax.lax.scan(block, init, (index, alive))
    return sums
