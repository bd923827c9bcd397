"""The measured mean pattern with its bad pixels filled: the one source of the data-derived starts."""

import numpy as np
from jaxtyping import ArrayLike, Float

from .._data import MicroscopeData


def fill_bad_pixels(image: Float[ArrayLike, "y x"], valid: ArrayLike) -> np.ndarray:
    """`image` with its invalid pixels replaced by the mean of their valid neighbours (host-side).

    Each pass gives every still-unfilled pixel the mean of its filled 3 x 3 neighbours, so
    a gap of any size closes from its edge inward. A probe guess from the mean pattern
    then has no holes: PIE never updates the probe's far field on bad pixels (no data
    there), and a guess that is zero on them stays zero (measured on the small preset
    with 1 % bad pixels: rPIE stalled at object error 0.24, 0.037 from a clean guess).

    **Arguments:**

    - `image`: `(y, x)` real image.
    - `valid`: `(y, x)`, nonzero where the pixel is measured.

    **Returns:**

    A float64 NumPy array of the same shape, equal to `image` on the valid pixels.
    """
    values = np.asarray(image, dtype=np.float64).copy()
    known = np.asarray(valid) != 0
    if not known.any():
        raise ValueError("`valid` marks no pixel as valid; nothing to fill from")
    values[~known] = 0.0
    while not known.all():
        total = _box_sum(values * known)
        count = _box_sum(known.astype(np.float64))
        grow = ~known & (count > 0)
        values[grow] = total[grow] / count[grow]
        known = known | grow
    return values


def _box_sum(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1)
    h, w = image.shape
    return sum(padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


def mean_pattern(data: MicroscopeData) -> np.ndarray:
    """The mean frame, bad pixels filled (host-side, float64)."""
    mean = fill_bad_pixels(mean_frame(data), data.valid)
    return np.maximum(mean, 0.0)


def mean_frame(data: MicroscopeData) -> np.ndarray:
    """The mean of the frames (host-side, accumulated in float64 without a float64 copy of them)."""
    return np.mean(np.asarray(data.intensities), axis=0, dtype=np.float64)
