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
    return float(best_alignment(truth, recon, illum, max_shift)[3])


#: DESIGN.md's object error counts the pixels lit by more than this fraction of the
#: illumination's 99th percentile.
WELL_LIT = 0.5


def best_alignment(
    truth: np.ndarray, result: np.ndarray, illumination: np.ndarray, max_shift: int
) -> tuple[int, int, np.number | float, float]:
    """`(sy, sx, gamma, error)`: the integer shift of `result` (as `np.roll`) and global complex
    scale that minimise `||T - gamma R|| / ||T||` over the well-lit pixels, and that error
    (`inf` where no shift gives a finite one; `gamma` a NumPy scalar, 1.0 then). One definition for `object_error` and
    `janssen.plots.align_to_truth`; each shift reads only the well-lit pixels, without
    rolling the whole result.
    """
    rows, cols = np.nonzero(illumination > WELL_LIT * np.percentile(illumination, 99))
    target = truth[rows, cols]
    height, width = result.shape
    best, chosen = np.inf, (0, 0, 1.0)
    for sy in range(-max_shift, max_shift + 1):
        for sx in range(-max_shift, max_shift + 1):
            inside = result[(rows - sy) % height, (cols - sx) % width]  # those of np.roll(result, (sy, sx))
            gamma = np.vdot(inside, target) / max(np.vdot(inside, inside).real, np.finfo(np.float64).tiny)
            error = np.linalg.norm(target - gamma * inside) / np.linalg.norm(target)
            if error < best:
                best, chosen = error, (sy, sx, gamma)
    return (*chosen, float(best))
