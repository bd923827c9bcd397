"""`GaussNewton`: Levenberg-Marquardt on the amplitude residuals, with matrix-free `J^T J`.

The residuals are `r(θ) = valid * (sqrt(I_predicted(θ) + eps) - sqrt(I_measured))` over
every frame and pixel, `θ` the trainable leaves of the microscope with complex leaves
viewed as real pairs (`janssen.invert._realify`), so that the Jacobian `J` is a real
matrix and `J^T J` is symmetric positive semi-definite. Each iteration solves the damped
normal equations `(J^T J + λ I) δ = -J^T r` with conjugate gradients (`lineax.CG`),
applying `J` through `jax.linearize` and `J^T` through `jax.linear_transpose`; `J` is
never formed. The trial point `θ + δ` is kept only if it lowers the loss.

References:

- K. Levenberg, "A method for the solution of certain non-linear problems in least
  squares", Q. Appl. Math. 2, 164 (1944).
- D. W. Marquardt, "An algorithm for least-squares estimation of nonlinear parameters",
  J. Soc. Ind. Appl. Math. 11, 431 (1963).
- M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving linear
  systems", J. Res. Natl. Bur. Stand. 49, 409 (1952).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float

from ...io._data import MicroscopeData
from .._losses import AmplitudeLoss, _safe_sqrt
from .._realify import from_real, to_real
from .base import AbstractEngine

# Bounds on the relative damping: a long run of rejections must not overflow it, and a
# long run of acceptances must not drive it to 0 (pure Gauss-Newton on a singular J^T J).
_MIN_DAMPING, _MAX_DAMPING = 1e-10, 1e10
_RAISE, _LOWER = 10.0, 1.0 / 3.0


class GaussNewtonEngineState(eqx.Module):
    """State of the `GaussNewton` engine between iterations.

    **Arguments:**

    - `damping`: the current relative Levenberg-Marquardt damping (0-d; see `GaussNewton`).
    - `accepted`: whether the last trial step was accepted (0-d bool).
    """

    damping: Float[Array, ""]
    accepted: Bool[Array, ""]


def _tree_dot(a: Any, b: Any) -> Array:
    return sum((jnp.vdot(x, y) for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True)), jnp.array(0.0))


def _axpy(alpha: Any, x: Any, y: Any) -> Any:
    return jtu.tree_map(lambda u, v: alpha * u + v, x, y)


def _num_real_parameters(real_params: Any) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jtu.tree_leaves(real_params)))


def normal_operator(jvp, vjp, x: Any, damping: Array) -> lx.FunctionLinearOperator:
    """`v -> J^T J v + damping * v` as a symmetric PSD `lineax` operator on PyTrees like `x`.

    `jvp` applies `J` (e.g. from `jax.linearize`) and `vjp` applies `J^T` to a residual-
    shaped array; both act on real PyTrees (complex leaves as real pairs).
    """
    return lx.FunctionLinearOperator(
        lambda v: _axpy(damping, v, vjp(jvp(v))),
        jax.eval_shape(lambda: x),
        tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
    )


class GaussNewton(AbstractEngine[GaussNewtonEngineState]):
    """Levenberg-Marquardt refinement of the amplitude residuals (Gauss-Newton with damping).

    Each iteration linearises the residuals `r = valid * (sqrt(I_predicted + eps) -
    sqrt(I_measured))` of all frames around the current trainable leaves `θ` (complex
    leaves as real pairs), and solves `(J^T J + λ I) δ = -J^T r` by conjugate gradients
    with `J^T J` applied matrix-free. The trial point `θ + δ` is **accepted** only when its
    RMS amplitude residual is lower than the current one; then the damping is divided by
    3. Otherwise the step is **rejected**: the microscope is returned unchanged and the
    damping multiplied by 10. The residual of the microscope a step returns therefore
    never increases. The reported loss is the RMS amplitude residual of the returned
    microscope (after the step, unlike `Gradient`, which reports it before).

    The damping is relative: `λ = damping * c`, with `c = |J g|^2 / |g|^2` the curvature
    of the loss along its gradient `g = J^T r` (computed each iteration with one extra
    product by `J`). So `damping = 1` weighs the Levenberg term like the typical curvature,
    and the same `initial_damping` suits data and parameters of any scale. The damping
    stays within `[1e-10, 1e10]`. `D = I` (no per-parameter scaling): parts of very
    different scale (a probe of amplitude ~30 next to an object of amplitude ~1) are
    handled by CG through `J^T J` itself.

    **Arguments:**

    - `initial_damping`: the relative damping of the first iteration (default `1e-3`).
    - `cg_maxiter`: the most CG iterations per step; `-1` (default) chooses
      `min(50, 5 + floor(n ** 0.25))` for `n` real parameters.
    - `cg_tol`: CG's relative tolerance on the normal-equations residual; `-1.0`
      (default) chooses `1e-3`.
    - `eps`: added to the predicted intensity under the square root, relative to the
      mean measured intensity (default `1e-6`): the residual stays differentiable where a
      prediction is 0 (its derivative is bounded by `1 / (2 sqrt(eps))`) while shifting
      amplitudes by at most `sqrt(eps)` times the typical amplitude. The reported loss
      and the acceptance test use the exact residual, without `eps`.
    """

    initial_damping: float = 1e-3
    cg_maxiter: int = eqx.field(default=-1, static=True)
    cg_tol: float = eqx.field(default=-1.0, static=True)
    eps: float = 1e-6

    def __check_init__(self):
        if not (np.isfinite(self.initial_damping) and self.initial_damping > 0):
            raise ValueError(f"`initial_damping` must be finite and > 0, got {self.initial_damping}")
        if isinstance(self.cg_maxiter, bool) or not (self.cg_maxiter == -1 or self.cg_maxiter >= 1):
            raise ValueError(f"`cg_maxiter` must be -1 (automatic) or an integer >= 1, got {self.cg_maxiter!r}")
        if not (self.cg_tol == -1.0 or 0 < self.cg_tol < 1):
            raise ValueError(f"`cg_tol` must be -1 (automatic) or in (0, 1), got {self.cg_tol}")
        if not (np.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"`eps` must be finite and > 0, got {self.eps}")

    def _solver(self, num_parameters: int) -> lx.CG:
        maxiter = self.cg_maxiter if self.cg_maxiter > 0 else min(50, 5 + int(num_parameters**0.25))
        tol = self.cg_tol if self.cg_tol > 0 else 1e-3
        return lx.CG(rtol=tol, atol=0.0, max_steps=maxiter)

    def init(self, microscope, data, trainable):
        del microscope, trainable
        damping = jnp.asarray(self.initial_damping, dtype=data.intensities.dtype)
        return GaussNewtonEngineState(damping, jnp.array(True))

    def step(self, microscope, state, data, trainable, key):
        del key
        params, static = eqx.partition(microscope, trainable)
        x = to_real(params)
        residual_fn = self._residual_fn(static, params, data)
        residual, jvp, predicted = jax.linearize(residual_fn, x, has_aux=True)
        transpose = jax.linear_transpose(jvp, x)
        loss = AmplitudeLoss()(predicted, data.intensities, data.valid[None])
        delta = self._solve(jvp, lambda u: transpose(u)[0], residual, x, state.damping)
        trial = _axpy(1.0, delta, x)
        trial_loss = AmplitudeLoss()(self._predict(trial, static, params), data.intensities, data.valid[None])
        accept = trial_loss < loss  # False for a NaN trial: never take a diverging step
        kept = jtu.tree_map(lambda new, old: jnp.where(accept, new, old), trial, x)
        damping = jnp.clip(state.damping * jnp.where(accept, _LOWER, _RAISE), _MIN_DAMPING, _MAX_DAMPING)
        new = eqx.combine(from_real(kept, params), static)
        new_state = GaussNewtonEngineState(damping.astype(state.damping.dtype), accept)
        return new, new_state, jnp.sqrt(jnp.where(accept, trial_loss, loss))

    @staticmethod
    def _predict(real_params: Any, static: Any, like: Any) -> Array:
        return eqx.combine(from_real(real_params, like), static)()

    def _residual_fn(self, static: Any, like: Any, data: MicroscopeData):
        measured = data.intensities
        amplitude = _safe_sqrt(measured)
        valid = data.valid[None].astype(measured.dtype)
        eps = self.eps * jnp.sum(valid * measured) / (data.num_positions * jnp.sum(valid))

        def residual_fn(real_params):
            predicted = self._predict(real_params, static, like)
            return valid * (jnp.sqrt(jnp.maximum(predicted, 0) + eps) - amplitude), predicted

        return residual_fn

    def _solve(self, jvp, vjp, residual: Array, x: Any, damping: Array) -> Any:
        """The Levenberg-Marquardt step `-(J^T J + λ I)^{-1} J^T r`."""
        gradient = vjp(residual)
        g2 = _tree_dot(gradient, gradient)
        # Curvature along the gradient, |J g|^2 / |g|^2: the scale that makes `damping` relative.
        jg = jvp(gradient)
        scale = jnp.where(g2 > 0, jnp.vdot(jg, jg) / jnp.where(g2 > 0, g2, 1), 1)
        operator = normal_operator(jvp, vjp, x, (damping * scale).astype(residual.dtype))
        rhs = jtu.tree_map(jnp.negative, gradient)
        solution = lx.linear_solve(operator, rhs, self._solver(_num_real_parameters(x)), throw=False)
        return solution.value

    def terminate(self, state, losses):
        del state, losses
        return jnp.array(False)

    def postprocess(self, microscope, state):
        del state
        return microscope
