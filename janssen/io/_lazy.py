"""`CXIFrames`: the frames of a CXI file read on demand, a batch of positions at a time.

For datasets larger than memory. The geometry (wavelength, pixel size, distance, mask,
positions) is small and read at once; the frames stay in the file. Uncompressed,
contiguous frame datasets are memory-mapped (the operating system pages in what a batch
touches); chunked or compressed ones (what `write_cxi` writes) are read chunk by chunk
through h5py, which decompresses only the chunks of the frames asked for. Each batch is
re-indexed onto janssen's frame (the detector orientation of `basis_vectors`) with
`read_cxi`'s own helpers, so both readers return the same numbers.
"""

import pathlib
from collections.abc import Iterator, Sequence

import h5py
import numpy as np

from .._data import MicroscopeData
from ._cxi import (
    _DETECTOR,
    CXIError,
    _damaged,
    _dataset,
    _first_present,
    _geometry,
    _microscope_data,
    _open,
    _to_janssen,
)


class CXIFrames:
    """A CXI file's frames, read lazily in batches of positions.

    Open it as a context manager (or call `close()`): the HDF5 file stays open while
    frames are read.

        with janssen.io.CXIFrames("scan.cxi") as frames:
            for index, batch in frames.batches(256, seed=0):
                ...  # `batch` is a MicroscopeData of those 256 positions

    The paths, conventions and checks are those of `read_cxi` (frames centred, positions
    the negative of the sample translation, a nonzero mask marks a bad pixel): frames,
    mask and pixel size come in janssen's frame for any detector orientation
    (`basis_vectors`), each batch re-indexed as it is read, exactly as `read_cxi` does.

    **Arguments:**

    - `path`: the CXI file.
    - `memory_map`: map contiguous, uncompressed frames with `numpy.memmap` (default
      `True`); other layouts are always read through h5py.

    **Raises:**

    `CXIError` (a `ValueError`) naming the file and HDF5 path when something required is
    missing or malformed or the geometry contradicts itself, as `read_cxi`.
    """

    def __init__(self, path: str | pathlib.Path, *, memory_map: bool = True):
        self.path = pathlib.Path(path)
        self._file = _open(self.path)
        try:
            with _damaged(self.path):
                self._frames_at = _first_present(
                    self._file, self.path, ("entry_1/data_1/data", f"{_DETECTOR}/data"), "the diffraction frames"
                )
                frames = _dataset(self._file, self.path, self._frames_at, read=False)
                if frames.ndim != 3:
                    raise CXIError(
                        f"CXI file {str(self.path)!r}: '/{self._frames_at}' must be a dataset of frames of shape "
                        f"(N, H, W), got {frames.shape}"
                    )
                self._frames = frames
                self._geometry = self._read_geometry(frames.shape)
                self._mapped = self._memory_map(frames) if memory_map else None
        except BaseException:
            self._file.close()
            raise

    # ---- what is read at once -------------------------------------------------------------

    def _read_geometry(self, shape: tuple[int, ...]) -> MicroscopeData:
        """The geometry as a one-frame `MicroscopeData` (validated like a whole dataset).

        Also keeps the stored frames' orientation and the positions, as `read_cxi` reads them.
        """
        self._axes, (self._positions, *fields) = _geometry(self._file, self.path, shape)
        frame = self._in_janssen_frame(np.zeros((1, *shape[1:]), np.float32))
        return _microscope_data(self.path, frame, self._positions[:1], *fields)

    def _memory_map(self, frames: h5py.Dataset) -> np.memmap | None:
        """A read-only map of the frames when HDF5 stores them as one plain block, else `None`."""
        if frames.chunks is not None or frames.compression is not None or frames.external:
            return None
        offset = frames.id.get_offset()
        if offset is None or not frames.dtype.isnative:
            return None
        return np.memmap(self.path, dtype=frames.dtype, mode="r", offset=offset, shape=frames.shape)

    @property
    def num_positions(self) -> int:
        """Number of frames in the file."""
        return int(self._frames.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        """`(H, W)` of one frame in janssen's frame (`(W, H)` as stored when the detector is transposed)."""
        return tuple(int(side) for side in self._geometry.frame_shape)

    @property
    def positions(self) -> np.ndarray:
        """`(N, 2)` beam positions `(x, y)` in metres (float64, a copy)."""
        return np.array(self._positions, dtype=np.float64)

    @property
    def memory_mapped(self) -> bool:
        """Whether frames are read through a memory map (else through h5py)."""
        return self._mapped is not None

    @property
    def geometry(self) -> MicroscopeData:
        """A one-frame `MicroscopeData` holding the wavelength, pixel size, distance and mask."""
        return self._geometry

    # ---- what is read on demand --------------------------------------------------------------

    def read(self, index: np.ndarray | Sequence[int] | slice) -> np.ndarray:
        """The frames at `index` (positions in any order, or a slice), as float32 `(n, H, W)` in janssen's frame."""
        if isinstance(index, slice):
            with _damaged(self.path):
                return self._in_janssen_frame(self._mapped[index] if self._mapped is not None else self._frames[index])
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_positions):
            raise ValueError(
                f"`index` must lie in [0, {self.num_positions}), got values from {index.min()} to {index.max()}"
            )
        if self._mapped is not None:
            return self._in_janssen_frame(self._mapped[index])
        # h5py reads increasing, unique indices; read those, then restore the order asked for.
        unique, inverse = np.unique(index, return_inverse=True)
        with _damaged(self.path):
            return self._in_janssen_frame(self._frames[unique])[inverse]

    def _in_janssen_frame(self, block: np.ndarray) -> np.ndarray:
        """Stored frames `(n, H, W)` as float32 in janssen's frame (transposed and flipped as `read_cxi` does)."""
        return _to_janssen(np.asarray(block, dtype=np.float32), self._axes)

    def batch(self, index: np.ndarray | Sequence[int]) -> MicroscopeData:
        """The positions at `index` as a `MicroscopeData` (only their frames are read)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        geometry = self._geometry
        return MicroscopeData(
            self.read(index),
            self._positions[index],
            geometry.wavelength,
            geometry.camera_pixel_size,
            geometry.distance,
            geometry.bad_pixels,
        )

    def batches(
        self, batch_size: int, *, seed: int | None = None, drop_remainder: bool = True
    ) -> Iterator[tuple[np.ndarray, MicroscopeData]]:
        """Every position once, in batches: yields `(index, MicroscopeData)`.

        **Arguments:**

        - `batch_size`: positions per batch (>= 1).
        - `seed`: shuffle the positions with `numpy.random.default_rng(seed)`; `None`
          keeps the file's order (the fastest to read).
        - `drop_remainder`: skip the last, smaller batch (default `True`), so that every
          batch has the same shape and a jitted step compiles once.
        """
        if isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
        order = np.arange(self.num_positions)
        if seed is not None:
            order = np.random.default_rng(seed).permutation(order)
        stop = self.num_positions - (self.num_positions % batch_size if drop_remainder else 0)
        for first in range(0, stop, batch_size):
            index = order[first : first + batch_size]
            yield index, self.batch(index)

    def close(self) -> None:
        """Close the file (and drop the memory map)."""
        self._mapped = None
        self._file.close()

    def __enter__(self) -> "CXIFrames":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_positions
