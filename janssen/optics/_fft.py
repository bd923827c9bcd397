"""The one place where janssen calls an FFT.

Conventions (see `docs/conventions.md`):

- Transforms act on the last two axes `(y, x)`.
- *Centred*: the zero frequency sits at pixel `(H // 2, W // 2)` in both planes
  (`fftshift` after the transform, `ifftshift` before it).
- *Unitary* (`norm="ortho"`): the total energy `sum |u|**2` is the same in both planes,
  and the inverse transform is the adjoint of the forward one.
- Sign: the forward transform uses `exp(-2 pi i k.r)`.
"""

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

_AXES = (-2, -1)


def _modulated(field: Array, negate_even: bool) -> Array:
    """`field` times the (+1, -1) checkerboard `(-1)**(y + x)`, negated as a whole if `negate_even`.

    A sign flip (a select, no arithmetic), which XLA fuses into the neighbouring operations.
    """
    h, w = field.shape[-2:]
    odd = (jnp.arange(h)[:, None] + jnp.arange(w)[None, :]) % 2 == 1
    return jnp.where(odd != negate_even, -field, field)


def _centred(transform, field):
    """`fftshift(transform(ifftshift(field)))` over the last two axes.

    For even sizes, shifting by half the grid in one plane is a (+1, -1) modulation in the
    other: per axis of even length `N`, `fftshift(F(ifftshift(x)))[k] = (-1)**(k + N/2)
    F((-1)**n x)[k]`, for the forward and the inverse transform alike. The modulations
    cost nothing where the shifts are a pass over the data each (and so are their
    transposes under autodiff): the same numbers to rounding.
    """
    h, w = field.shape[-2:]
    if h % 2 or w % 2:
        shifted = jnp.fft.ifftshift(field, axes=_AXES)
        return jnp.fft.fftshift(transform(shifted, axes=_AXES, norm="ortho"), axes=_AXES)
    negate = (h // 2 + w // 2) % 2 == 1
    return _modulated(transform(_modulated(field, False), axes=_AXES, norm="ortho"), negate)


def fft2c(field: Complex[Array, "*batch y x"]) -> Complex[Array, "*batch y x"]:
    """Centred, unitary 2-D forward FFT over the last two axes."""
    return _centred(jnp.fft.fft2, field)


def ifft2c(field: Complex[Array, "*batch y x"]) -> Complex[Array, "*batch y x"]:
    """Centred, unitary 2-D inverse FFT over the last two axes (adjoint of `fft2c`)."""
    return _centred(jnp.fft.ifft2, field)


def fft2u(field: Complex[Array, "*batch y x"]) -> Complex[Array, "*batch y x"]:
    """Uncentred unitary forward FFT (zero frequency at pixel `[0, 0]`), for hot loops."""
    return jnp.fft.fft2(field, axes=_AXES, norm="ortho")


def ifft2u(field: Complex[Array, "*batch y x"]) -> Complex[Array, "*batch y x"]:
    """Uncentred unitary inverse FFT, the adjoint of `fft2u`."""
    return jnp.fft.ifft2(field, axes=_AXES, norm="ortho")


def centred_coordinates(n: int, spacing) -> Float[Array, " n"]:
    """Sample coordinates `(i - n // 2) * spacing`, zero at the centre pixel."""
    return (jnp.arange(n) - n // 2) * spacing


def centred_frequencies(n: int, spacing) -> Float[Array, " n"]:
    """Frequencies of a centred length-`n` transform with sample spacing `spacing` (1/m)."""
    return (jnp.arange(n) - n // 2) / (n * spacing)


def frequency_grid(shape: tuple[int, int], dx: Float[Array, "2"]) -> tuple[Float[Array, "y x"], Float[Array, "y x"]]:
    """Centred frequency grids `(fx, fy)` in 1/m for a `(H, W)` grid of pitch `dx = (dx_x, dx_y)`."""
    fy = centred_frequencies(shape[0], dx[1])
    fx = centred_frequencies(shape[1], dx[0])
    return jnp.broadcast_to(fx[None, :], shape), jnp.broadcast_to(fy[:, None], shape)


def shift_ramp(shape: tuple[int, int], shift_px: Float[Array, "2"]) -> Complex[Array, "y x"]:
    """Uncentred Fourier-domain ramp that shifts a field by `shift_px = (sx, sy)` pixels.

    `ifft2u(fft2u(u) * shift_ramp(u.shape, s))` is `u(r - s)`, periodic in the grid.
    """
    ky = jnp.fft.fftfreq(shape[0])
    kx = jnp.fft.fftfreq(shape[1])
    phase = kx[None, :] * shift_px[0] + ky[:, None] * shift_px[1]
    return jnp.exp(-2j * jnp.pi * phase.astype(jnp.result_type(float)))


def fourier_shift(field: Complex[Array, "*batch y x"], shift_px: Float[Array, "2"]) -> Complex[Array, "*batch y x"]:
    """Shift a field by a (sub-)pixel amount `(sx, sy)` with a Fourier phase ramp (periodic).

    Differentiable with respect to `shift_px`; exact for band-limited periodic fields.
    """
    return shift_spectrum(fft2u(field), shift_px)


def shift_spectrum(spectrum: Complex[Array, "*batch y x"], shift_px: Float[Array, "2"]) -> Complex[Array, "*batch y x"]:
    """`fourier_shift` of the field whose `fft2u` is `spectrum`: `ifft2u(spectrum * ramp)`.

    For one field moved to many places (a probe at every scan position), transform it
    once and call this per place: one FFT per place instead of two.
    """
    ramp = shift_ramp(spectrum.shape[-2:], shift_px)
    ramp = ramp.reshape((1,) * (spectrum.ndim - 2) + ramp.shape)
    return ifft2u(spectrum * ramp)


def uncentred_frequency_grid(
    shape: tuple[int, int], dx: Float[Array, "2"]
) -> tuple[Float[Array, "y x"], Float[Array, "y x"]]:
    """Frequency grids `(fx, fy)` in 1/m in the uncentred order of `fft2u` (zero at `[0, 0]`).

    For transfer functions applied between `fft2u` and `ifft2u`, which skips the two
    shifts a centred transform costs.
    """
    fy = jnp.fft.fftfreq(shape[0]) / dx[1]
    fx = jnp.fft.fftfreq(shape[1]) / dx[0]
    return jnp.broadcast_to(fx[None, :], shape), jnp.broadcast_to(fy[:, None], shape)
