"""Probes: the illumination incident on the sample."""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float, Num

from .._custom_types import PairLike, ScalarLike
from .._validate import check_finite, check_positive, complex_array, optional_pair, real_array


class AbstractProbe(eqx.Module):
    """An illumination described by one or more mutually incoherent modes.

    Subclasses say how their parameters produce the mode fields; engines see only
    `fields()` (amplitudes with the mode weights folded in, so that the intensity is
    `sum_m |fields()[m]|**2`) and rebuild the probe with `with_fields`.

    `dx` is the pixel pitch of the probe's grid, or `None` for a probe that takes the
    pitch of the plane it is placed in. A microscope stores the sample-plane pitch once,
    on its sample (`microscope.sample.dx`): its constructors check that a given probe's
    pitch agrees and keep the probe without one (`without_pitch`).
    """

    wavelength: eqx.AbstractVar[Float[Array, ""]]
    dx: eqx.AbstractVar[Float[Array, "2"] | None]

    @abc.abstractmethod
    def fields(self) -> Complex[Array, "modes y x"]:
        """The mode fields, weights folded in: intensity is `sum |fields|**2` over modes."""

    @abc.abstractmethod
    def with_fields(self, fields: Complex[Array, "modes y x"]) -> "AbstractProbe":
        """A probe of the same kind whose `fields()` are (as near as the kind allows) `fields`."""

    def without_pitch(self) -> "AbstractProbe":
        """This probe with `dx = None`: it takes the pitch of the plane it is placed in."""
        if self.dx is None:
            return self
        return eqx.tree_at(lambda p: p.dx, self, None)


class Probe(AbstractProbe):
    """A probe given directly by its mode fields.

    A coherent probe has one mode. With several, the modes are incoherent and each
    carries its own power (no separate weights; see `MixedStateProbe` for that).

    **Arguments:**

    - `modes`: complex array `(y, x)` or `(modes, y, x)`.
    - `wavelength`: metres, > 0.
    - `dx`: pixel pitch in the sample plane in metres, scalar or `(x, y)`, > 0; or
      `None`: the pitch of the plane the probe is placed in (a microscope's sample).
    """

    modes: Complex[Array, "modes y x"]
    wavelength: Float[Array, ""]
    dx: Float[Array, "2"] | None

    def __init__(self, modes: Num[ArrayLike, "*modes y x"], wavelength: ScalarLike, dx: PairLike | None):
        modes = complex_array("modes", modes)
        if modes.ndim == 2:
            modes = modes[None]
        self.modes = modes
        self.wavelength = real_array("wavelength", wavelength, shape=())
        self.dx = optional_pair("dx", dx)

    def __check_init__(self):
        if self.modes.ndim != 3:
            raise ValueError(f"`modes` must be (y, x) or (modes, y, x), got shape {self.modes.shape}")
        check_positive("wavelength", self.wavelength)
        if self.dx is not None:
            check_positive("dx", self.dx)
        check_finite("modes", self.modes)

    @property
    def shape(self) -> tuple[int, int]:
        """The grid shape `(H, W)`."""
        return self.modes.shape[-2:]

    @property
    def num_modes(self) -> int:
        """Number of incoherent modes."""
        return self.modes.shape[0]

    def fields(self) -> Complex[Array, "modes y x"]:
        return self.modes

    def with_fields(self, fields: Complex[Array, "modes y x"]) -> "Probe":
        return eqx.tree_at(lambda p: p.modes, self, fields)

    @property
    def intensity(self) -> Float[Array, "y x"]:
        """Total intensity summed over modes."""
        return jnp.sum(jnp.abs(self.modes) ** 2, axis=0)
