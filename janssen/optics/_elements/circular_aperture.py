"""`CircularAperture`: a round hole, with an optional differentiable soft edge."""

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._custom_types import PairLike, ScalarLike
from ..._validate import check_finite, check_positive, pair, real_array
from .._wavefront import OpticalWavefront
from .base import AbstractElement, apply, as_complex, grid_coordinates


class CircularAperture(AbstractElement):
    """A circular aperture of a given diameter, centred anywhere on the grid.

    With `edge_width=None` the edge is hard: the transmission is 1 where
    `r <= diameter / 2` and 0 elsewhere. A hard edge is piecewise constant, so its
    gradient with respect to `diameter` and `center` is **zero**: to refine either,
    give the aperture a soft edge.

    With `edge_width = w` the transmission is the sigmoid
    `t(r) = 1 / (1 + exp(-2 (R**2 - r**2) / (R w)))`, `R = diameter / 2`. Near the rim
    `(R**2 - r**2) / R ~ 2 (R - r)`, so `t` is 0.5 at the nominal radius and falls from
    0.88 to 0.12 across a band of width `w` centred on it (exactly so as `w / R -> 0`).
    Written in `r**2` rather than `r`, it is smooth everywhere, the centre included:
    its gradients with respect to `diameter`, `center` and `w` are finite, and its
    spectrum decays fast, which keeps sub-pixel shifts of the aperture accurate.
    Choosing between the hard and the soft edge is a static choice (the hard aperture
    has no `edge_width` leaf at all).

    Coordinates: pixel `(i, j)` of an `(H, W)` grid of pitch `(dx_x, dx_y)` sits at
    `x = (j - W // 2) dx_x`, `y = (i - H // 2) dx_y`.

    **Arguments:**

    - `diameter`: metres, > 0.
    - `center`: `(x, y)` of the aperture's centre in metres (default the grid centre).
    - `edge_width`: width of the soft edge in metres, > 0, or `None` for a hard edge.
    """

    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {
        "aperture": ("diameter", "center"),
        "aperture_diameter": "diameter",
        "aperture_center": "center",
    }

    diameter: Float[Array, ""]
    center: Float[Array, "2"]
    edge_width: Float[Array, ""] | None

    def __init__(
        self,
        diameter: ScalarLike,
        center: PairLike = 0.0,
        edge_width: ScalarLike | None = None,
    ):
        self.diameter = real_array("diameter", diameter, shape=())
        self.center = pair("center", center)
        self.edge_width = None if edge_width is None else real_array("edge_width", edge_width, shape=())

    def __check_init__(self):
        check_positive("diameter", self.diameter)
        check_finite("center", self.center)
        if self.edge_width is not None:
            check_positive("edge_width", self.edge_width)

    def transmission(self, wavefront: OpticalWavefront) -> Complex[Array, "y x"]:
        x, y = grid_coordinates(wavefront, self.center)
        radius = self.diameter / 2
        if self.edge_width is None:
            inside = (x**2 + y**2) <= radius**2
            return as_complex(inside.astype(radius.dtype))
        return as_complex(jax.nn.sigmoid(2 * (radius**2 - x**2 - y**2) / (radius * self.edge_width)))

    def magnification(self) -> Float[Array, ""]:
        return jnp.ones((), self.diameter.dtype)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return apply(self, wavefront)
