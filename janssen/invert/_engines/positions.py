"""`PositionLM`: each scan position refined by its own 2 x 2 Levenberg-Marquardt step.

With the object and the probe held, frame `j` depends on position `j` alone, so the
Gauss-Newton normal matrix of the positions is block diagonal with one 2 x 2 block per
position. Solving the blocks directly (instead of running conjugate gradients through the
whole model, as `GaussNewton` must when other leaves are refined with them) costs two
Jacobian products and one trial prediction per iteration, and lets every position keep
its own damping: a position that is far off, where the linear model is poor, takes short
damped steps while its neighbours converge.

This is the position-correction half of an alternating scheme (refine object and probe
with a PIE engine, then the positions against them, and repeat), the structure of
position-correcting PIE variants such as Zhang et al., "Translation position
determination in ptychographic coherent diffraction imaging", Opt. Express 21, 13592
(2013), here with a Newton step on the amplitude residual instead of a search.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._residual import AmplitudeResidual
from .._trainable import _expand, selected_paths
from .base import AbstractFixedLengthEngine

_MIN_DAMPING, _MAX_DAMPING = 1e-8, 1e8
_RAISE, _LOWER = 10.0, 1.0 / 3.0


class PositionLMState(eqx.Module):
    """State of `PositionLM`: the relative damping of each position, `(npos,)`."""

    damping: Float[Array, " npos"]


class PositionLM(AbstractFixedLengthEngine[PositionLMState]):
    """Per-position Levenberg-Marquardt refinement of the scan positions.

    Refines `positions` only (`trainable="positions"`); the object, the probe and the rest
    of the microscope are held. Each iteration linearises the amplitude residuals
    `r_j = valid * (sqrt(I_j + eps) - sqrt(I_measured_j))` of every frame in its own
    position, and solves for each position `j` the 2 x 2 system
    `(A_j + λ_j diag(A_j)) δ_j = -g_j`, with `A_j = J_j^T J_j` and `g_j = J_j^T r_j` (two
    Jacobian products give every block at once). A step longer than `max_step_px` pixels
    is shortened to that length. Each position keeps its trial point only if its own
    frame's residual falls; its damping is then divided by 3, otherwise multiplied by 10
    (within `[1e-8, 1e8]`). So the returned residual never rises, frame by frame.

    The reported loss is the RMS amplitude residual after the step (the kept positions).
    The driver stops the run with `RESULTS.positions_off_object` if a step would move a
    probe window off the object.

    **Arguments:**

    - `initial_damping`: every position's relative damping at the start (default `1e-2`).
    - `max_step_px`: the longest step of one position in one iteration, in object pixels
      (default `1.0`): the linear model of a frame holds over about a feature's size.
    - `eps`: added to the predicted intensity under the square root, relative to the mean
      measured intensity (default `1e-6`), as in `GaussNewton`.
    """

    models_detector: ClassVar[bool] = True

    initial_damping: float = 1e-2
    max_step_px: float = 1.0
    eps: float = 1e-6

    def __check_init__(self):
        for name in ("initial_damping", "max_step_px", "eps"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be finite and > 0, got {value}")

    def init(self, microscope, data, trainable):
        del data
        paths = selected_paths(trainable, trainable)
        if paths != _expand(["positions"], microscope):
            raise ValueError(
                f"PositionLM refines the scan positions only: `trainable` must select 'positions' alone, got {paths}"
            )
        dtype = microscope.positions.dtype
        return PositionLMState(jnp.full((microscope.num_positions,), self.initial_damping, dtype))

    def step(self, microscope, state, data, trainable, key):
        del trainable, key
        terms = AmplitudeResidual.of(data, self.eps)
        with_positions = lambda p: eqx.tree_at(lambda m: m.positions, microscope, p)  # noqa: E731

        def residual(positions):
            predicted = jnp.maximum(with_positions(positions)(), 0)
            return terms.smooth(predicted), predicted

        # The exact residual (no eps) decides acceptance, as in `GaussNewton`.
        frame_sums = terms.frame_sums

        positions = microscope.positions
        # One pixel along x, then along y, for every position at once: frame j moves with
        # position j only, so one product gives every position's column.
        pixel = microscope.sample.dx.astype(positions.dtype)
        r, jvp, predicted = jax.linearize(residual, positions, has_aux=True)
        jx = jvp(jnp.zeros_like(positions).at[:, 0].set(pixel[0]))
        jy = jvp(jnp.zeros_like(positions).at[:, 1].set(pixel[1]))
        axx, axy, ayy = (jnp.sum(u * v, axis=(1, 2)) for u, v in ((jx, jx), (jx, jy), (jy, jy)))
        gx, gy = jnp.sum(jx * r, axis=(1, 2)), jnp.sum(jy * r, axis=(1, 2))
        lam = state.damping
        dxx, dyy = axx * (1 + lam), ayy * (1 + lam)
        det = dxx * dyy - axy**2
        safe = jnp.where(det > 0, det, 1)
        step_x = jnp.where(det > 0, -(dyy * gx - axy * gy) / safe, 0)
        step_y = jnp.where(det > 0, -(dxx * gy - axy * gx) / safe, 0)
        length = jnp.sqrt(step_x**2 + step_y**2)
        shrink = jnp.minimum(1, self.max_step_px / jnp.where(length > 0, length, 1))
        step_px = jnp.stack([step_x, step_y], axis=1) * shrink[:, None]
        trial = positions + step_px * pixel[None, :]
        old, new = frame_sums(predicted), frame_sums(jnp.maximum(with_positions(trial)(), 0))
        accept = new < old  # False for NaN: a diverging frame keeps its position
        kept = jnp.where(accept[:, None], trial, positions)
        damping = jnp.clip(lam * jnp.where(accept, _LOWER, _RAISE), _MIN_DAMPING, _MAX_DAMPING)
        loss = jnp.sqrt(jnp.sum(jnp.where(accept, new, old)) / terms.count)
        return with_positions(kept), PositionLMState(damping.astype(lam.dtype)), loss
