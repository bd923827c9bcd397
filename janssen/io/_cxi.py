"""Reading and writing CXI files (Coherent X-ray Imaging format, version 1.6).

CXI (Maia, Nature Methods 9, 854 (2012); cxidb.org) is an HDF5 layout. janssen writes
and reads these paths:

| HDF5 path | content |
|---|---|
| `/cxi_version` | 160 |
| `/entry_1/instrument_1/detector_1/data` | `(N, H, W)` frames, centred (zero frequency at `(H//2, W//2)`) |
| `/entry_1/instrument_1/detector_1/distance` | sample-to-detector distance, m |
| `/entry_1/instrument_1/detector_1/x_pixel_size`, `y_pixel_size` | detector pixel pitch, m |
| `/entry_1/instrument_1/detector_1/mask` | `(H, W)` uint32, nonzero = bad pixel (optional) |
| `/entry_1/instrument_1/source_1/energy` | photon energy, J |
| `/entry_1/instrument_1/source_1/wavelength` | wavelength, m |
| `/entry_1/sample_1/geometry_1/translation` | `(N, 3)` sample translation `(x, y, z)`, m |
| `/entry_1/data_1/data`, `translation` | soft links to the frames and translations |
| `/ground_truth/object`, `probe`, `positions` | simulated truth (janssen's own group, optional) |

CXI records the translation of the *sample*; the beam's position on the sample, which
is what `MicroscopeData.positions` holds, is its negative. Writing stores
`-positions` (with z = 0) and reading negates back.
"""

import pathlib

import h5py
import numpy as np

from ._data import MicroscopeData
from ._simulate import SimulatedDataset

_PLANCK = 6.62607015e-34  # J s (exact, SI 2019)
_SPEED_OF_LIGHT = 299792458.0  # m / s (exact)

_DETECTOR = "entry_1/instrument_1/detector_1"
_SOURCE = "entry_1/instrument_1/source_1"
_TRANSLATION = "entry_1/sample_1/geometry_1/translation"
_DATA_GROUP = "entry_1/data_1"
_GROUND_TRUTH = "ground_truth"


class CXIError(ValueError):
    """A CXI file is missing, unreadable, or lacks data that `MicroscopeData` needs.

    The message names the file, the HDF5 path, what was expected and what was found.
    """


def write_cxi(
    path: str | pathlib.Path,
    data: MicroscopeData,
    *,
    ground_truth: SimulatedDataset | None = None,
) -> None:
    """Write a dataset to a CXI 1.6 file (overwriting an existing file).

    **Arguments:**

    - `path`: the file to write.
    - `data`: the `MicroscopeData`.
    - `ground_truth`: a `SimulatedDataset` whose object, probe and positions go to
      the `/ground_truth` group (optional).

    **Raises:**

    `OSError` when the file cannot be created; `ValueError` when the ground truth does
    not belong to `data` (different number of positions or frame shape).
    """
    path = pathlib.Path(path)
    if ground_truth is not None:
        _check_truth_matches(ground_truth, data)
    try:
        handle = h5py.File(path, "w")
    except OSError as error:
        raise OSError(f"cannot create CXI file {str(path)!r}: {_reason(error)}") from error
    with handle:
        handle.create_dataset("cxi_version", data=np.int64(160))
        _write_detector(handle, data)
        _write_source(handle, data)
        positions = np.asarray(data.positions, dtype=np.float64)
        translation = np.column_stack([-positions, np.zeros(len(positions))])
        handle.create_dataset(_TRANSLATION, data=translation)
        links = handle.require_group(_DATA_GROUP)
        links["data"] = h5py.SoftLink(f"/{_DETECTOR}/data")
        links["translation"] = h5py.SoftLink(f"/{_TRANSLATION}")
        if ground_truth is not None:
            _write_truth(handle, ground_truth)


def _write_detector(handle: h5py.File, data: MicroscopeData) -> None:
    detector = handle.require_group(_DETECTOR)
    frames = np.asarray(data.intensities)
    # Counts compress well (many zeros, integer values); one chunk per frame.
    detector.create_dataset(
        "data", data=frames, chunks=(1, *frames.shape[1:]), compression="gzip", compression_opts=4, shuffle=True
    )
    detector.create_dataset("distance", data=np.float64(data.distance))
    detector.create_dataset("x_pixel_size", data=np.float64(data.camera_pixel_size[0]))
    detector.create_dataset("y_pixel_size", data=np.float64(data.camera_pixel_size[1]))
    detector.create_dataset("mask", data=np.asarray(data.bad_pixels).astype(np.uint32))


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
    `/entry_1/instrument_1/detector_1/data`; they must be `(N, H, W)` and centred. The
    wavelength is `source_1/wavelength`, else `h c / source_1/energy` (the photon
    relation: files of electron data must store the wavelength). The positions are
    minus `/entry_1/sample_1/geometry_1/translation` (else `/entry_1/data_1/translation`),
    columns `(x, y)`, returned as stored (not re-centred). A missing mask means no bad
    pixels; a `(N, H, W)` mask marks a pixel bad if it is bad in any frame.

    **Arguments:**

    - `path`: the CXI file.

    **Returns:**

    A `MicroscopeData`.

    **Raises:**

    `CXIError` (a `ValueError`) naming the file and the HDF5 path when the file is
    missing or unreadable, or a required dataset is absent or malformed.
    """
    path = pathlib.Path(path)
    with _open(path) as handle:
        return _read_data(handle, path)


def read_ground_truth(path: str | pathlib.Path) -> SimulatedDataset | None:
    """Read a simulated CXI file's data and ground truth, or `None` if it has no truth.

    **Arguments:**

    - `path`: a CXI file written by `write_cxi(..., ground_truth=...)`.

    **Returns:**

    A `SimulatedDataset` (the data as `read_cxi` returns it, plus the `/ground_truth`
    object, probe and positions), or `None` when the file has no `/ground_truth` group.
    """
    path = pathlib.Path(path)
    with _open(path) as handle:
        if _GROUND_TRUTH not in handle:
            return None
        data = _read_data(handle, path)
        truth = {name: _dataset(handle, path, f"{_GROUND_TRUTH}/{name}") for name in ("object", "probe", "positions")}
        try:
            return SimulatedDataset(data, truth["object"], truth["probe"], truth["positions"])
        except ValueError as error:
            raise CXIError(f"CXI file {str(path)!r}: group '/{_GROUND_TRUTH}' is invalid: {error}") from error


def _open(path: pathlib.Path) -> h5py.File:
    if not path.is_file():
        raise CXIError(f"CXI file {str(path)!r} does not exist (expected an HDF5 file)")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise CXIError(f"CXI file {str(path)!r} is not a readable HDF5 file: {_reason(error)}") from error


def _read_data(handle: h5py.File, path: pathlib.Path) -> MicroscopeData:
    frames_at = _first_present(handle, path, ("entry_1/data_1/data", f"{_DETECTOR}/data"), "the diffraction frames")
    frames = _dataset(handle, path, frames_at)
    if frames.ndim != 3:
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{frames_at}' must hold frames of shape (N, H, W), "
            f"got shape {frames.shape}"
        )
    translation_at = _first_present(
        handle, path, (_TRANSLATION, f"{_DATA_GROUP}/translation"), "the sample translations"
    )
    translation = _dataset(handle, path, translation_at)
    if translation.ndim != 2 or translation.shape[0] != frames.shape[0] or translation.shape[1] not in (2, 3):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{translation_at}' must have shape ({frames.shape[0]}, 3) "
            f"(one (x, y, z) row per frame), got shape {translation.shape}"
        )
    try:
        return MicroscopeData(
            frames,
            -translation[:, :2],
            _wavelength(handle, path),
            np.array(
                [_scalar(handle, path, f"{_DETECTOR}/x_pixel_size"), _scalar(handle, path, f"{_DETECTOR}/y_pixel_size")]
            ),
            _scalar(handle, path, f"{_DETECTOR}/distance"),
            _mask(handle, path, frames.shape),
        )
    except CXIError:
        raise
    except ValueError as error:
        raise CXIError(f"CXI file {str(path)!r}: {error}") from error


def _wavelength(handle: h5py.File, path: pathlib.Path) -> float:
    if f"{_SOURCE}/wavelength" in handle:
        return _scalar(handle, path, f"{_SOURCE}/wavelength")
    if f"{_SOURCE}/energy" in handle:
        energy = _scalar(handle, path, f"{_SOURCE}/energy")
        if not energy > 0:
            raise CXIError(f"CXI file {str(path)!r}: dataset '/{_SOURCE}/energy' must be > 0 J, got {energy}")
        return _PLANCK * _SPEED_OF_LIGHT / energy
    raise CXIError(
        f"CXI file {str(path)!r}: missing both '/{_SOURCE}/wavelength' (m) and '/{_SOURCE}/energy' (J); "
        f"MicroscopeData needs the wavelength"
    )


def _mask(handle: h5py.File, path: pathlib.Path, frames_shape: tuple[int, ...]) -> np.ndarray | None:
    name = f"{_DETECTOR}/mask"
    if name not in handle:
        return None
    mask = _dataset(handle, path, name)
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
    raise CXIError(f"CXI file {str(path)!r} has no {what}: expected a dataset at {tried}, found none")


def _dataset(handle: h5py.File, path: pathlib.Path, name: str) -> np.ndarray:
    item = handle.get(name)
    if item is None:
        raise CXIError(
            f"CXI file {str(path)!r}: missing required dataset '/{name}' (expected a dataset, found nothing)"
        )
    if not isinstance(item, h5py.Dataset):
        raise CXIError(f"CXI file {str(path)!r}: '/{name}' must be a dataset, got a {type(item).__name__}")
    return np.asarray(item[()])


def _scalar(handle: h5py.File, path: pathlib.Path, name: str) -> float:
    value = _dataset(handle, path, name)
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise CXIError(
            f"CXI file {str(path)!r}: dataset '/{name}' must be a single number, "
            f"got shape {value.shape} of dtype {value.dtype}"
        )
    return float(value.reshape(()))


def _reason(error: OSError) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split())
