"""`AbstractPropagator`: a linear map carrying a wavefront from one plane to another."""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ..._validate import check_finite, check_positive, real_array
from .._fft import centred_coordinates
from .._wavefront import OpticalWavefront


class AbstractPropagator(eqx.Module):
    """Free-space propagation of an `OpticalWavefront` over `distance` metres.

    A propagator is linear in the field. Its adjoint is taken with respect to the
    *physical* inner product of each plane,
    `<u, v> = sum(conj(u) * v) * dx_x * dx_y`, whose norm is the power
    (`OpticalWavefront.power`). In that inner product the power-conserving
    propagators (`Fraunhofer`, `Fresnel`, and `AngularSpectrum` on a grid without
    evanescent waves) are unitary, so their adjoint is their inverse. On a
    same-grid propagator this is also the plain array adjoint; where the pitch
    changes, the plain array adjoint is `adjoint` times `(dx_out_x dx_out_y) /
    (dx_in_x dx_in_y)`.

    Every propagator acts on the last two axes `(y, x)` and carries any leading
    (mode, batch) axes along. The constant phase `exp(i k z)` shared by every
    plane wave is left out: no intensity sees it, and keeping it would make the
    gradient with respect to `distance` oscillate on the scale of the wavelength.
    """

    distance: eqx.AbstractVar[Float[Array, ""]]

    #: Whether the output plane is the far field (a Fraunhofer transform).
    far_field: ClassVar[bool] = False
    #: Short `trainable=` names of this propagator's parameters, mapped to field paths.
    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {"distance": "distance"}
    #: Fields that set the scale of the pattern on the camera against the scan.
    scale_fields: ClassVar[tuple[str, ...]] = ("distance",)
    #: Whether the output grid always has the input's pitch and shape (same-grid propagators).
    keeps_pitch: ClassVar[bool] = False

    def output_grid(
        self, wavelength: Float[Array, ""], dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> tuple[Float[Array, "2"], tuple[int, int]]:
        """The pitch and shape of the output grid for an input grid `(dx, shape)` (default: the same)."""
        del wavelength
        return dx, shape

    def adjoint_onto(
        self, wavefront: OpticalWavefront, dx: Float[Array, "2"], shape: tuple[int, int]
    ) -> OpticalWavefront:
        """`adjoint`, told the input grid `(dx, shape)` (needed where the output does not determine it)."""
        del dx, shape
        return self.adjoint(wavefront)

    @abc.abstractmethod
    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The wavefront `distance` further along the optical axis.

        **Arguments:**

        - `wavefront`: the wavefront in the input plane.

        **Returns:**

        The wavefront in the output plane, with `z_position` advanced by `distance`.
        """

    @abc.abstractmethod
    def adjoint(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        """The Hermitian adjoint of the forward map (physical inner product, see above).

        **Arguments:**

        - `wavefront`: a wavefront in the output plane.

        **Returns:**

        A wavefront in the input plane, with `z_position` moved back by `distance`.
        """


def distance_array(distance) -> Float[Array, ""]:
    """`distance` as a 0-d floating array (argument name in any error)."""
    return real_array("distance", distance, shape=())


def check_far_field_distance(distance: Float[Array, ""]) -> None:
    """Far-field propagators need a finite, strictly positive distance."""
    check_positive("distance", distance)


def check_near_field_distance(distance: Float[Array, ""]) -> None:
    """Near-field propagators take any finite distance (negative: back-propagation)."""
    check_finite("distance", distance)


def check_shape(name: str, shape) -> tuple[int, int] | None:
    """A static `(H, W)` of positive Python ints, or `None`."""
    if shape is None:
        return None
    arr = np.asarray(shape)
    if arr.shape == (2,) and np.issubdtype(arr.dtype, np.integer) and np.all(arr > 0):
        return (int(arr[0]), int(arr[1]))
    raise ValueError(f"`{name}` must be a pair of positive integers (H, W), got {shape!r}")


def moved(
    wavefront: OpticalWavefront,
    field: Complex[Array, "*batch y x"],
    dx: Float[Array, "2"],
    z_position: Float[Array, ""],
) -> OpticalWavefront:
    """`wavefront` with a new field, pitch and position (no re-validation: stays jit-cheap)."""
    return eqx.tree_at(lambda w: (w.field, w.dx, w.z_position), wavefront, (field, dx, z_position))


def broadcast_like(field: Complex[Array, "*batch y x"], factor: Complex[Array, "y x"]) -> Complex[Array, "*#batch y x"]:
    """`factor` reshaped to multiply `field` over its leading axes.

    The reshape is explicit because janssen's tests run with rank promotion off.
    """
    return factor.reshape((1,) * (field.ndim - 2) + factor.shape)


def output_plane_phase(
    shape: tuple[int, int], dx: Float[Array, "2"], wavelength: Float[Array, ""], distance: Float[Array, ""]
) -> Complex[Array, "y x"]:
    """The far-field curvature `exp(i pi (x**2 + y**2) / (wavelength * distance))` on a centred grid."""
    x = centred_coordinates(shape[1], dx[0])
    y = centred_coordinates(shape[0], dx[1])
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    return jnp.exp(1j * jnp.pi * r2 / (wavelength * distance))
