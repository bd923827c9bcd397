"""`ScaledFraunhofer`: far-field propagation onto any output pitch, by a matrix Fourier transform."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._custom_types import PairLike, ScalarLike
from ..._validate import check_positive, pair
from .._fft import centred_coordinates
from .._wavefront import OpticalWavefront
from .base import (
    AbstractPropagator,
    broadcast_like,
    check_far_field_distance,
    check_shape,
    distance_array,
    moved,
    output_plane_phase,
)
from .fraunhofer import far_field_pitch

# Full float32 accumulation even on accelerators that default to reduced-precision matmuls.
_PRECISION = jax.lax.Precision.HIGHEST


def _dft_matrix(n_out: int, n_in: int, ratio: Float[Array, ""]) -> Complex[Array, "n_out n_in"]:
    """`exp(-2 pi i p j ratio)` for centred indices `p` (output) and `j` (input).

    `ratio = dx_in * dx_out / (wavelength * distance)`; with `ratio = 1 / n` this is the
    centred DFT matrix.
    """
    p = centred_coordinates(n_out, 1.0)
    j = centred_coordinates(n_in, 1.0)
    # The index product is an exact integer, so the phase keeps the precision of `ratio`.
    return jnp.exp(-2j * jnp.pi * ratio * (p[:, None] * j[None, :]))


class ScaledFraunhofer(AbstractPropagator):
    """Far-field (Fraunhofer) propagation onto a chosen output grid, such as a camera's.

    Evaluates the same Fraunhofer integral as `Fraunhofer`,
    `U(x', y') = 1 / (wavelength z) * integral u(x, y) exp(-2 pi i (x x' + y y') / (wavelength z)) dx dy`,
    directly at the output pixels `x' = (p - P // 2) * output_dx[0]`,
    `y' = (q - Q // 2) * output_dx[1]` (zero frequency on pixel `(Q // 2, P // 2)`). The
    sum is two small matrix products (a matrix Fourier transform: the DFT evaluated
    at the requested frequencies), so it is exact for any pitch, with no
    interpolation, and differentiable with respect to `output_dx` and `distance`.
    When `output_dx` equals `Fraunhofer`'s pitch `wavelength z / (N dx)` and the shapes
    agree, the two propagators give the same field.

    **Power.** The output power `sum |U|**2 output_dx[0] output_dx[1]` equals the input
    power when the output grid covers the field's spectrum (the far field is
    negligible outside the output window) and samples it finely enough
    (`output_dx <= wavelength z / (N dx)` per axis, or more generally the field's
    support fits inside `wavelength z / output_dx`). Otherwise power is lost to the
    pixels outside the window, or the sampled spectrum aliases.

    The constant phase `exp(i k z) / i` is dropped; the output-plane curvature is
    included only with `quadratic_phase=True` (see `Fraunhofer`).

    **Arguments:**

    - `distance`: metres, finite and > 0.
    - `output_dx`: output pixel pitch in metres, a scalar or an `(x, y)` pair, > 0.
    - `output_shape`: static `(H, W)` of the output grid; `None` (default) keeps the
      input's shape.
    - `quadratic_phase`: static; whether to include the output-plane curvature
      (default `False`).
    """

    distance: Float[Array, ""]
    output_dx: Float[Array, "2"]
    output_shape: tuple[int, int] | None = eqx.field(static=True)
    quadratic_phase: bool = eqx.field(static=True)

    def __init__(
        self,
        distance: ScalarLike,
        output_dx: PairLike,
        output_shape: tuple[int, int] | None = None,
        *,
        quadratic_phase: bool = False,
    ):
        self.distance = distance_array(distance)
        self.output_dx = pair("output_dx", output_dx)
        self.output_shape = check_shape("output_shape", output_shape)
        self.quadratic_phase = bool(quadratic_phase)

    def __check_init__(self):
        check_far_field_distance(self.distance)
        check_positive("output_dx", self.output_dx)

    def _matrices(
        self, wavefront: OpticalWavefront, in_shape: tuple[int, int], out_shape: tuple[int, int], in_dx
    ) -> tuple[Complex[Array, "q k"], Complex[Array, "p j"]]:
        lz = wavefront.wavelength * self.distance
        ratio = in_dx * self.output_dx / lz
        dtype = wavefront.field.dtype
        my = _dft_matrix(out_shape[0], in_shape[0], ratio[1]).astype(dtype)
        mx = _dft_matrix(out_shape[1], in_shape[1], ratio[0]).astype(dtype)
        return my, mx

    far_field = True
    scale_fields = ("distance", "output_dx")

    def output_grid(self, wavelength, dx, shape):
        del wavelength, dx
        return self.output_dx, self.output_shape or shape

    def adjoint_onto(self, wavefront, dx, shape):
        return self.adjoint(wavefront, input_dx=dx, input_shape=shape)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        out_shape = self.output_shape or wavefront.shape
        my, mx = self._matrices(wavefront, wavefront.shape, out_shape, wavefront.dx)
        u = wavefront.field
        rows = jnp.einsum("...kj,pj->...kp", u, mx, precision=_PRECISION)
        field = jnp.einsum("qk,...kp->...qp", my, rows, precision=_PRECISION)
        scale = wavefront.dx[0] * wavefront.dx[1] / (wavefront.wavelength * self.distance)
        field = field * scale.astype(field.dtype)
        if self.quadratic_phase:
            phase = output_plane_phase(out_shape, self.output_dx, wavefront.wavelength, self.distance)
            field = field * broadcast_like(field, phase)
        return moved(wavefront, field, self.output_dx, wavefront.z_position + self.distance)

    def adjoint(
        self,
        wavefront: OpticalWavefront,
        *,
        input_dx: PairLike | None = None,
        input_shape: tuple[int, int] | None = None,
    ) -> OpticalWavefront:
        """The Hermitian adjoint: the conjugate-transpose matrix product.

        The forward map depends on the input grid, which the output wavefront does
        not record, so it can be given here.

        **Arguments:**

        - `wavefront`: a wavefront on the output grid (pitch `output_dx`).
        - `input_dx`: the input pitch `(x, y)` in metres; default
          `wavelength z / (N * output_dx)`, the grid on which this propagator equals
          `Fraunhofer`.
        - `input_shape`: static `(H, W)` of the input grid; default the wavefront's shape.

        **Returns:**

        `u(x, y) = 1 / (wavelength z) * sum U(x', y') exp(+2 pi i (x x' + y y') / (wavelength z)) dx' dy'`
        on the input grid, with `z_position` moved back by `distance`.
        """
        in_shape = check_shape("input_shape", input_shape) or wavefront.shape
        if input_dx is None:
            in_dx = far_field_pitch(wavefront.wavelength, self.distance, in_shape, self.output_dx)
        else:
            in_dx = pair("input_dx", input_dx)
            check_positive("input_dx", in_dx)
        field = wavefront.field
        if self.quadratic_phase:
            phase = output_plane_phase(wavefront.shape, self.output_dx, wavefront.wavelength, self.distance)
            field = field * broadcast_like(field, jnp.conj(phase))
        my, mx = self._matrices(wavefront, in_shape, wavefront.shape, in_dx)
        cols = jnp.einsum("...qp,pj->...qj", field, jnp.conj(mx), precision=_PRECISION)
        field = jnp.einsum("qk,...qj->...kj", jnp.conj(my), cols, precision=_PRECISION)
        scale = self.output_dx[0] * self.output_dx[1] / (wavefront.wavelength * self.distance)
        field = field * scale.astype(field.dtype)
        return moved(wavefront, field, in_dx, wavefront.z_position - self.distance)
