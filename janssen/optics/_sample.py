"""`SampleFunction`: the complex transmission of a thin object."""

import equinox as eqx
from jaxtyping import Array, ArrayLike, Complex, Float, Num

from .._custom_types import PairLike
from .._validate import check_finite, check_positive, complex_array, pair


class SampleFunction(eqx.Module):
    """A thin object's complex transmission `t(y, x)` on a regular grid.

    A `periodic` sample repeats with the period of its grid (a crystal's unit cell, or a
    field that a scan moves cyclically, as the object field in diffuser ptychography):
    a microscope cuts its probe windows with wrap-around, so every position is valid,
    and moves the *sample* by each position's sub-pixel remainder with a Fourier shift
    (exact for a periodic band-limited field) while the probe stays on its grid. A
    sample the size of the probe then sees, at position `p`, `O(r + p)` exactly.

    **Arguments:**

    - `sample`: complex array `(y, x)`.
    - `dx`: pixel pitch in metres, a scalar or an `(x, y)` pair, > 0.
    - `periodic`: whether the sample wraps around (keyword-only, static; default `False`).
    """

    sample: Complex[Array, "y x"]
    dx: Float[Array, "2"]
    periodic: bool = eqx.field(default=False, static=True)

    def __init__(self, sample: Num[ArrayLike, "y x"], dx: PairLike, *, periodic: bool = False):
        self.sample = complex_array("sample", sample, ndim=2)
        self.dx = pair("dx", dx)
        if not isinstance(periodic, bool):
            raise ValueError(f"`periodic` must be True or False, got {periodic!r}")
        self.periodic = periodic

    def __check_init__(self):
        check_positive("dx", self.dx)
        check_finite("sample", self.sample)

    @property
    def shape(self) -> tuple[int, int]:
        """The grid shape `(H, W)`."""
        return self.sample.shape
