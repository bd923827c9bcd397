"""`AbstractElement`: a thin optical element that multiplies the wavefront pointwise."""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from .._fft import centred_coordinates
from .._wavefront import OpticalWavefront


class AbstractElement(eqx.Module):
    """A thin element: the field is multiplied pixel by pixel by a complex transmission.

    Such an element is linear. It may also relabel the grid pitch by a factor `m`
    (`magnification`, 1 except for `OpticalZoom`); the field values stay on the same
    pixels.

    As for the propagators (see `AbstractPropagator`), the adjoint is taken in the
    *physical* inner product of each plane, `<u, v> = sum(conj(u) * v) * dx_x * dx_y`:
    it is the multiplication by `m**2 * conj(t)` onto the grid of pitch `dx / m`. For
    every element that keeps the pitch (`m = 1`) this is also the plain array adjoint,
    the multiplication by `conj(t)`.

    Every physical parameter of an element is an array field, so any element can be
    refined by a gradient-based engine.
    """

    #: Short `trainable=` names of this element's parameters, mapped to field paths (a
    #: microscope that holds the element in an `OpticalTrain` offers them).
    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {}
    #: Fields that set the scale of the pattern on the camera (a magnification), which a
    #: uniform dilation of a refined scan trades off against (none for most elements).
    scale_fields: ClassVar[tuple[str, ...]] = ()
    #: Whether the output grid always has the input's pitch (a microscope then skips a
    #: counts factor of 1). `False` by default, which is always correct.
    keeps_pitch: ClassVar[bool] = False

    @abc.abstractmethod
    def transmission(self, wavefront: OpticalWavefront) -> Complex[Array, "y x"]:
        """The complex transmission on the grid of `wavefront`, shape `(H, W)`."""

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The wavefront just after the element: times the transmission, pitch times `magnification()`."""
        return apply(self, wavefront)

    def magnification(self) -> Float[Array, ""]:
        """The factor by which the element multiplies the grid pitch (1, unless overridden)."""
        return jnp.ones(())

    def output_grid(
        self, wavelength: Float[Array, ""], dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> tuple[Float[Array, "2"], tuple[int, int]]:
        """The pitch and shape of the grid after the element, for an input grid `(dx, shape)`."""
        del wavelength
        return dx * self.magnification(), shape

    def adjoint_onto(
        self, wavefront: OpticalWavefront, dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> OpticalWavefront:
        """`adjoint`, told the input grid `(dx, shape)` (an element's adjoint does not need it)."""
        del dx, shape
        return self.adjoint(wavefront)

    def adjoint(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The Hermitian adjoint in the physical inner product (see the class docstring).

        The transmission is evaluated on the grid of `wavefront`; an element that
        changes the pitch has a uniform transmission, so the grid it is evaluated on
        does not matter.

        **Arguments:**

        - `wavefront`: a wavefront in the element's output plane.

        **Returns:**

        The wavefront in the input plane: `m**2 * conj(t) * field` with pitch `dx / m`.
        """
        m = self.magnification()
        t = jnp.conj(self.transmission(wavefront)) * (m**2).astype(wavefront.field.dtype)
        moved = wavefront.replace_field(multiply(wavefront.field, t))
        return eqx.tree_at(lambda w: w.dx, moved, wavefront.dx / m)


def multiply(field: Complex[Array, "*batch y x"], transmission: Complex[Array, "y x"]) -> Complex[Array, "*batch y x"]:
    """`field * transmission`, broadcasting over the field's leading (mode) axes."""
    # Explicit reshape: janssen runs under `jax_numpy_rank_promotion="raise"` in its tests.
    return field * transmission.reshape((1,) * (field.ndim - 2) + transmission.shape)


def apply(element: AbstractElement, wavefront: OpticalWavefront) -> OpticalWavefront:
    """The forward map shared by every thin element: multiply, then rescale the pitch."""
    moved = wavefront.replace_field(multiply(wavefront.field, element.transmission(wavefront)))
    return eqx.tree_at(lambda w: w.dx, moved, wavefront.dx * element.magnification())


def grid_coordinates(
    wavefront: OpticalWavefront, center: Float[Array, "2"] | None = None
) -> tuple[Float[Array, "y x"], Float[Array, "y x"]]:
    """Coordinates `(x, y)` in metres of every pixel, relative to `center` (default: the grid centre).

    Pixel `(i, j)` sits at `x = (j - W // 2) * dx_x`, `y = (i - H // 2) * dx_y`.
    """
    h, w = wavefront.shape
    x = centred_coordinates(w, wavefront.dx[0])
    y = centred_coordinates(h, wavefront.dx[1])
    if center is not None:
        x = x - center[0]
        y = y - center[1]
    return jnp.broadcast_to(x[None, :], (h, w)), jnp.broadcast_to(y[:, None], (h, w))


def as_complex(x: Float[Array, "*shape"]) -> Complex[Array, "*shape"]:
    """A real array as complex of matching precision (float32 -> complex64)."""
    return jax.lax.complex(x, jnp.zeros_like(x))
