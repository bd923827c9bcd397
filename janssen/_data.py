"""`MicroscopeData`: measured diffraction intensities and the geometry they were taken in."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from ._custom_types import PairLike, ScalarLike
from ._validate import check_finite, check_nonnegative, check_positive, is_concrete, pair, real_array


class MicroscopeData(eqx.Module):
    """A ptychographic dataset: one diffraction frame per scan position.

    **Arguments:**

    - `intensities`: `(npos, H, W)` measured intensities (photon counts), centred: the
      zero spatial frequency at pixel `(H // 2, W // 2)`. Non-negative and finite.
    - `positions`: `(npos, 2)` beam positions on the sample in metres, columns `(x, y)`.
    - `wavelength`: metres, > 0.
    - `camera_pixel_size`: detector pixel pitch in metres, scalar or `(x, y)`, > 0.
    - `distance`: sample-to-detector distance in metres, > 0.
    - `bad_pixels`: optional `(H, W)` boolean mask, `True` where a pixel must be ignored
      (dead, hot, beam stop). Defaults to no bad pixels.

    `image_data` is an alias of `intensities` (the original janssen's name).
    """

    intensities: Float[Array, "npos y x"]
    positions: Float[Array, "npos 2"]
    wavelength: Float[Array, ""]
    camera_pixel_size: Float[Array, "2"]
    distance: Float[Array, ""]
    bad_pixels: Bool[Array, "y x"]

    def __init__(
        self,
        intensities: Real[ArrayLike, "npos y x"],
        positions: Real[ArrayLike, "npos 2"],
        wavelength: ScalarLike,
        camera_pixel_size: PairLike,
        distance: ScalarLike,
        bad_pixels: Bool[ArrayLike, "y x"] | None = None,
    ):
        self.intensities = real_array("intensities", intensities)
        self.positions = real_array("positions", positions)
        self.wavelength = real_array("wavelength", wavelength, shape=())
        self.camera_pixel_size = pair("camera_pixel_size", camera_pixel_size)
        self.distance = real_array("distance", distance, shape=())
        if bad_pixels is None:
            bad_pixels = jnp.zeros(self.intensities.shape[-2:], dtype=bool)
        self.bad_pixels = jnp.asarray(bad_pixels).astype(bool)

    def __check_init__(self):
        if self.intensities.ndim != 3:
            raise ValueError(f"`intensities` must have shape (npos, H, W), got shape {self.intensities.shape}")
        npos = self.intensities.shape[0]
        if self.positions.shape != (npos, 2):
            raise ValueError(
                f"`positions` must have shape ({npos}, 2) (one (x, y) row per frame), got shape {self.positions.shape}"
            )
        if self.bad_pixels.shape != self.intensities.shape[1:]:
            raise ValueError(
                f"`bad_pixels` must have the frame shape {self.intensities.shape[1:]}, "
                f"got shape {self.bad_pixels.shape}"
            )
        check_positive("wavelength", self.wavelength)
        check_positive("camera_pixel_size", self.camera_pixel_size)
        check_positive("distance", self.distance)
        check_finite("positions", self.positions)
        check_nonnegative("intensities", self.intensities)
        if is_concrete(self.bad_pixels) and bool(np.all(np.asarray(self.bad_pixels))):
            raise ValueError("`bad_pixels` marks every pixel as bad; at least one must be valid")

    @property
    def image_data(self) -> Float[Array, "npos y x"]:
        """Alias of `intensities`."""
        return self.intensities

    @property
    def num_positions(self) -> int:
        """Number of frames."""
        return self.intensities.shape[0]

    @property
    def frame_shape(self) -> tuple[int, int]:
        """`(H, W)` of one frame."""
        return self.intensities.shape[1:]

    @property
    def valid(self) -> Float[Array, "y x"]:
        """1.0 on pixels that count, 0.0 on bad pixels."""
        return (~self.bad_pixels).astype(self.intensities.dtype)

    def batch(self, index: np.ndarray | list[int]) -> "MicroscopeData":
        """The positions at `index` as a `MicroscopeData` (as `janssen.io.CXIFrames.batch` reads them from a file)."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        count = self.num_positions
        if index.size and (index.min() < -count or index.max() >= count):
            raise IndexError(
                f"`index` must lie in [-{count}, {count}) for {count} positions, got {index.min()}..{index.max()}"
            )
        index = np.where(index < 0, index + count, index)
        if isinstance(self.intensities, jax.Array) and isinstance(self.positions, jax.Array):
            # One compiled gather straight into the new arrays: indexing with a NumPy array held
            # a second copy of the gathered frames while it ran (on the large preset's 512
            # central frames: 280 MB above the frames at the peak, against 150) and compiled
            # eight small programs.
            taken = _take_rows(self.intensities, self.positions, jnp.asarray(index, dtype=jnp.int32))
        else:
            taken = (self.intensities[index], self.positions[index])
        return eqx.tree_at(lambda d: (d.intensities, d.positions), self, taken)

    @property
    def object_pixel_size(self) -> Float[Array, "2"]:
        """Far-field object pixel `(x, y)`: `wavelength * distance / (N * camera_pixel_size)`."""
        n = jnp.array([self.frame_shape[1], self.frame_shape[0]], dtype=self.camera_pixel_size.dtype)
        return self.wavelength * self.distance / (n * self.camera_pixel_size)


@jax.jit
def _take_rows(intensities: Array, positions: Array, index: Array) -> tuple[Array, Array]:
    """`MicroscopeData.batch`'s gather: the rows `index` (in range) of both arrays."""
    return jnp.take(intensities, index, axis=0, mode="clip"), jnp.take(positions, index, axis=0, mode="clip")


def frames_within(frame_shape: tuple[int, ...], pixels: int) -> int:
    """How many frames of `frame_shape` hold at most `pixels` pixels in all (at least one).

    The bound the batched host and device work on frames shares (the verdict, the
    background estimate, the searches' blocks, the probe search's positions).
    """
    return max(1, int(pixels) // max(int(np.prod(frame_shape)), 1))
