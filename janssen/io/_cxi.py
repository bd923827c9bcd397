"""Reading and writing CXI files (Coherent X-ray Imaging format, version 1.6).

CXI (Maia, Nature Methods 9, 854 (2012); cxidb.org) is an HDF5 layout. janssen writes
and reads these paths:

| HDF5 path | content |
|---|---|
| `/cxi_version` | 160 |
| `/entry_1/instrument_1/detector_1/data` | `(N, H, W)` frames, centred (zero frequency at `(H//2, W//2)`) |
| `/entry_1/instrument_1/detector_1/distance` | sample-to-detector distance, m |
| `/entry_1/instrument_1/detector_1/x_pixel_size`, `y_pixel_size` | pixel pitch along the frames' columns and rows, m |
| `/entry_1/instrument_1/detector_1/basis_vectors` | `(2, 3)`: lab `(x, y, z)` of one step along rows, columns; m |
| `/entry_1/instrument_1/detector_1/corner_position` | `(x, y, z)` of the outer corner of the first pixel, m |
| `/entry_1/instrument_1/detector_1/mask` | `(H, W)` uint32, nonzero = bad pixel (optional) |
| `/entry_1/instrument_1/source_1/energy` | photon energy, J |
| `/entry_1/instrument_1/source_1/wavelength` | wavelength, m |
| `/entry_1/sample_1/geometry_1/translation` | `(N, 3)` sample translation `(x, y, z)`, m |
| `/entry_1/data_1/data`, `translation` | soft links to the frames and translations |
| `/ground_truth/object`, `probe`, `positions` | simulated truth (janssen's own group, optional) |

CXI records the translation of the *sample*; the beam's position on the sample, which
is what `MicroscopeData.positions` holds, is its negative. Writing stores
`-positions` (with z = 0) and reading negates back.

The detector's orientation in the lab frame is `basis_vectors`. janssen's own frame has
the rows along +y and the columns along +x (`("+y", "+x")`); a file in any of the eight
axis-aligned orientations (`DETECTOR_ORIENTATIONS`) is re-indexed onto it exactly, by
transposes and flips about the centre pixel `(H // 2, W // 2)`. docs/conventions.md
("Detector orientation in CXI files") has the rules and the conventions of other programs.
"""

import contextlib
import itertools
import pathlib
from collections.abc import Iterator

import h5py
import jax
import numpy as np

from .._data import MicroscopeData
from ._simulate import SimulatedDataset

_PLANCK = 6.62607015e-34  # J s (exact, SI 2019)
_SPEED_OF_LIGHT = 299792458.0  # m / s (exact)
_ELECTRON_VOLT = 1.602176634e-19  # J (exact)

# Read-time bounds on values no measurement has in SI units; past them a unit slip is certain.
_MAX_PHOTON_ENERGY = 1e-6  # J: ~6 TeV; a value above is eV or keV
_MAX_WAVELENGTH = 1e-3  # m: a value above is nm or angstrom
_MAX_PIXEL_PITCH = 1e-2  # m: a value above is mm or um
_MAX_DISTANCE = 1e2  # m: a value above is mm
_MAX_SCAN_SPAN = 0.1  # m: a value above is um or nm

_DETECTOR = "entry_1/instrument_1/detector_1"
_SOURCE = "entry_1/instrument_1/source_1"
_TRANSLATION = "entry_1/sample_1/geometry_1/translation"
_DATA_GROUP = "entry_1/data_1"
_GROUND_TRUTH = "ground_truth"
_PTYCHODUS = "entry_1/ptychodus"

_JANSSEN_AXES = ("+y", "+x")
DETECTOR_ORIENTATIONS: tuple[tuple[str, str], ...] = tuple(
    (f"{row_sign}{row_axis}", f"{column_sign}{column_axis}")
    for row_axis, column_axis in (("y", "x"), ("x", "y"))
    for row_sign, column_sign in itertools.product("+-", repeat=2)
)
"""The eight axis-aligned detector orientations, as `(rows, columns)`: the lab axis along
which the frames' row index (slow axis) and column index (fast axis) increase.
`("+y", "+x")`, the first, is janssen's own frame."""

_UNIT = {"x": np.array([1.0, 0.0, 0.0]), "y": np.array([0.0, 1.0, 0.0])}
# An axis-aligned basis vector may carry float noise off its axis, but no more than this
# fraction of its length (1e-6 rad of tilt: far below a pixel across any detector).
_ALIGNMENT_TOLERANCE = 1e-6
# x_pixel_size, y_pixel_size and the basis vectors' lengths, corner_position's z and the
# distance, wavelength and energy must agree to this relative tolerance.
_AGREEMENT = 1e-3


class CXIError(ValueError):
    """A CXI file is missing, unreadable, or lacks data that `MicroscopeData` needs.

    The message names the file, the HDF5 path, what was expected and what was found.
    """


def write_cxi(
    path: str | pathlib.Path,
    data: MicroscopeData,
    *,
    ground_truth: SimulatedDataset | None = None,
    detector_axes: tuple[str, str] = _JANSSEN_AXES,
) -> None:
    """Write a dataset to a CXI 1.6 file (overwriting an existing file).

    The detector group holds the frames, the mask, `basis_vectors` and `corner_position`
    for the orientation `detector_axes`: the frames and the mask are re-indexed (a
    transpose and flips about the centre pixel) so that `read_cxi` maps them back onto
    `data` exactly. Any orientation describes the same measurement; the keyword exists to
    make files like those of other programs (tests, benchmarks).

    **Arguments:**

    - `path`: the file to write.
    - `data`: the `MicroscopeData`.
    - `ground_truth`: a `SimulatedDataset` whose object, probe and positions go to
      the `/ground_truth` group (optional).
    - `detector_axes`: `(rows, columns)`, the lab axes along which the stored frames'
      row and column indices increase, one of `DETECTOR_ORIENTATIONS`: `("+y", "+x")`
      (default, janssen's frame), `("-y", "-x")` (CDTools' default), transposed ones such
      as `("+x", "+y")`, ...

    **Raises:**

    `OSError` when the file cannot be created; `ValueError` when the ground truth does
    not belong to `data` (different number of positions or frame shape) or
    `detector_axes` is not one of the eight orientations.
    """
    path = pathlib.Path(path)
    if ground_truth is not None:
        _check_truth_matches(ground_truth, data)
    axes = _checked_axes(detector_axes)
    try:
        handle = h5py.File(path, "w")
    except OSError as error:
        raise OSError(f"cannot create CXI file {str(path)!r}: {_reason(error)}") from error
    with handle:
        frames = _write_header(handle, data, np.asarray(data.positions, dtype=np.float64), axes)
        frames[...] = _from_janssen(np.asarray(data.intensities), axes)
        if ground_truth is not None:
            _write_truth(handle, ground_truth)


def _write_header(
    handle: h5py.File,
    geometry: MicroscopeData,
    positions: np.ndarray,
    axes: tuple[str, str],
    *,
    compression: str | None = "gzip",
) -> h5py.Dataset:
    """Everything of a CXI file but the frames; returns the empty frames dataset, one frame per position.

    `geometry` gives the frame shape, the wavelength, the detector and the mask (its
    frames are not written); `positions` `(N, 2)` the scan. Frames are stored chunked and
    gzip-compressed (one chunk per frame) unless `compression` is `None`: then as one
    contiguous block, which `CXIFrames` memory-maps.
    """
    handle.create_dataset("cxi_version", data=np.int64(160))
    frames = _write_detector(handle, geometry, axes, len(positions), compression)
    _write_source(handle, geometry)
    translation = np.column_stack([-positions, np.zeros(len(positions))])
    handle.create_dataset(_TRANSLATION, data=translation)
    links = handle.require_group(_DATA_GROUP)
    links["data"] = h5py.SoftLink(f"/{_DETECTOR}/data")
    links["translation"] = h5py.SoftLink(f"/{_TRANSLATION}")
    return frames


def _checked_axes(detector_axes: tuple[str, str]) -> tuple[str, str]:
    axes = tuple(detector_axes)
    if axes not in DETECTOR_ORIENTATIONS:
        raise ValueError(
            f"`detector_axes` must be one of the eight axis-aligned orientations {list(DETECTOR_ORIENTATIONS)} "
            f"((rows, columns) as lab axes), got {detector_axes!r}"
        )
    return axes


def _write_detector(
    handle: h5py.File, data: MicroscopeData, axes: tuple[str, str], num_frames: int, compression: str | None
) -> h5py.Dataset:
    detector = handle.require_group(_DETECTOR)
    height, width = data.frame_shape
    shape = (num_frames, width, height) if axes[0][1] == "x" else (num_frames, height, width)
    dtype = np.asarray(data.intensities[:1]).dtype
    if compression is None:
        frames = detector.create_dataset("data", shape=shape, dtype=dtype)
    else:
        # Counts compress well (many zeros, integer values); one chunk per frame.
        frames = detector.create_dataset(
            "data", shape=shape, dtype=dtype, chunks=(1, *shape[1:]), compression=compression,
            compression_opts=4 if compression == "gzip" else None, shuffle=True,
        )  # fmt: skip
    distance = float(data.distance)
    slow, fast = _basis_for(axes, np.asarray(data.camera_pixel_size, dtype=np.float64))
    rows, columns = shape[1:]
    corner = -(rows // 2 + 0.5) * slow - (columns // 2 + 0.5) * fast + np.array([0.0, 0.0, distance])
    detector.create_dataset("distance", data=np.float64(distance))
    detector.create_dataset("x_pixel_size", data=np.float64(np.linalg.norm(fast)))
    detector.create_dataset("y_pixel_size", data=np.float64(np.linalg.norm(slow)))
    detector.create_dataset("basis_vectors", data=np.stack([slow, fast]))
    detector.create_dataset("corner_position", data=corner)
    detector.create_dataset("mask", data=_from_janssen(np.asarray(data.bad_pixels), axes).astype(np.uint32))
    return frames


# ---- detector orientation ------------------------------------------------------------------


def _basis_for(axes: tuple[str, str], pitch_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lab-frame `(slow, fast)` basis vectors of `axes`, with `pitch_xy` the pitch along lab x and y."""
    slow, fast = (_step(axis, pitch_xy) for axis in axes)
    return slow, fast


def _step(axis: str, pitch_xy: np.ndarray) -> np.ndarray:
    """One pixel step along `axis` (`"+x"`, `"-y"`, ...) in the lab frame."""
    return (-1.0 if axis[0] == "-" else 1.0) * pitch_xy["xy".index(axis[1])] * _UNIT[axis[1]]


def _flip_about_centre(array: np.ndarray, axis: int) -> np.ndarray:
    """Reverse an axis about its centre index `n // 2`, which stays put (the zero frequency of a centred frame).

    Index `i` goes to `(2 (n // 2) - i) mod n`: a plain reversal for odd `n`; for even `n`
    index 0 (the Nyquist row, at -n/2 from the centre, whose mirror +n/2 is the same
    frequency on the periodic grid) stays at 0.
    """
    n = array.shape[axis]
    return np.take(array, (2 * (n // 2) - np.arange(n)) % n, axis=axis)


def _from_janssen(array: np.ndarray, axes: tuple[str, str]) -> np.ndarray:
    """Re-index `(..., H, W)` arrays in janssen's frame (rows +y, columns +x) to the orientation `axes`."""
    if axes[0][1] == "x":
        array = np.swapaxes(array, -1, -2)
    if axes[0][0] == "-":
        array = _flip_about_centre(array, -2)
    if axes[1][0] == "-":
        array = _flip_about_centre(array, -1)
    return np.ascontiguousarray(array)


def _to_janssen(array: np.ndarray, axes: tuple[str, str]) -> np.ndarray:
    """The inverse of `_from_janssen`: arrays stored in the orientation `axes` in janssen's frame."""
    if axes[0][0] == "-":
        array = _flip_about_centre(array, -2)
    if axes[1][0] == "-":
        array = _flip_about_centre(array, -1)
    if axes[0][1] == "x":
        array = np.swapaxes(array, -1, -2)
    return np.ascontiguousarray(array)


def _write_source(handle: h5py.File, data: MicroscopeData) -> None:
    source = handle.require_group(_SOURCE)
    wavelength = float(data.wavelength)
    source.create_dataset("wavelength", data=np.float64(wavelength))
    source.create_dataset("energy", data=np.float64(_PLANCK * _SPEED_OF_LIGHT / wavelength))


def _write_truth(handle: h5py.File, truth: SimulatedDataset) -> None:
    group = handle.require_group(_GROUND_TRUTH)
    group.create_dataset("object", data=np.asarray(truth.object))
    group.create_dataset("probe", data=np.asarray(truth.probe))
    group.create_dataset("positions", data=np.asarray(truth.positions))


def _check_truth_matches(truth: SimulatedDataset, data: MicroscopeData) -> None:
    if truth.positions.shape != data.positions.shape or truth.probe.shape[-2:] != data.frame_shape:
        raise ValueError(
            f"`ground_truth` must match `data`: expected positions of shape {data.positions.shape} and "
            f"probe frames of shape {data.frame_shape}, got {truth.positions.shape} and {truth.probe.shape[-2:]}"
        )


# ---- reading ----------------------------------------------------------------------------


def read_cxi(path: str | pathlib.Path) -> MicroscopeData:
    """Read a CXI file into `MicroscopeData`.

    Files from other programs are accepted as long as they hold what `MicroscopeData`
    needs. The frames are taken from `/entry_1/data_1/data`, else
    `/entry_1/instrument_1/detector_1/data`; they must be `(N, H, W)` and centred on the
    beam. The wavelength is `source_1/wavelength`, else `h c / source_1/energy` (the
    photon relation: files of electron data must store the wavelength). The positions
    are minus `/entry_1/sample_1/geometry_1/translation` (else
    `/entry_1/data_1/translation`), columns `(x, y)`, returned as stored (not
    re-centred); a file from ptychodus (it has an `/entry_1/ptychodus` group) stores the
    probe position itself, which is taken as is. A missing mask means no bad pixels; a
    `(N, H, W)` mask marks a pixel bad if it is bad in any frame.

    The detector's orientation comes from `detector_1/basis_vectors`: the lab-frame
    vectors `(x, y, z)` of one step along the stored rows (slow axis) and columns (fast
    axis), in m. Canonical storage is `(2, 3)`, one vector per row (CXI 1.6, what
    `write_cxi` writes); `(3, 2)`, one per column (CDTools), and one copy per frame are
    accepted. Each of the eight axis-aligned orientations (`DETECTOR_ORIENTATIONS`) is
    mapped exactly onto janssen's frame (rows along +y, columns along +x) by a transpose
    and flips about the centre pixel `(H // 2, W // 2)`, frames and mask alike; without
    `basis_vectors` the frames are taken as in janssen's frame. `x_pixel_size` and
    `y_pixel_size` are the pitches along the stored columns and rows (default: the basis
    vectors' lengths). `corner_position`, when present, must put the beam on the centre
    pixel of the stored frames, and its z supplies the distance when `distance` is absent.

    **Arguments:**

    - `path`: the CXI file.

    **Returns:**

    A `MicroscopeData` in janssen's frame.

    **Raises:**

    `CXIError` (a `ValueError`) naming the file and the HDF5 path, the expected and the
    received value, when the file is missing or unreadable, a required dataset is absent
    or malformed, the geometry contradicts itself (a pixel size against the basis, a basis
    vector off the x and y axes or with a z component, both vectors along one axis, a
    corner off the beam or against the distance, a tilted sample plane), or a value can
    only be a unit slip: an energy of 1e-6 J or more (eV, keV), a wavelength over 1 mm
    (nm, angstrom), a pixel over 1 cm (mm, um), a distance over 100 m (mm), translations
    spanning over 0.1 m (um, nm). `check_geometry` then checks the whole geometry.
    """
    path = pathlib.Path(path)
    with _open(path) as handle, _damaged(path):
        return _read_data(handle, path)


def read_ground_truth(path: str | pathlib.Path, *, data: MicroscopeData | None = None) -> SimulatedDataset | None:
    """Read a simulated CXI file's data and ground truth, or `None` if it has no truth.

    **Arguments:**

    - `path`: a CXI file written by `write_cxi(..., ground_truth=...)`.
    - `data`: the file's data when they are already in memory (as `read_cxi(path)` read
      them): only the truth is read then, not the frames again (on the large preset a
      second copy of the frames took the CLI's report from 1.0 to 1.6 GB resident).

    **Returns:**

    A `SimulatedDataset` (the data as `read_cxi` returns it, plus the `/ground_truth`
    object, probe and positions), or `None` when the file has no `/ground_truth` group.
    """
    path = pathlib.Path(path)
    with _open(path) as handle, _damaged(path):
        if _GROUND_TRUTH not in handle:
            return None
        data = _read_data(handle, path) if data is None else data
        truth = {name: _dataset(handle, path, f"{_GROUND_TRUTH}/{name}") for name in ("object", "probe", "positions")}
        try:
            return SimulatedDataset(data, truth["object"], truth["probe"], truth["positions"])
        except ValueError as error:
            raise CXIError(f"CXI file {str(path)!r}: group '/{_GROUND_TRUTH}' is invalid: {error}") from error


@contextlib.contextmanager
def _damaged(path: pathlib.Path) -> Iterator[None]:
    """HDF5's errors while reading a damaged file (a flipped byte, a truncated copy) as a `CXIError` naming it."""
    try:
        yield
    except (OSError, RuntimeError, KeyError) as error:
        raise CXIError(
            f"CXI file {str(path)!r} is damaged (HDF5 could not read it back; a truncated or corrupted copy?): "
            f"{_reason(error)}"
        ) from error


def _open(path: pathlib.Path) -> h5py.File:
    if not path.is_file():
        raise CXIError(f"CXI file {str(path)!r} does not exist (expected an HDF5 file)")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise CXIError(f"CXI file {str(path)!r} is not a readable HDF5 file: {_reason(error)}") from error


def _read_data(handle: h5py.File, path: pathlib.Path) -> MicroscopeData:
    frames_at = _first_present(handle, path, ("entry_1/data_1/data", f"{_DETECTOR}/data"), "the diffraction frames")
    stored = _dataset(handle, path, frames_at, read=False)
    if stored.ndim != 3 or 0 in stored.shape:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{frames_at}' must hold frames of shape (N, H, W), "
            f"got shape {stored.shape}" + (" (N, H and W must be at least 1)" if stored.ndim == 3 else "")
        )
    _check_count_type(path, frames_at, stored.dtype)
    axes, geometry = _geometry(handle, path, stored.shape)
    frames = _read_frames(stored, axes)
    _check_counts(path, frames_at, frames, signed=stored.dtype.kind != "u")
    return _microscope_data(path, jax.device_put(frames), *geometry)


#: Frames read, converted and re-oriented together (bounds the temporaries of `_read_frames`).
_READ_BLOCK = 64


def _read_frames(stored: h5py.Dataset, axes: tuple[str, str]) -> np.ndarray:
    """The stored frames as one float32 array in janssen's frame, read a block of frames at a time.

    float64 frames stay float64 when JAX's x64 mode is on (`MicroscopeData` keeps them so).

    The result is the only full-size array made: each block is converted and re-oriented
    into it (a transposed or flipped detector included), and it is aligned so that JAX
    can adopt it without a copy (`jax.device_put` shares it on the CPU; nothing else
    holds it, so nothing can change it afterwards).
    """
    count, rows, columns = stored.shape
    shape = (count, columns, rows) if axes[0][1] == "x" else (count, rows, columns)
    dtype = np.float64 if stored.dtype == np.float64 and jax.config.jax_enable_x64 else np.float32
    frames = _aligned_empty(shape, dtype)
    for first in range(0, count, _READ_BLOCK):
        block = np.asarray(stored[first : first + _READ_BLOCK])
        frames[first : first + len(block)] = _to_janssen(block.astype(dtype, copy=False), axes)
    return frames


#: Byte boundary XLA's CPU buffers start on: a NumPy array aligned so is adopted without a copy.
_ALIGNMENT = 64


def _aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array whose data start on an `_ALIGNMENT`-byte boundary."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(size + _ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGNMENT
    return raw[offset : offset + size].view(dtype).reshape(shape)


def _check_count_type(path: pathlib.Path, name: str, dtype: np.dtype) -> None:
    """Frames stored as real counts (integers or floats), refused naming the dataset otherwise."""
    if dtype.kind not in "iuf":
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold real counts (integers or floats), got dtype {dtype}"
        )


def _check_counts(path: pathlib.Path, name: str, frames: np.ndarray, *, signed: bool) -> None:
    """Read frames (floats) of finite, non-negative counts, refused naming the dataset otherwise.

    `signed`: whether the stored type could hold negative values (unsigned integers cannot).
    """
    bad = int(np.sum(~np.isfinite(frames)))
    if bad:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold finite counts, got {bad} NaN or infinite "
            "value(s); mark such pixels in the detector mask and set them to 0"
        )
    if signed and np.any(frames < 0):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold counts >= 0, got {int(np.sum(frames < 0))} "
            f"negative value(s) (the smallest {float(frames.min()):g}); mark them in the detector mask, set them to 0"
        )


def _geometry(handle: h5py.File, path: pathlib.Path, shape: tuple[int, ...]) -> tuple[tuple[str, str], tuple]:
    """The orientation of the stored frames of `shape` `(N, H, W)`, and `MicroscopeData`'s other fields.

    The fields, in janssen's frame: positions, wavelength, pixel `(x, y)`, distance, mask (or `None`).
    `CXIFrames` reads them without reading the frames.
    """
    axes, pixel_xy, distance = _detector(handle, path, shape)
    mask = _mask(handle, path, shape)
    mask = None if mask is None else _to_janssen(mask, axes)
    return axes, (_positions(handle, path, shape[0]), _wavelength(handle, path), pixel_xy, distance, mask)


def _microscope_data(path: pathlib.Path, *fields) -> MicroscopeData:
    """`MicroscopeData(*fields)`, a `ValueError` of its checks raised as a `CXIError` naming the file."""
    try:
        return MicroscopeData(*fields)
    except CXIError:
        raise
    except ValueError as error:
        raise CXIError(f"CXI file {str(path)!r}: {error}") from error


def _detector(
    handle: h5py.File, path: pathlib.Path, shape: tuple[int, ...]
) -> tuple[tuple[str, str], np.ndarray, float]:
    """The checked detector geometry: orientation `(rows, columns)`, pitch `(x, y)` in the lab frame, distance."""
    basis = _basis_vectors(handle, path, shape[0])
    if basis is None:
        # No orientation recorded: the frames are taken as in janssen's frame.
        axes, lengths = _JANSSEN_AXES, (None, None)
    else:
        (row_axis, row_length), (column_axis, column_length) = (
            _axis_of(path, vector, which) for which, vector in enumerate(basis)
        )
        if row_axis[1] == column_axis[1]:
            raise CXIError(
                f"CXI file {str(path)!r}: dataset '/{_DETECTOR}/basis_vectors' must have its slow (row) and fast "
                f"(column) vectors along different lab axes (x and y), got both along {row_axis[1]}: "
                f"{basis.tolist()}"
            )
        axes, lengths = (row_axis, column_axis), (row_length, column_length)
    # x_pixel_size is the pitch along the stored columns (fast axis), y_pixel_size along the rows.
    pitch_rows = _pitch(handle, path, "y_pixel_size", lengths[0], "slow (row)")
    pitch_columns = _pitch(handle, path, "x_pixel_size", lengths[1], "fast (column)")
    # Transposed frames (rows along x) have their row pitch along lab x.
    pixel_xy = np.array([pitch_columns, pitch_rows] if axes[0][1] == "y" else [pitch_rows, pitch_columns])
    return axes, pixel_xy, _distance(handle, path, *_basis_for(axes, pixel_xy), shape)


def _one_per_file(path: pathlib.Path, name: str, value: np.ndarray, count: int, ndim: int) -> np.ndarray:
    """`value`, or its first entry when it is stored once per frame (which must then all be equal)."""
    if value.ndim == ndim + 1 and value.shape[0] == count:
        if not np.all(value == value[:1]):
            raise CXIError(
                f"CXI file {str(path)!r}: dataset '/{name}' changes from frame to frame; janssen needs one detector "
                f"geometry for the whole scan (expected {count} equal entries, got {len(np.unique(value, axis=0))} "
                "different ones)"
            )
        return value[0]
    return value


def _basis_vectors(handle: h5py.File, path: pathlib.Path, count: int) -> np.ndarray | None:
    """`(2, 3)` rows: the slow (row) and fast (column) vectors, or `None` when the file has none."""
    name = f"{_DETECTOR}/basis_vectors"
    if name not in handle:
        return None
    value = _one_per_file(path, name, _numbers(handle, path, name), count, 2)
    if value.shape == (3, 2):  # one vector per column (CDTools)
        value = value.T
    if value.shape != (2, 3) or not np.all(np.isfinite(value)):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold two finite lab-frame vectors (x, y, z), the slow "
            f"(row) then the fast (column) axis, as shape (2, 3) (canonical) or (3, 2), got shape {value.shape}"
            + ("" if value.shape != (2, 3) else f" with values {value.tolist()}")
        )
    return value


def _axis_of(path: pathlib.Path, vector: np.ndarray, which: int) -> tuple[str, float]:
    """The lab axis (`"+x"`, `"-y"`, ...) of an axis-aligned basis vector, and its length."""
    name = f"'/{_DETECTOR}/basis_vectors'"
    label = ("slow (row)", "fast (column)")[which]
    length = float(np.linalg.norm(vector))
    if length == 0.0:
        raise CXIError(
            f"CXI file {str(path)!r}: the {label} vector of {name} must have a length (the pixel pitch), got 0"
        )
    if abs(vector[2]) > _ALIGNMENT_TOLERANCE * length:
        raise CXIError(
            f"CXI file {str(path)!r}: the {label} vector of {name} has a z component (the detector is tilted "
            f"out of the plane normal to the beam, which janssen does not model): expected (x, y, 0), got "
            f"{vector.tolist()}"
        )
    major = int(np.argmax(np.abs(vector[:2])))
    if abs(vector[1 - major]) > _ALIGNMENT_TOLERANCE * length:
        raise CXIError(
            f"CXI file {str(path)!r}: the {label} vector of {name} must lie along the lab x or y axis (janssen "
            f"re-indexes frames, it does not rotate them), got {vector.tolist()}"
        )
    return ("-" if vector[major] < 0 else "+") + "xy"[major], length


def _pitch(handle: h5py.File, path: pathlib.Path, field: str, length: float | None, label: str) -> float:
    """`x_pixel_size` or `y_pixel_size`, checked against the basis vector's length (or that length when absent)."""
    name = f"{_DETECTOR}/{field}"
    if name in handle or length is None:
        value = _scalar(handle, path, name)
        if length is not None and not abs(value - length) <= _AGREEMENT * length:
            raise CXIError(
                f"CXI file {str(path)!r}: dataset '/{name}' contradicts the length of the {label} vector of "
                f"'/{_DETECTOR}/basis_vectors': expected {length:.6g} m (within {_AGREEMENT:g} relative), "
                f"got {value:.6g} m"
            )
    else:
        name, value = f"{_DETECTOR}/basis_vectors", length
    if value > _MAX_PIXEL_PITCH:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' gives a detector pixel of {value:g} m, over "
            f"{_MAX_PIXEL_PITCH:g} m: it looks like millimetres or micrometres, CXI stores metres "
            "(a 75 um pixel is 7.5e-05)"
        )
    return value


def _distance(handle: h5py.File, path: pathlib.Path, slow: np.ndarray, fast: np.ndarray, shape: tuple) -> float:
    """`distance`, checked against `corner_position` (or its z when `distance` is absent); `shape` is `(N, H, W)`."""
    name = f"{_DETECTOR}/distance"
    corner_at = f"{_DETECTOR}/corner_position"
    if name in handle or corner_at not in handle:
        distance = _plausible_distance(path, name, _scalar(handle, path, name))
        if corner_at in handle:
            z = _corner(handle, path, slow, fast, shape)[2]
            if z != 0.0 and not abs(z - distance) <= _AGREEMENT * abs(distance):
                raise CXIError(
                    f"CXI file {str(path)!r}: the z of dataset '/{corner_at}' contradicts '/{name}': "
                    f"expected {distance:.6g} m (within {_AGREEMENT:g} relative), got {z:.6g} m"
                )
        return distance
    return _plausible_distance(path, corner_at, float(_corner(handle, path, slow, fast, shape)[2]))


def _plausible_distance(path: pathlib.Path, name: str, distance: float) -> float:
    if distance > _MAX_DISTANCE:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' gives a sample-to-detector distance of {distance:g} m, over "
            f"{_MAX_DISTANCE:g} m: it looks like millimetres, CXI stores metres"
        )
    return distance


def _corner(handle: h5py.File, path: pathlib.Path, slow: np.ndarray, fast: np.ndarray, shape: tuple) -> np.ndarray:
    """`corner_position`, checked to put the beam on the centre pixel `(H // 2, W // 2)` of the stored frames.

    CXI 1.6 calls it the corner of the first pixel; some programs write that pixel's centre
    instead. Both are accepted: the beam (lab x = y = 0) must lie `n // 2 + 1/2` or `n // 2`
    pixel steps from it along each axis.
    """
    name = f"{_DETECTOR}/corner_position"
    corner = _one_per_file(path, name, _numbers(handle, path, name), shape[0], 1)
    if corner.shape != (3,) or not np.all(np.isfinite(corner)):
        raise CXIError(f"CXI file {str(path)!r}: dataset '/{name}' must be a finite (x, y, z) in m, got {corner}")
    rows, columns = shape[1:]
    for vector, size in zip((slow, fast), (rows, columns)):
        axis = int(np.argmax(np.abs(vector[:2])))
        steps = -corner[axis] / vector[axis]
        if not min(abs(steps - size // 2 - 0.5), abs(steps - size // 2)) <= 0.01:
            expected = -(rows // 2 + 0.5) * slow - (columns // 2 + 0.5) * fast
            raise CXIError(
                f"CXI file {str(path)!r}: dataset '/{name}' puts the beam off the centre pixel of the frames "
                f"(janssen needs frames centred on the beam at (H // 2, W // 2) = ({rows // 2}, {columns // 2})): "
                f"expected x, y = {expected[:2].tolist()} m (the corner of the first pixel), "
                f"got {corner[:2].tolist()} m, {steps - 0.5:.2f} pixels from the first pixel's centre along "
                f"{'xy'[axis]} instead of {size // 2}"
            )
    return corner


def _positions(handle: h5py.File, path: pathlib.Path, count: int) -> np.ndarray:
    """The beam positions `(x, y)`: minus the sample translation (plus it in files from ptychodus)."""
    at = _first_present(handle, path, (_TRANSLATION, f"{_DATA_GROUP}/translation"), "the sample translations")
    translation = _numbers(handle, path, at)
    if translation.ndim != 2 or translation.shape[0] != count or translation.shape[1] not in (2, 3):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{at}' must have shape ({count}, 3) "
            f"(one (x, y, z) row per frame of '/entry_1/data_1/data'), got shape {translation.shape}"
        )
    if not np.all(np.isfinite(translation)):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{at}' must hold finite translations in m, got "
            f"{int(np.sum(~np.isfinite(translation)))} NaN or infinite value(s)"
        )
    _check_linked_translation(handle, path, at, translation)
    _check_sample_plane(handle, path)
    positions = np.asarray(translation[:, :2])
    span = float(np.max(np.ptp(positions, axis=0))) if np.all(np.isfinite(positions)) else 0.0
    if span > _MAX_SCAN_SPAN:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{at}' spans {span:g} m, over {_MAX_SCAN_SPAN:g} m: it looks like "
            "micrometres or nanometres, CXI stores metres (a 2 um step is 2e-06)"
        )
    # ptychodus writes the probe's position on the object, not the sample's translation.
    return positions if _PTYCHODUS in handle else -positions


def _check_linked_translation(handle: h5py.File, path: pathlib.Path, at: str, translation: np.ndarray) -> None:
    """`/entry_1/data_1/translation`, when it is a copy rather than a link, must hold the same translations."""
    other = f"{_DATA_GROUP}/translation"
    if other == at or other not in handle or not isinstance(handle[other], h5py.Dataset):
        return
    copy = np.asarray(handle[other][()])
    same = copy.shape == translation.shape and copy.dtype.kind in "iuf" and np.allclose(copy, translation, rtol=1e-6)
    if not same:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{other}' contradicts '/{at}': expected the same sample translations "
            f"(CXI makes it a link), got different values"
        )


def _check_sample_plane(handle: h5py.File, path: pathlib.Path) -> None:
    """Refuse a sample whose plane is not normal to the beam (`sample_1/geometry_1/orientation`)."""
    name = "entry_1/sample_1/geometry_1/orientation"
    if name not in handle:
        return
    value = _numbers(handle, path, name).reshape(-1)
    if value.size != 6 or not np.all(np.isfinite(value)):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold 6 finite numbers, got {value.size}: {value.tolist()}"
        )
    normal = np.cross(value[:3], value[3:])
    if not abs(normal[2]) >= (1 - _ALIGNMENT_TOLERANCE) * np.linalg.norm(normal) > 0:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' tilts the sample plane (normal {normal.tolist()}); janssen "
            "models a sample normal to the beam: expected a normal along z"
        )


def _wavelength(handle: h5py.File, path: pathlib.Path) -> float:
    if f"{_SOURCE}/wavelength" in handle:
        wavelength = _scalar(handle, path, f"{_SOURCE}/wavelength")
        if wavelength > _MAX_WAVELENGTH:
            raise CXIError(
                f"CXI file {str(path)!r}: dataset '/{_SOURCE}/wavelength' is {wavelength:g} m, over "
                f"{_MAX_WAVELENGTH:g} m: it looks like nanometres or angstroms, CXI stores metres "
                "(1.5 angstrom is 1.5e-10)"
            )
        if f"{_SOURCE}/energy" in handle:
            _check_energy_agrees(handle, path, wavelength)
        return wavelength
    if f"{_SOURCE}/energy" in handle:
        energy = _scalar(handle, path, f"{_SOURCE}/energy")
        if not energy > 0:
            raise CXIError(f"CXI file {str(path)!r}: dataset '/{_SOURCE}/energy' must be > 0 J, got {energy}")
        if energy >= _MAX_PHOTON_ENERGY:
            raise CXIError(
                f"CXI file {str(path)!r}: dataset '/{_SOURCE}/energy' must be the photon energy in joules "
                f"(X-rays: about 1e-16 to 1e-14 J), got {energy:g}: {_energy_unit_hint(energy)}"
            )
        return _PLANCK * _SPEED_OF_LIGHT / energy
    raise CXIError(
        f"CXI file {str(path)!r}: missing both '/{_SOURCE}/wavelength' (m) and '/{_SOURCE}/energy' (J); "
        f"MicroscopeData needs the wavelength"
    )


def _check_energy_agrees(handle: h5py.File, path: pathlib.Path, wavelength: float) -> None:
    """A photon energy beside the wavelength must be `h c / wavelength`."""
    name = f"{_SOURCE}/energy"
    energy = _scalar(handle, path, name)
    expected = _PLANCK * _SPEED_OF_LIGHT / wavelength
    if not abs(energy - expected) <= _AGREEMENT * expected:
        hint = f": {_energy_unit_hint(energy)}" if energy >= _MAX_PHOTON_ENERGY else ""
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' contradicts '/{_SOURCE}/wavelength': expected "
            f"h c / wavelength = {expected:.6g} J (within {_AGREEMENT:g} relative), got {energy:.6g}{hint}"
        )


def _energy_unit_hint(energy: float) -> str:
    if 1.0 <= energy < 1e3:
        return f"it looks like keV ({energy:g} keV is {energy * 1e3 * _ELECTRON_VOLT:.4g} J)"
    if 1e3 <= energy < 1e7:
        return f"it looks like eV ({energy:g} eV is {energy * _ELECTRON_VOLT:.4g} J)"
    return "no photon has that energy in joules"


def _mask(handle: h5py.File, path: pathlib.Path, frames_shape: tuple[int, ...]) -> np.ndarray | None:
    name = f"{_DETECTOR}/mask"
    if name not in handle:
        return None
    mask = _dataset(handle, path, name)
    if mask.dtype.kind not in "biuf" or (mask.dtype.kind == "f" and not np.all(np.isfinite(mask))) or np.any(mask < 0):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold non-negative integers (0 = good pixel, nonzero = "
            f"bad), got dtype {mask.dtype}" + ("" if mask.dtype.kind not in "if" else " with negative or NaN values")
        )
    bad = np.any(mask != 0, axis=0) if mask.shape == frames_shape else mask != 0
    if bad.shape == frames_shape[1:] and np.all(bad):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' marks every pixel as bad: expected 0 for good pixels, "
            "nonzero for bad ones"
        )
    if mask.shape == frames_shape:
        return np.any(mask != 0, axis=0)
    if mask.shape != frames_shape[1:]:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must have the frame shape {frames_shape[1:]}, "
            f"got shape {mask.shape}"
        )
    return mask != 0


def _first_present(handle: h5py.File, path: pathlib.Path, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if name in handle:
            return name
    tried = " or ".join(f"'/{name}'" for name in names)
    raise CXIError(f"CXI file {str(path)!r} lacks {what}: expected a dataset at {tried}, found none")


def _dataset(handle: h5py.File, path: pathlib.Path, name: str, *, read: bool = True) -> np.ndarray | h5py.Dataset:
    """The dataset at `name`, read (default) or as the open `h5py.Dataset`; refused naming it when absent."""
    item = handle.get(name)
    if item is None:
        raise CXIError(
            f"CXI file {str(path)!r}: missing required dataset '/{name}' (expected a dataset, found nothing)"
        )
    if not isinstance(item, h5py.Dataset):
        raise CXIError(f"CXI file {str(path)!r}: '/{name}' must be a dataset, got a {type(item).__name__}")
    return np.asarray(item[()]) if read else item


def _scalar(handle: h5py.File, path: pathlib.Path, name: str) -> float:
    """A single finite number > 0 (every scalar janssen reads is a length or an energy)."""
    value = _dataset(handle, path, name)
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must be a single number, "
            f"got shape {value.shape} of dtype {value.dtype}"
        )
    number = float(value.reshape(()))
    if not (np.isfinite(number) and number > 0):
        unit = "J" if name.endswith("energy") else "m"
        field = name.rsplit("/", 1)[-1]
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}': `{field}` must be finite and positive (a number of {unit} "
            f"> 0), got {number}"
        )
    return number


def _numbers(handle: h5py.File, path: pathlib.Path, name: str) -> np.ndarray:
    """A dataset of real numbers, as float64."""
    value = _dataset(handle, path, name)
    if value.dtype.kind not in "iuf":
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must hold real numbers, got dtype {value.dtype} "
            f"of shape {value.shape}"
        )
    return value.astype(np.float64)


def _reason(error: Exception) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split())
