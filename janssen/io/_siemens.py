"""The real Siemens-star dataset (APS Velociprobe, as published with tike)."""

import bz2
import io
import pathlib

import equinox as eqx
import numpy as np
from jaxtyping import Array, ArrayLike, Complex

from .._custom_types import PairLike, ScalarLike
from .._data import MicroscopeData
from .._validate import complex_array, pair, real_array
from ._nominal import NOMINAL_CAMERA_PIXEL_SIZE, NOMINAL_DISTANCE, NOMINAL_WAVELENGTH


class MeasuredDataset(eqx.Module):
    """Measured data together with the starting probe that came with them.

    **Arguments:**

    - `data`: the `MicroscopeData`.
    - `probe`: `(y, x)` complex initial probe guess on the detector's grid, in the
      sample plane (a model, not a reconstruction).
    """

    data: MicroscopeData
    probe: Complex[Array, "y x"]

    def __init__(self, data: MicroscopeData, probe: Complex[ArrayLike, "y x"]):
        self.data = data
        self.probe = complex_array("probe", probe, ndim=2)

    def __check_init__(self):
        if self.probe.shape != self.data.frame_shape:
            raise ValueError(f"`probe` must have the frame shape {self.data.frame_shape}, got shape {self.probe.shape}")


def load_siemens_star(
    path: str | pathlib.Path,
    *,
    wavelength: ScalarLike = NOMINAL_WAVELENGTH,
    distance: ScalarLike = NOMINAL_DISTANCE,
    camera_pixel_size: PairLike = NOMINAL_CAMERA_PIXEL_SIZE,
) -> MeasuredDataset:
    """Load the tike Siemens-star test dataset (516 frames of 128 x 128).

    The file (`siemens-star-small.npz.bz2`, see `shared/data/README.md`) stores no
    geometry, only pixel units; the geometry given here is nominal, and the scan is
    converted so that one unit of the stored scan is one far-field object pixel
    `wavelength * distance / (128 * camera_pixel_size)` (10 nm with the defaults).

    Conversions made:

    - frames are stored with the zero frequency at pixel `[0, 0]`; they are
      `fftshift`ed so that it sits at `(64, 64)`, as `MicroscopeData` expects;
    - the scan gives the minimum corner `(row, column)` of each probe window; the
      positions are the window centres `(x, y) = (column, row)`, measured from the
      midpoint of the scan's bounding box, in metres;
    - the probe guess is scaled so that its power `sum |P|**2` equals the mean total
      counts per frame (with the unitary FFT, a unit object then predicts the measured
      counts).

    **Arguments:**

    - `path`: the `.npz.bz2` file (or the decompressed `.npz`).
    - `wavelength`, `distance`, `camera_pixel_size`: the nominal geometry in metres
      (default: 0.1 nm, 0.96 m, 75 um).

    **Returns:**

    A `MeasuredDataset` holding the `MicroscopeData` and the `(128, 128)` probe guess.
    """
    arrays = _load_npz(pathlib.Path(path))
    frames = np.asarray(arrays["data"], dtype=np.float32).reshape(-1, *arrays["data"].shape[-2:])
    frames = np.fft.fftshift(frames, axes=(-2, -1))
    scan = np.asarray(arrays["scan"], dtype=np.float64).reshape(-1, 2)
    probe = np.asarray(arrays["probe"]).reshape(frames.shape[-2:])
    probe = probe * np.sqrt(frames.sum(axis=(1, 2)).mean() / np.sum(np.abs(probe) ** 2))
    wavelength = real_array("wavelength", wavelength, shape=())
    camera_pixel_size = pair("camera_pixel_size", camera_pixel_size)
    distance = real_array("distance", distance, shape=())
    n = np.array([frames.shape[2], frames.shape[1]], dtype=np.float64)
    object_pixel = float(wavelength) * float(distance) / (n * np.asarray(camera_pixel_size, dtype=np.float64))
    corners_xy = scan[:, ::-1]
    centred = corners_xy - (corners_xy.max(axis=0) + corners_xy.min(axis=0)) / 2
    data = MicroscopeData(frames, centred * object_pixel, wavelength, camera_pixel_size, distance)
    return MeasuredDataset(data, probe)


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"`path` must be the Siemens-star file (siemens-star-small.npz.bz2), got {str(path)!r}")
    raw = path.read_bytes()
    if path.suffix == ".bz2":
        raw = bz2.decompress(raw)
    with np.load(io.BytesIO(raw)) as npz:
        missing = {"data", "scan", "probe"} - set(npz.files)
        if missing:
            raise ValueError(f"`path` {str(path)!r} lacks the arrays {sorted(missing)} (found {sorted(npz.files)})")
        return {name: npz[name] for name in ("data", "scan", "probe")}
