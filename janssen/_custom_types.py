"""Type aliases shared across janssen (jaxtyping annotations)."""

from typing import TypeAlias

import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Int

#: A real scalar given as a Python number or a 0-d array.
ScalarLike: TypeAlias = float | int | np.floating | np.integer | Float[ArrayLike, ""]
#: A 2-vector in janssen's (x, y) order, or a scalar meaning the same value in both.
PairLike: TypeAlias = ScalarLike | Float[ArrayLike, "2"] | tuple[float | int, float | int]

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Complex",
    "Float",
    "Int",
    "PairLike",
    "ScalarLike",
]
