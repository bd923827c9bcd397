"""Unit sanity before allocation: predict the object grid of a dataset and refuse a unit slip.

A wavelength in nm, a photon energy in eV, a pixel in mm or translations in um do not fail
where they are made: they fail later, as a traceback deep in an engine, an abort in XLA or
an out-of-memory error for an object grid of billions of pixels. `check_geometry` runs on
the host, on the few numbers that fix the geometry, before anything large is allocated.
"""

import equinox as eqx
import numpy as np

from .._custom_types import PairLike
from .._data import MicroscopeData
from ._lazy import CXIFrames

# Bounds outside which no ptychography measurement lies in SI units (see docs/own-data.md).
_MIN_WAVELENGTH = 1e-13  # m: 0.1 pm, below 300 keV electrons (1.97 pm)
_MAX_WAVELENGTH = 1e-3  # m: a larger value is nm or angstrom
_MAX_CAMERA_PIXEL = 1e-2  # m: a larger value is mm or um
_MAX_DISTANCE = 1e2  # m: a larger value is mm
_MIN_OBJECT_PIXEL = 1e-12  # m: 1 pm
_MAX_OBJECT_PIXEL = 1e-3  # m: 1 mm
_MIN_STEP_PX = 0.01  # object pixels between neighbouring positions
_LARGE_SCAN = 1e-2  # m: a scan wider than this is probably in um or nm
_COMPLEX64_BYTES = 8


class GeometryError(ValueError):
    """The geometry of a dataset is implausible: most likely a quantity in the wrong unit.

    The message names the field, the value received and the range expected.
    """


class ObjectGrid(eqx.Module):
    """The object grid a dataset needs, as `check_geometry` predicts it (host numbers, nothing allocated).

    **Fields:**

    - `pixel_size`: object pixel `(x, y)`, m.
    - `shape`: `(H, W)` of the object grid, pixels (even, as `janssen.optics.object_shape_for`).
    - `median_step_px`: median distance from each scan position to its nearest neighbour,
      in object pixels (`nan` with fewer than two distinct positions).
    """

    pixel_size: tuple[float, float]
    shape: tuple[int, int]
    median_step_px: float

    @property
    def num_pixels(self) -> int:
        """`H * W`."""
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of one complex64 object on this grid."""
        return self.num_pixels * _COMPLEX64_BYTES


def check_geometry(
    data: MicroscopeData | CXIFrames,
    *,
    object_pixel_size: PairLike | None = None,
    probe_shape: tuple[int, int] | None = None,
    padding_px: int | None = None,
    max_pixels: int = 2**28,
) -> ObjectGrid:
    """Predict the object grid of `data` and refuse geometry that can only be a unit slip.

    Runs on the host from `data`'s wavelength, pixel size, distance and positions; nothing
    the size of the object is allocated. The object pixel is `object_pixel_size` when given
    (near field: the detector pixel over the magnification), else the far-field
    `wavelength * distance / (N * camera_pixel_size)` along each axis. The grid spans the
    scan's bounding box plus one probe window plus `padding_px` on every side, as
    `janssen.invert.init_object` builds it.

    Refused, with a `GeometryError` naming the field:

    - `wavelength` over 1 mm (nm or angstrom given as m) or under 0.1 pm (from an energy in eV
      taken as J);
    - `camera_pixel_size` over 1 cm (mm or um); `distance` over 100 m (mm);
    - an object pixel under 1 pm or over 1 mm;
    - a median step between neighbouring positions under 0.01 object pixel;
    - an object grid over `max_pixels` pixels (translations in um or nm; the message says
      how wide the scan is in metres and in object pixels).

    **Arguments:**

    - `data`: the dataset, or an open `CXIFrames` (its geometry and positions only: no
      frame is read).
    - `object_pixel_size`: object pixel in m, scalar or `(x, y)` (default: the far-field
      pixel above).
    - `probe_shape`: `(H, W)` of the probe window (default: the frame shape).
    - `padding_px`: margin on every side, pixels (default `min(probe_shape) // 8`, as
      `init_object`).
    - `max_pixels`: the largest object grid accepted, pixels (default `2**28`, 2 GiB as
      complex64).

    **Returns:**

    The predicted `ObjectGrid`.

    **Raises:**

    `GeometryError` (a `ValueError`), one line naming the field, the value received and
    the expected range.
    """
    positions = np.asarray(data.positions, dtype=np.float64)
    data = data.geometry if isinstance(data, CXIFrames) else data  # the scan's wavelength, pixel, distance
    wavelength, distance = float(data.wavelength), float(data.distance)
    camera = np.asarray(data.camera_pixel_size, dtype=np.float64)
    _check_inputs(wavelength, camera, distance)
    probe_shape = tuple(data.frame_shape) if probe_shape is None else tuple(probe_shape)
    padding_px = min(probe_shape) // 8 if padding_px is None else padding_px
    pixel = _object_pixel(data, object_pixel_size, wavelength, camera, distance)
    span_m = np.ptp(positions, axis=0)
    span_px = span_m / pixel
    shape = tuple(int(s) + int(s) % 2 for s in np.ceil(span_px[::-1]) + np.array(probe_shape) + 2 * padding_px + 2)
    grid = ObjectGrid((float(pixel[0]), float(pixel[1])), shape, _median_step_px(positions, pixel))
    if grid.num_pixels > max_pixels:
        raise GeometryError(
            f"the object grid would be {shape[0]} x {shape[1]} = {grid.num_pixels:.3g} pixels "
            f"({grid.nbytes / 2**30:.3g} GiB as complex64), over `max_pixels` = {max_pixels:.3g}: `positions` span "
            f"{span_m[0]:.3g} x {span_m[1]:.3g} m = {span_px[0]:.3g} x {span_px[1]:.3g} object pixels of "
            f"{pixel[0]:.3g} m{_span_hint(span_m)}"
        )
    if grid.median_step_px < _MIN_STEP_PX:
        raise GeometryError(
            f"the median step between neighbouring `positions` is {grid.median_step_px:.3g} object pixels "
            f"({grid.median_step_px * pixel.min():.3g} m), under {_MIN_STEP_PX}: positions not in metres, or an "
            f"object pixel ({pixel[0]:.3g} m) far too large"
        )
    return grid


def _check_inputs(wavelength: float, camera: np.ndarray, distance: float) -> None:
    if wavelength > _MAX_WAVELENGTH:
        raise GeometryError(
            f"`wavelength` is {wavelength:.4g} m, over {_MAX_WAVELENGTH:g} m: it looks like nanometres or "
            "angstroms; give metres (1.5 angstrom = 1.5e-10 m)"
        )
    if wavelength < _MIN_WAVELENGTH:
        raise GeometryError(
            f"`wavelength` is {wavelength:.4g} m, under {_MIN_WAVELENGTH:g} m: if it came from a photon energy, "
            "that energy was in eV or keV where joules were expected (8 keV = 1.28e-15 J)"
        )
    if camera.max() > _MAX_CAMERA_PIXEL:
        raise GeometryError(
            f"`camera_pixel_size` is {_format(camera)} m, over {_MAX_CAMERA_PIXEL:g} m: it looks like millimetres "
            "or micrometres; give metres (75 um = 7.5e-05 m)"
        )
    if distance > _MAX_DISTANCE:
        raise GeometryError(
            f"`distance` is {distance:.4g} m, over {_MAX_DISTANCE:g} m: it looks like millimetres; give metres"
        )


def _object_pixel(data, given, wavelength: float, camera: np.ndarray, distance: float) -> np.ndarray:
    if given is None:
        frame = np.array(data.frame_shape[::-1], dtype=np.float64)
        pixel, source = wavelength * distance / (frame * camera), "wavelength * distance / (N * camera_pixel_size)"
    else:
        pixel, source = np.broadcast_to(np.asarray(given, dtype=np.float64), (2,)), "`object_pixel_size`"
    if not (np.all(np.isfinite(pixel)) and pixel.min() >= _MIN_OBJECT_PIXEL and pixel.max() <= _MAX_OBJECT_PIXEL):
        raise GeometryError(
            f"the object pixel {source} is {_format(pixel)} m, outside [{_MIN_OBJECT_PIXEL:g}, "
            f"{_MAX_OBJECT_PIXEL:g}] m: check the units of `wavelength` ({wavelength:.4g} m), `distance` "
            f"({distance:.4g} m) and `camera_pixel_size` ({_format(camera)} m)"
        )
    return pixel


def _median_step_px(positions: np.ndarray, pixel: np.ndarray) -> float:
    """Median nearest-neighbour distance between distinct positions, in object pixels."""
    distinct = np.unique(positions / pixel, axis=0)
    if len(distinct) < 2:
        return float("nan")
    return float(np.median(nearest_distances(distinct)))


def nearest_distances(points: np.ndarray) -> np.ndarray:
    """Each point's distance to its nearest other point, `(n, d)` -> `(n,)` (at least two points).

    Blocks of rows keep the pairwise table near 4 M entries whatever the scan's size (a
    table of 40 000 positions at once would take 25 GB).
    """
    points = np.asarray(points, dtype=np.float64)
    rows = max(1, 2**22 // len(points))
    nearest = np.empty(len(points))
    for start in range(0, len(points), rows):
        block = points[start : start + rows]
        squared = np.sum((block[:, None, :] - points[None, :, :]) ** 2, axis=-1)
        squared[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest[start : start + rows] = np.sqrt(squared.min(axis=1))
    return nearest


def _span_hint(span_m: np.ndarray) -> str:
    if span_m.max() > _LARGE_SCAN:
        return f"; a scan {span_m.max():.3g} m wide looks like translations not in metres (mm, micrometres, nm?)"
    return "; raise `max_pixels` if the scan really is this large"


def _format(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{value:.4g}" for value in values) + "]"
