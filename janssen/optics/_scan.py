"""Scan geometry: where a probe-sized patch sits on the object, and how to cut it out.

A scan position `p = (x, y)` in metres places the probe's centre pixel `(H // 2, W // 2)`
on the object point `p`, where the object's own centre pixel `(Hs // 2, Ws // 2)` is
the origin. The patch's top-left corner is therefore, in object pixels,
`corner = (Ws // 2 - W // 2 + x / dx_x, Hs // 2 - H // 2 + y / dx_y)`.

The corner is split into an integer part (the nearest pixel) used to slice the object,
and a remainder in `[-0.5, 0.5]` pixels applied as a Fourier shift of the probe, which
keeps everything differentiable with respect to the position.

`jax.lax.dynamic_slice` clamps indices that run off the array; janssen never relies on
that. `positions_outside` finds such positions so that constructors can refuse them.

A *periodic* sample (`SampleFunction(..., periodic=True)`: a crystal, or a field defined
on a periodic grid) wraps around instead: its patches are cut with wrap-around, any
position is valid, and the sub-pixel remainder moves the sample, not the probe
(`take_window` / `put_window`): the sample is moved by a Fourier shift, which is the
exact shift of a periodic band-limited field, and the probe stays on its grid.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Inexact, Int

from ._fft import fourier_shift, shift_spectrum


def patch_corner(
    position: Float[Array, "2"],
    dx: Float[Array, "2"],
    object_shape: tuple[int, int],
    probe_shape: tuple[int, int],
) -> Float[Array, "2"]:
    """The patch's top-left corner `(x, y)` in (fractional) object pixels."""
    centre = jnp.array(
        [object_shape[1] // 2 - probe_shape[1] // 2, object_shape[0] // 2 - probe_shape[0] // 2],
        dtype=position.dtype,
    )
    return centre + position / dx


def split_corner(corner: Float[Array, "2"]) -> tuple[Int[Array, "2"], Float[Array, "2"]]:
    """Nearest whole-pixel corner `(x, y)` and the sub-pixel remainder in `[-0.5, 0.5]`."""
    whole = jnp.round(corner)
    return whole.astype(jnp.int32), corner - whole


def extract_patch(obj: Inexact[Array, "Y X"], corner: Int[Array, "2"], shape: tuple[int, int]) -> Inexact[Array, "y x"]:
    """The `shape` patch of `obj` whose top-left pixel is `corner = (x, y)`."""
    return jax.lax.dynamic_slice(obj, (corner[1], corner[0]), shape)


def add_to_patch(
    obj: Inexact[Array, "Y X"], corner: Int[Array, "2"], update: Inexact[Array, "y x"]
) -> Inexact[Array, "Y X"]:
    """`obj` with `update` added onto the patch whose top-left pixel is `corner = (x, y)`."""
    current = extract_patch(obj, corner, update.shape)
    return jax.lax.dynamic_update_slice(obj, current + update, (corner[1], corner[0]))


def _wrapped_patch(
    obj: Inexact[Array, "Y X"], corner: Int[Array, "2"], shape: tuple[int, int]
) -> Inexact[Array, "y x"]:
    return jnp.roll(obj, (-corner[1], -corner[0]), axis=(0, 1))[: shape[0], : shape[1]]


def _wrapped_embedding(
    update: Inexact[Array, "y x"], corner: Int[Array, "2"], shape: tuple[int, int]
) -> Inexact[Array, "Y X"]:
    padded = jnp.zeros(shape, update.dtype).at[: update.shape[0], : update.shape[1]].set(update)
    return jnp.roll(padded, (corner[1], corner[0]), axis=(0, 1))


def take_window(
    obj: Inexact[Array, "Y X"],
    corner: Int[Array, "2"],
    shift: Float[Array, "2"] | None,
    shape: tuple[int, int],
) -> Inexact[Array, "y x"]:
    """The `shape` window of `obj` at `corner` (top-left, `(x, y)` pixels).

    `shift=None`: a plain slice (`extract_patch`). Otherwise `obj` is periodic: it is
    moved by `-shift` pixels (a Fourier shift, exact for a periodic band-limited field)
    and the window is cut with wrap-around, so the window starts at `corner + shift`. A
    real `obj` (a weight map) is cut at the whole-pixel corner, with wrap-around.
    """
    if shift is None:
        return extract_patch(obj, corner, shape)
    if jnp.iscomplexobj(obj):
        obj = fourier_shift(obj, -shift)
    return _wrapped_patch(obj, corner, shape)


def put_window(
    obj: Inexact[Array, "Y X"],
    corner: Int[Array, "2"],
    shift: Float[Array, "2"] | None,
    update: Inexact[Array, "y x"],
) -> Inexact[Array, "Y X"]:
    """`obj` with `update` added on the window `take_window` cuts (the adjoint of taking it).

    For a periodic `obj` (a `shift`) the Fourier shift is unitary, so adding `update` to
    the window taken is adding this to `obj` exactly. A real `obj` (a weight map) takes
    the update at the whole-pixel corner, with wrap-around: a Fourier shift would not
    keep it real and non-negative.
    """
    if shift is None:
        return add_to_patch(obj, corner, update)
    embedded = _wrapped_embedding(update, corner, obj.shape)
    if jnp.iscomplexobj(obj):
        embedded = fourier_shift(embedded, shift)
    return obj + embedded


def shift_probe(fields: Complex[Array, "*modes y x"], subpixel: Float[Array, "2"]) -> Complex[Array, "*modes y x"]:
    """The probe moved by the sub-pixel remainder: `P(r - subpixel)`."""
    return fourier_shift(fields, subpixel)


def shift_probe_spectrum(
    spectrum: Complex[Array, "*modes y x"], subpixel: Float[Array, "2"]
) -> Complex[Array, "*modes y x"]:
    """`shift_probe` of the probe whose `fft2u` is `spectrum` (transformed once for every position)."""
    return shift_spectrum(spectrum, subpixel)


def positions_outside(
    positions: Float[Array, "npos 2"],
    dx: Float[Array, "2"],
    object_shape: tuple[int, int],
    probe_shape: tuple[int, int],
    periodic: bool = False,
) -> np.ndarray:
    """Indices of the positions whose patch does not lie wholly inside the object (host-side).

    None for a `periodic` object: it wraps around.
    """
    if periodic:
        return np.zeros(0, dtype=np.int64)
    corners = np.asarray(positions, dtype=np.float64) / np.asarray(dx, dtype=np.float64)
    corners += [object_shape[1] // 2 - probe_shape[1] // 2, object_shape[0] // 2 - probe_shape[0] // 2]
    whole = np.round(corners)
    limit = np.array([object_shape[1] - probe_shape[1], object_shape[0] - probe_shape[0]])
    bad = np.any((whole < 0) | (whole > limit), axis=1)
    return np.flatnonzero(bad)


def object_shape_for(
    positions: Float[Array, "npos 2"],
    dx: Float[Array, "2"],
    probe_shape: tuple[int, int],
    padding: int = 0,
) -> tuple[int, int]:
    """The smallest even `(H, W)` object grid, centred on the scan's mid-point, that holds every patch.

    Positions are taken relative to the midpoint of their bounding box; `padding` pixels are
    added on every side.
    """
    pos = np.asarray(positions, dtype=np.float64) / np.asarray(dx, dtype=np.float64)
    span = pos.max(axis=0) - pos.min(axis=0)
    width = int(np.ceil(span[0])) + probe_shape[1] + 2 * padding + 2
    height = int(np.ceil(span[1])) + probe_shape[0] + 2 * padding + 2
    return height + height % 2, width + width % 2
