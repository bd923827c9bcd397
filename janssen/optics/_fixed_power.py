"""`FixedPowerProbe`: a probe whose total power is held, so the object carries the overall scale."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float, Num

from .._custom_types import PairLike, ScalarLike
from .._validate import check_finite, check_positive, complex_array, optional_pair, real_array
from ._probe import AbstractProbe


class FixedPowerProbe(AbstractProbe):
    """A probe given by its modes, rescaled to a fixed total power: `fields = modes * sqrt(power / |modes|**2)`.

    Ptychography measures the product of object and probe: `c O` with `P / c` predicts
    the same data for any `c`. When both are refined by a gradient optimiser nothing
    holds `c`, and it drifts: Adam moves every leaf by about its step per iteration, so
    the probe's power can grow without bound while the object shrinks and its steps
    grow in proportion (measured with `simple_microscope_optim`, 300 Adam steps: the
    probe's power x119 to x270). Here the power is not a free parameter: `power` is an array
    leaf that is not refined unless asked for, the gradient along `modes`' own scale is
    zero, and the object takes the overall scale.

    `with_fields` (the PIE engines) stores the fields as the new modes; `fields()`
    returns them at `power`.

    **Arguments:**

    - `modes`: complex `(y, x)` or `(modes, y, x)`, not all zero.
    - `power`: the total power `sum |fields|**2` to hold (counts per frame for a probe
      in counts); default the power of `modes`.
    - `wavelength`: metres, > 0.
    - `dx`: sample-plane pitch in metres, scalar or `(x, y)`, > 0; or `None`: the pitch
      of the plane the probe is placed in (a microscope's sample).
    """

    modes: Complex[Array, "modes y x"]
    power: Float[Array, ""]
    wavelength: Float[Array, ""]
    dx: Float[Array, "2"] | None

    def __init__(
        self,
        modes: Num[ArrayLike, "*modes y x"],
        wavelength: ScalarLike,
        dx: PairLike | None,
        *,
        power: ScalarLike | None = None,
    ):
        modes = complex_array("modes", modes)
        self.modes = modes[None] if modes.ndim == 2 else modes
        own = jnp.sum(self.modes.real**2 + self.modes.imag**2)
        self.power = real_array("power", own if power is None else power, shape=())
        self.wavelength = real_array("wavelength", wavelength, shape=())
        self.dx = optional_pair("dx", dx)

    def __check_init__(self):
        if self.modes.ndim != 3:
            raise ValueError(f"`modes` must be (y, x) or (modes, y, x), got shape {self.modes.shape}")
        check_finite("modes", self.modes)
        check_positive("power", self.power)
        check_positive("wavelength", self.wavelength)
        if self.dx is not None:
            check_positive("dx", self.dx)

    def fields(self) -> Complex[Array, "modes y x"]:
        own = jnp.sum(self.modes.real**2 + self.modes.imag**2)
        scale = jnp.sqrt(self.power / jnp.maximum(own, jnp.finfo(own.dtype).tiny))
        return self.modes * scale.astype(self.modes.dtype)

    def with_fields(self, fields: Complex[Array, "modes y x"]) -> "FixedPowerProbe":
        return eqx.tree_at(lambda p: p.modes, self, fields)
