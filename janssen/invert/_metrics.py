"""Accuracy measures of a reconstruction against a known truth (DESIGN.md's definitions)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Num

from ..optics._scan import put_window
from ..scopes._base import AbstractMicroscope


@eqx.filter_jit
def _illumination(microscope: AbstractMicroscope) -> Float[Array, "Y X"]:
    intensity = jnp.sum(jnp.abs(microscope.probe.fields()) ** 2, axis=0)
    corners, shifts = microscope.windows()

    def body(i, acc):
        return put_window(acc, corners[i], None if shifts is None else shifts[i], intensity)

    start = jnp.zeros(microscope.sample.shape, intensity.dtype)
    return jax.lax.fori_loop(0, corners.shape[0], body, start)


def illumination_map(microscope: AbstractMicroscope) -> Float[Array, "Y X"]:
    """The probe intensity summed over all scan positions, on the object's grid.

    Each position adds the probe's total intensity (over modes) on its whole-pixel
    window (the sub-pixel remainder is ignored: this is a weight map, not a model).

    **Arguments:**

    - `microscope`: any microscope.

    **Returns:**

    `(Y, X)` summed intensity.
    """
    return _illumination(microscope)


def object_error(
    true_object: Num[ArrayLike, "Y X"],
    reconstruction: Num[ArrayLike, "Y X"],
    illumination: Float[ArrayLike, "Y X"],
    *,
    max_shift: int = 2,
) -> float:
    """The relative object error of DESIGN.md, in `[0, 1]` for sensible reconstructions.

    The reconstruction `R` is aligned to the truth `T` by the best integer shift (up to
    `max_shift` pixels each way), its global complex scale `gamma = <R, T> / <R, R>` is
    removed (ptychography cannot fix it), and the error is `||T - gamma R|| / ||T||`
    over the well-illuminated pixels: those where `illumination` exceeds half of its
    99th percentile.

    **Arguments:**

    - `true_object`, `reconstruction`: `(Y, X)` complex objects on the same grid.
    - `illumination`: `(Y, X)` weight map, e.g. `illumination_map(microscope)`.
    - `max_shift`: largest integer shift tried, in pixels (>= 0).

    **Returns:**

    The error as a Python float.
    """
    truth = np.asarray(true_object)
    recon = np.asarray(reconstruction)
    illum = np.asarray(illumination)
    if not (truth.shape == recon.shape == illum.shape):
        raise ValueError(
            f"`true_object`, `reconstruction` and `illumination` must have one shape, got "
            f"{truth.shape}, {recon.shape} and {illum.shape}"
        )
    if max_shift < 0:
        raise ValueError(f"`max_shift` must be >= 0, got {max_shift}")
    mask = illum > 0.5 * np.percentile(illum, 99)
    target = truth[mask]
    best = np.inf
    for sy in range(-max_shift, max_shift + 1):
        for sx in range(-max_shift, max_shift + 1):
            shifted = np.roll(recon, (sy, sx), (0, 1))[mask]
            gamma = np.vdot(shifted, target) / max(np.vdot(shifted, shifted).real, np.finfo(np.float64).tiny)
            best = min(best, np.linalg.norm(target - gamma * shifted) / np.linalg.norm(target))
    return float(best)
