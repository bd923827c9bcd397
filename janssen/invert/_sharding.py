"""Scan positions sharded over devices: one reconstruction, SPMD over `jax.sharding`.

Positions are the parallel axis of ptychography: every frame is predicted from the same
object and probe, and the updates from all frames are summed. `shard_positions` places
the per-position arrays (the frames and the scan positions) in blocks of positions over
a one-dimensional device mesh and replicates everything else (object, probe, optics), so
that the engines' jitted steps run SPMD unchanged: XLA's partitioner (GSPMD) splits the
vmapped forward model of the gradient and Gauss-Newton engines along the positions and
reduces their sums over devices. The batched PIE schedule, a loop over blocks of
positions, is split explicitly (`sum_over_positions`): each device runs the blocks of its
own positions and the summed updates are reduced with `psum`.

Across machines the same code runs under `jax.distributed` (see docs/scale.md): after
`jax.distributed.initialize()`, `jax.devices()` lists every process's devices and
`shard_positions` builds global arrays from each process's copy of the dataset, or from
only the frames its devices hold, read from a `janssen.io.CXIFrames` file.
"""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._data import MicroscopeData
from ..io._lazy import CXIFrames
from ..scopes._base import AbstractMicroscope

#: The name of the mesh axis the scan positions are split along.
POSITIONS_AXIS = "positions"

_Microscope = TypeVar("_Microscope", bound=AbstractMicroscope)


def positions_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-dimensional device mesh whose single axis, `"positions"`, splits the scan.

    **Arguments:**

    - `devices`: the devices to use, in order; default `jax.devices()` (every device of
      every process once `jax.distributed.initialize` has run).

    **Returns:**

    A `jax.sharding.Mesh` with the axis `POSITIONS_AXIS`.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("`devices` must name at least one device, got an empty sequence")
    return Mesh(np.asarray(devices, dtype=object), (POSITIONS_AXIS,))


def _place(value: Any, sharding: NamedSharding) -> jax.Array:
    """`value` laid out with `sharding`; across processes, each builds only its own shards."""
    if jax.process_count() == 1:
        return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _replicated(tree: Any, mesh: Mesh) -> Any:
    arrays, static = eqx.partition(tree, eqx.is_array)
    sharding = NamedSharding(mesh, PartitionSpec())
    return eqx.combine(jax.tree.map(lambda x: _place(x, sharding), arrays), static)


def _layout(tree: Any, per_position: Callable[[Any], tuple], mesh: Mesh) -> Any:
    """Split the leaves `per_position` picks along their first axis; replicate the rest.

    The per-position leaves are taken out before replicating, so that the frames are
    never copied whole to every device.
    """
    split = NamedSharding(mesh, PartitionSpec(POSITIONS_AXIS))
    placed = tuple(_place(x, split) for x in per_position(tree))
    hollow = eqx.tree_at(per_position, tree, replace=(None,) * len(placed))
    return eqx.tree_at(per_position, _replicated(hollow, mesh), placed, is_leaf=lambda x: x is None)


def _from_file(frames: CXIFrames, mesh: Mesh) -> MicroscopeData:
    """The file's data laid out over `mesh`, each process reading only its own frames.

    The frames are not checked for negative or non-finite values (that would read them
    all); the geometry is validated as `MicroscopeData` validates it.
    """
    split = NamedSharding(mesh, PartitionSpec(POSITIONS_AXIS))
    shape = (frames.num_positions, *frames.frame_shape)
    intensities = jax.make_array_from_callback(shape, split, lambda index: frames.read(index[0]))
    positions = np.asarray(frames.positions, dtype=jnp.result_type(float))
    positions = jax.make_array_from_callback(positions.shape, split, lambda index: positions[index])
    geometry = _replicated(frames.geometry, mesh)
    return eqx.tree_at(lambda d: (d.intensities, d.positions), geometry, (intensities, positions))


def shard_positions(
    microscope: _Microscope,
    data: MicroscopeData | CXIFrames,
    *,
    devices: Sequence[jax.Device] | Mesh | None = None,
) -> tuple[_Microscope, MicroscopeData]:
    """Split the scan positions over devices; replicate the object, probe and optics.

    The frames (`data.intensities`), the beam positions (`data.positions`) and the
    microscope's scan positions are laid out in equal blocks of consecutive positions,
    one block per device, over a one-dimensional mesh (axis `"positions"`); every other
    array is replicated on every device. Pass the results to `reconstruct` as usual:
    the batched PIE engines, `Gradient` and `GaussNewton` then compute each frame on the
    device that holds it and reduce their sums over the devices, giving the same result
    as on one device up to floating-point rounding. Sequential PIE runs correctly too, but
    its loop is serial, so it gains nothing.

    With a single device, everything is simply placed on that device.

    Rebind the names (`microscope, data = shard_positions(microscope, data)`) so that
    the unsharded copy of the frames can be freed: the dataset is then held once, split
    over the devices.

    **Arguments:**

    - `microscope`: the starting microscope; its positions must match `data`'s frames.
    - `data`: the measurements, or a `janssen.io.CXIFrames` file: then each process
      reads only the frames its devices hold (for datasets larger than one machine's
      memory), and the frames are not checked for negative or non-finite values.
    - `devices`: the devices (default: `jax.devices()`, every device of every process),
      or a `jax.sharding.Mesh` with an axis named `"positions"` (other axes replicate).

    **Returns:**

    `(microscope, data)`, laid out over the devices.

    **Raises:**

    `ValueError` when the number of positions is not a multiple of the number of
    devices (blocks must be equal: pass fewer devices, or drop the surplus frames), or
    when microscope and data disagree on the number of positions.
    """
    mesh = devices if isinstance(devices, Mesh) else positions_mesh(devices)
    if POSITIONS_AXIS not in mesh.axis_names:
        raise ValueError(f"`devices`: a mesh must have an axis named {POSITIONS_AXIS!r}, got axes {mesh.axis_names}")
    count = mesh.shape[POSITIONS_AXIS]
    if not isinstance(data, (MicroscopeData, CXIFrames)):
        raise ValueError(f"`data` must be a MicroscopeData or a CXIFrames, got {type(data).__name__}")
    if microscope.num_positions != data.num_positions:
        raise ValueError(
            f"`data` has {data.num_positions} frames but the microscope has {microscope.num_positions} scan positions"
        )
    if data.num_positions % count:
        divisors = [d for d in range(1, count + 1) if data.num_positions % d == 0]
        raise ValueError(
            f"`devices`: {data.num_positions} positions cannot be split evenly over {count} devices; "
            f"use a number of devices that divides {data.num_positions} (up to {count}: {divisors}), "
            f"or drop {data.num_positions % count} frame(s)"
        )
    if mesh.size == 1:
        # One device: plain placement, so that the steps' outputs (which XLA places on that
        # device) are laid out like their inputs and resuming compiles nothing new.
        if isinstance(data, CXIFrames):
            data = data.batch(np.arange(data.num_positions))
        return jax.device_put((microscope, data), mesh.devices.flat[0])
    microscope = _layout(microscope, lambda m: (m.positions,), mesh)
    if isinstance(data, CXIFrames):
        return microscope, _from_file(data, mesh)
    return microscope, _layout(data, lambda d: (d.intensities, d.positions), mesh)


def replicate_like_data(tree: Any, data: MicroscopeData) -> Any:
    """`tree`'s arrays replicated over the mesh `data`'s positions are split over.

    For engine states built by `init` on the default device: laid out as the steps will
    return them, so that the first resumed call compiles nothing new. Unchanged when
    `data` is not split.
    """
    mesh = positions_mesh_of(data)
    return tree if mesh is None else _replicated(tree, mesh)


def positions_mesh_of(data: MicroscopeData) -> Mesh | None:
    """The mesh `data`'s frames are split over along `"positions"`, or `None` (one device).

    Decided on the host, from the placement of the concrete frames (inside `jit` the
    placement is not visible, so engines call this in `init`).
    """
    sharding = getattr(data.intensities, "sharding", None)
    if not isinstance(sharding, NamedSharding) or isinstance(data.intensities, jax.core.Tracer):
        return None
    spec = tuple(sharding.spec)
    if not spec or spec[0] != POSITIONS_AXIS or sharding.mesh.shape[POSITIONS_AXIS] == 1:
        return None
    return sharding.mesh


_F = TypeVar("_F", bound=Callable[..., Any])


def sum_over_positions(fn: _F, mesh: Mesh | None, *, num_replicated: int) -> _F:
    """`fn` run on each device's own positions, its outputs summed over the devices.

    `fn(*replicated, *per_position)` must return sums over the positions it is given (a
    PyTree of arrays). Its first `num_replicated` arguments are given whole to every
    device; the rest are split along their leading (positions) axis as `data` is. With
    `mesh=None`, `fn` itself is returned.
    """
    if mesh is None:
        return fn

    def local(*args):
        return jax.lax.psum(fn(*args), POSITIONS_AXIS)

    def wrapped(*args):
        specs = tuple(
            PartitionSpec() if i < num_replicated else PartitionSpec(POSITIONS_AXIS) for i in range(len(args))
        )
        # check_vma=False: loop carries start replicated (zeros) and become per-device
        # partial sums; the psum above is the one reduction.
        return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(), check_vma=False)(*args)

    return wrapped  # type: ignore[return-value]
