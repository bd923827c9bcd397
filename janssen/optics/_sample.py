"""`SampleFunction`: the complex transmission of a thin object."""

import equinox as eqx
from jaxtyping import Array, ArrayLike, Complex, Float, Num

from .._custom_types import PairLike
from .._validate import check_finite, check_positive, complex_array, pair


class SampleFunction(eqx.Module):
    """A thin object's complex transmission `t(y, x)` on a regular grid.

    **Arguments:**

    - `sample`: complex array `(y, x)`.
    - `dx`: pixel pitch in metres, a scalar or an `(x, y)` pair, > 0.
    """

    sample: Complex[Array, "y x"]
    dx: Float[Array, "2"]

    def __init__(self, sample: Num[ArrayLike, "y x"], dx: PairLike):
        self.sample = complex_array("sample", sample, ndim=2)
        self.dx = pair("dx", dx)

    def __check_init__(self):
        check_positive("dx", self.dx)
        check_finite("sample", self.sample)

    @property
    def shape(self) -> tuple[int, int]:
        """The grid shape `(H, W)`."""
        return self.sample.shape
