"""Simulated datasets written straight to a CXI file, a batch of positions at a time.

`simulate_cxi` and `simulate_preset_cxi` write exactly what `write_cxi(path,
simulate(...).data, ground_truth=...)` would (the same frames, bit for bit), but never
hold more than one batch of frames: the frames of a large scan (the `"xlarge"` preset's
4000 frames of 512 x 512 are 4.2 GB) need never fit in memory, and a `CXIFrames` reader
can stream them back.
"""

import contextlib
import os
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import h5py
import numpy as np
from jaxtyping import PRNGKeyArray

from .._data import MicroscopeData
from ._cxi import _GROUND_TRUTH, _JANSSEN_AXES, _checked_axes, _from_janssen, _reason, _write_header
from ._results import temporary_path
from ._simulate import _BATCH, PRESETS, _measurement, _simulation_inputs


class SimulatedFile(NamedTuple):
    """What `simulate_cxi` wrote: the file and the ground truth (the frames stay in the file).

    - `path`: the CXI file.
    - `object`: `(Y, X)` complex object.
    - `probe`: `(modes, y, x)` probe, scaled to the simulated photon count.
    - `positions`: `(npos, 2)` scan positions `(x, y)`, metres.
    - `geometry`: a one-frame `MicroscopeData` with the wavelength, detector and distance
      (its frame is zeros).
    """

    path: pathlib.Path
    object: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    geometry: MicroscopeData


def simulate_cxi(
    path: str | pathlib.Path,
    frame_shape: int | tuple[int, int],
    num_positions: int,
    *,
    key: PRNGKeyArray,
    overwrite: bool = False,
    compression: str | None = "gzip",
    batch_size: int = _BATCH,
    detector_axes: tuple[str, str] = _JANSSEN_AXES,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> SimulatedFile:
    """`simulate(frame_shape, num_positions, key=key, **options)` written to a CXI file, lazily.

    The file holds what `write_cxi(path, dataset.data, ground_truth=dataset,
    detector_axes=detector_axes)` writes for that dataset, the same frames bit for bit
    (`read_cxi` and `read_ground_truth` read it back), but the frames are computed, drawn
    and written `batch_size` positions at a time, so memory holds the object, the probe
    and one batch, never the whole stack. The file is written as `<path>.partial` and
    renamed to `path` when complete: an interrupted run leaves no truncated file at `path`.

    **Arguments:**

    - `path`: the CXI file to write.
    - `frame_shape`, `num_positions`, `key`, `**options`: as for `janssen.io.simulate`
      (`photons`, `modes`, `overlap`, ...).
    - `overwrite`: replace an existing file at `path` (default `False`: refuse).
    - `compression`: `"gzip"` (default; one chunk per frame, as `write_cxi`) or `None`:
      the frames as one uncompressed block, which `CXIFrames` memory-maps (faster to
      stream, 4 bytes per pixel on disk).
    - `batch_size`: positions per batch (default 256): memory for the frames is about
      `batch_size` frames in float64.
    - `detector_axes`: the stored orientation, as for `write_cxi`.
    - `progress`: called as `progress(done, total)` after each batch is written.

    **Returns:**

    A `SimulatedFile`: the path and the ground truth.

    **Raises:**

    `FileExistsError` when `path` exists and `overwrite` is `False`; `ValueError` for an
    invalid argument (named, as `simulate`); `OSError` naming the file when it cannot be
    written.
    """
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass `overwrite=True` to replace it")
    if compression not in ("gzip", None):
        raise ValueError(f"`compression` must be 'gzip' or None, got {compression!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
    axes = _checked_axes(detector_axes)
    inputs = _simulation_inputs(frame_shape, num_positions, key=key, **options)
    microscope, frames, probe = _measurement(**inputs, batch_size=batch_size)
    positions = np.asarray(microscope.positions, dtype=np.float64)
    first = np.zeros((1, *probe.shape[-2:]), dtype=np.asarray(probe).real.dtype)
    geometry = MicroscopeData(
        first, positions[:1], inputs["wavelength"], inputs["camera_pixel_size"], inputs["distance"]
    )
    partial = temporary_path(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    try:
        with h5py.File(partial, "w") as handle:
            stored = _write_header(handle, geometry, positions, axes, compression=compression)
            done = 0
            for batch in frames:
                stored[done : done + len(batch)] = _from_janssen(batch, axes)
                done += len(batch)
                if progress is not None:
                    progress(done, len(positions))
            truth_arrays = (microscope.sample.sample, probe, microscope.positions)
            written = SimulatedFile(path, *(np.asarray(array) for array in truth_arrays), geometry)
            truth = handle.require_group(_GROUND_TRUTH)
            for name in ("object", "probe", "positions"):
                truth.create_dataset(name, data=getattr(written, name))
        os.replace(partial, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise OSError(f"cannot write CXI file {str(path)!r}: {_reason(error)}") from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return written


def simulate_preset_cxi(
    path: str | pathlib.Path,
    name: str,
    *,
    key: PRNGKeyArray,
    photons: float = 1e6,
    modes: int = 1,
    coherence_width=None,
    **kwargs,
) -> SimulatedFile:
    """`simulate_preset(name, ...)` written to a CXI file, lazily (see `simulate_cxi`).

    The only way to make the `"xlarge"` preset (4000 frames of 512 x 512, 4.2 GB of
    float32 frames) without holding it: `simulate_preset("xlarge", ...)` builds it in
    memory. `kwargs` are `simulate_cxi`'s (`overwrite`, `compression`, `batch_size`,
    `detector_axes`, `progress`).
    """
    if name not in PRESETS:
        raise ValueError(f"`name` must be one of {sorted(PRESETS)}, got {name!r}")
    side, num_positions = PRESETS[name]
    return simulate_cxi(
        path, side, num_positions, key=key, photons=photons, modes=modes, coherence_width=coherence_width, **kwargs
    )
