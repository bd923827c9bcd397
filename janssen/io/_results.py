"""Reconstruction result files (HDF5): the images, the loss history and a resumable checkpoint.

| HDF5 path | content |
|---|---|
| `/object` | `(Y, X)` complex object transmission |
| `/probe` | `(modes, y, x)` complex probe modes |
| `/positions` | `(N, 2)` scan positions `(x, y)`, m |
| `/loss` | `(iterations,)` loss of every completed iteration |
| `/wavelength`, `/distance` | m |
| `/object_pixel_size` | `(2,)` object pixel `(x, y)`, m |
| `/object_std` | `(Y, X)` standard error of each object pixel (optional; `janssen.invert.object_std`) |
| `/verdict/per_frame` | `(N,)` R of each frame (optional; `janssen.invert.compute_verdict`) |
| `/verdict/per_pixel` | `(H, W)` mean squared amplitude residual per detector pixel (optional) |
| `/checkpoint/state` | opaque bytes: the engine state, for resuming (optional) |
| `/extra/<name>` | any further arrays (optional) |
| attributes of `/` | `engine`, `engine_parameters` (JSON), `janssen_version`, `iteration`, ... |
| `r_factor`, `r_floor` attributes of `/` | R and its Poisson floor (optional, with `/verdict`) |
"""

import contextlib
import json
import math
import os
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import h5py
import numpy as np

_DATASETS = ("object", "probe", "positions", "loss", "wavelength", "distance", "object_pixel_size")


def _attribute(value: Any) -> Any:
    """An HDF5-storable attribute: dicts and lists become JSON text."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def write_result(
    path: str | pathlib.Path,
    *,
    object: Any,
    probe: Any,
    positions: Any,
    loss: Any,
    wavelength: float,
    distance: float,
    object_pixel_size: Any,
    attrs: dict,
    extra: dict | None = None,
    state_bytes: bytes | memoryview | None = None,
    object_std: Any = None,
    verdict: Mapping[str, Any] | None = None,
) -> None:
    """Write a reconstruction result file (overwriting it, atomically).

    The file is written to `<path>.partial` in the same folder, flushed to disk and
    renamed over `path` at the end, so an interrupted write (a kill, a full disk) never
    leaves a broken result where a good checkpoint was: `path` holds either the previous
    file or the new one, whole. A leftover `<path>.partial` (from a killed run) or a
    symbolic link planted there is removed, never followed; on failure the temporary is
    removed.

    **Arguments:**

    - `path`: the `.h5` file.
    - `object`: `(Y, X)` complex object.
    - `probe`: `(modes, y, x)` (or `(y, x)`) complex probe.
    - `positions`: `(N, 2)` positions `(x, y)` in metres.
    - `loss`: `(iterations,)` loss history.
    - `wavelength`, `distance`: metres.
    - `object_pixel_size`: `(x, y)` object pixel in metres.
    - `attrs`: attributes of the root group (`engine`, `engine_parameters`,
      `janssen_version`, `iteration`…); dicts and lists are stored as JSON text.
    - `extra`: further arrays, stored under `/extra`.
    - `state_bytes`: serialised engine state (bytes or a buffer), stored as `/checkpoint/state`.
    - `object_std`: `(Y, X)` per-pixel standard error of the object (e.g. from
      `janssen.invert.object_std`), stored as `/object_std`; optional.
    - `verdict`: the fit's verdict as a mapping with `r`, `floor` (floats, stored as the
      root attributes `r_factor` and `r_floor`), `per_frame` (`(N,)`) and `per_pixel`
      (`(H, W)`), stored under `/verdict`; optional (`janssen.invert.save_solution` passes a
      `janssen.invert.Verdict`'s fields).

    **Raises:**

    `OSError` naming the file when it cannot be written; `ValueError` when `object_std`
    is complex or not of the object's shape, or when `verdict` lacks a field or has one of
    the wrong shape.
    """
    path = pathlib.Path(path)
    probe = np.asarray(probe)
    arrays = {
        "object": np.asarray(object),
        "probe": probe[None] if probe.ndim == 2 else probe,
        "positions": np.asarray(positions, dtype=np.float64),
        "loss": np.asarray(loss),
        "wavelength": np.float64(wavelength),
        "distance": np.float64(distance),
        "object_pixel_size": np.asarray(object_pixel_size, dtype=np.float64).reshape(2),
    }
    if object_std is not None:
        object_std = _object_std(object_std, arrays["object"].shape)
    if verdict is not None:
        attrs = {**attrs, "r_factor": float(verdict["r"]), "r_floor": float(verdict["floor"])}
        verdict_arrays = _verdict_arrays(verdict, len(arrays["positions"]))
    partial = temporary_path(path)
    try:
        with _exclusive(partial) as stream, h5py.File(stream, "w") as handle:
            for name, value in arrays.items():
                handle.create_dataset(name, data=value)
            for name, value in attrs.items():
                handle.attrs[name] = _attribute(value)
            for name, value in (extra or {}).items():
                handle.create_dataset(f"extra/{name}", data=np.asarray(value))
            if state_bytes is not None:
                # One opaque scalar of the bytes, viewed rather than copied (np.void copies).
                state = memoryview(state_bytes).cast("B")
                scalar = np.frombuffer(state, dtype=np.dtype((np.void, state.nbytes))).reshape(())
                handle.create_dataset("checkpoint/state", data=scalar)
            if object_std is not None:
                handle.create_dataset("object_std", data=object_std)
            if verdict is not None:
                for name, value in verdict_arrays.items():
                    handle.create_dataset(f"verdict/{name}", data=value)
        os.replace(partial, path)
    except OSError as error:
        raise OSError(f"cannot write result file {str(path)!r}: {_reason(error)}") from error


def temporary_path(path: str | pathlib.Path) -> pathlib.Path:
    """Where `write_result` writes `path` before renaming it: `<path>.partial`, in the same folder."""
    path = pathlib.Path(path)
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def _exclusive(partial: pathlib.Path) -> Iterator[Any]:
    """A new regular file at `partial`, opened for writing and flushed to disk on exit.

    Whatever was at `partial` (a temporary left by a killed run, or a planted symbolic
    link) is removed, never followed: the file is created with `O_EXCL | O_NOFOLLOW`.
    On an error the temporary is removed and the error raised.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(partial, flags, 0o666)
    try:
        with os.fdopen(descriptor, "w+b") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _reason(error: OSError) -> str:
    """An `OSError`'s message on one line (disk full, permission denied…)."""
    return " ".join(str(error).split())


def read_result(path: str | pathlib.Path, *, state: bool = True) -> dict[str, Any]:
    """Read a result file written by `write_result`.

    **Arguments:**

    - `path`: the `.h5` file.
    - `state`: read the checkpoint's serialised state (`"state_bytes"`); `False` leaves
      it `None` (a view of the result needs none: on the large preset it is 31 MB,
      twice the object).

    **Returns:**

    A dict with the arrays of `write_result` under their names (NumPy arrays; scalars as
    Python floats), `"attrs"` (the root attributes, with `engine_parameters` decoded from
    JSON), `"extra"` (a dict of arrays), `"state_bytes"` (`bytes`, or `None` when the
    file holds no checkpoint), `"object_std"` (the `(Y, X)` standard-error map, or
    `None` when the file has none) and `"verdict"` (a dict with `r`, `floor`, `per_frame`
    and `per_pixel`, or `None` for files written without one, as all files before it).

    **Raises:**

    `ValueError` naming the file when it is missing, unreadable or not a result file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"result file {str(path)!r} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"result file {str(path)!r} is not a readable HDF5 file: {error}") from error
    with handle:
        missing = [name for name in _DATASETS if name not in handle]
        if missing:
            raise ValueError(f"{str(path)!r} is not a janssen result file: it lacks the datasets {missing}")
        out: dict[str, Any] = {name: handle[name][()] for name in _DATASETS}
        for name in ("wavelength", "distance"):
            out[name] = float(out[name])
        attrs = {name: _plain(value) for name, value in handle.attrs.items()}
        if "engine_parameters" in attrs:
            attrs["engine_parameters"] = json.loads(attrs["engine_parameters"])
        out["attrs"] = attrs
        out["extra"] = _read_group(handle.get("extra", {}))
        saved = state and "checkpoint/state" in handle
        out["state_bytes"] = handle["checkpoint/state"][()].tobytes() if saved else None
        out["object_std"] = handle["object_std"][()] if "object_std" in handle else None
        out["verdict"] = _read_verdict(handle, attrs)
    return out


def _verdict_arrays(verdict: Mapping[str, Any], num_positions: int) -> dict[str, np.ndarray]:
    """The verdict's per-frame and per-pixel arrays, checked before writing."""
    missing = [name for name in ("r", "floor", "per_frame", "per_pixel") if name not in verdict]
    if missing:
        raise ValueError(f"`verdict` must hold r, floor, per_frame and per_pixel; it lacks {missing}")
    per_frame = np.asarray(verdict["per_frame"], dtype=np.float64)
    per_pixel = np.asarray(verdict["per_pixel"], dtype=np.float64)
    if per_frame.shape != (num_positions,) or per_pixel.ndim != 2:
        raise ValueError(
            f"`verdict` must have per_frame of shape ({num_positions},) (one value per position) and a 2-D "
            f"per_pixel, got {per_frame.shape} and {per_pixel.shape}"
        )
    return {"per_frame": per_frame, "per_pixel": per_pixel}


def _read_verdict(handle: h5py.File, attrs: dict[str, Any]) -> dict[str, Any] | None:
    if "r_factor" not in attrs or "verdict" not in handle:
        return None
    return {
        "r": float(attrs["r_factor"]),
        "floor": float(attrs.get("r_floor", math.nan)),
        "per_frame": handle["verdict/per_frame"][()],
        "per_pixel": handle["verdict/per_pixel"][()],
    }


def _read_group(group: Any) -> dict[str, Any]:
    """A group's datasets as arrays, its subgroups as nested dicts."""
    return {name: _read_group(value) if isinstance(value, h5py.Group) else value[()] for name, value in group.items()}


def _object_std(value: Any, object_shape: tuple[int, ...]) -> np.ndarray:
    """The standard-error map as a real array of the object's shape (checked before writing)."""
    std = np.asarray(value)
    if np.iscomplexobj(std) or std.shape != object_shape:
        raise ValueError(
            f"`object_std` must be a real array of the object's shape {object_shape}, got {std.dtype} {std.shape}"
        )
    return std


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python objects."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
