"""`OptimistixLeastSquares`: optimistix's least-squares solvers on the amplitude residuals.

The residuals are those of `GaussNewton`: `r(θ) = valid * (sqrt(I_predicted(θ) + eps) -
sqrt(I_measured))` over every frame and pixel, with `θ` the trainable leaves of the
microscope and complex leaves viewed as real pairs (`janssen.invert._realify`, the one
adapter between complex parameters and real solvers). Any optimistix least-squares solver
then refines `θ`: `optx.GaussNewton`, `optx.LevenbergMarquardt`, `optx.Dogleg`. The
Jacobian is applied through `jax.linearize` (optimistix's default `jac="fwd"`), and the
linear solves run matrix-free with conjugate gradients on the normal equations
(`lineax.Normal(lineax.CG(...))`), so memory stays proportional to the data, never to
`parameters x residuals`.

One driver iteration is one `solver.step`. The engine state holds the array leaves of
optimistix's solver state; its non-array parts (the Jacobian's jaxpr) are rebuilt inside
each (jitted) step, so the state passed between iterations and between `reconstruct` calls
has a fixed structure and nothing recompiles.

References:

- K. Levenberg, "A method for the solution of certain non-linear problems in least
  squares", Q. Appl. Math. 2, 164 (1944).
- D. W. Marquardt, "An algorithm for least-squares estimation of nonlinear parameters",
  J. Soc. Ind. Appl. Math. 11, 431 (1963).
- M. J. D. Powell, "A hybrid method for nonlinear equations", in Numerical Methods for
  Nonlinear Algebraic Equations, Gordon and Breach (1970) (the dogleg step).
- J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer (2006),
  chapters 4 and 10.
"""

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
from jaxtyping import Array, Bool

from ..._data import MicroscopeData
from ...scopes._base import AbstractMicroscope
from .._losses import AmplitudeLoss
from .._realify import from_real, to_real
from .._residual import residual_function
from .._trainable import fixed_on_grid
from .base import AbstractEngine

_NO_TAGS: frozenset = frozenset()
_DEFAULT_CG_STEPS = 20


def normal_cg(max_steps: int = _DEFAULT_CG_STEPS) -> lx.Normal:
    """A matrix-free linear solver for optimistix: CG on the normal equations `JᵀJ x = Jᵀb`.

    Runs exactly `max_steps` CG iterations (fewer only on an exact solution). Tolerances
    are deliberately off: lineax tests them elementwise, relative to the right-hand side,
    and a parameter the data do not constrain (an object pixel no probe reaches) has a
    zero entry there, which makes the test `0/0` and stops CG after one iteration.

    **Arguments:**

    - `max_steps`: CG iterations per linear solve; each costs one product by `J` and one
      by `Jᵀ`, about two forward models.

    **Returns:**

    `lineax.Normal(lineax.CG(rtol=0, atol=0, max_steps=max_steps))`.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be an integer >= 1, got {max_steps!r}")
    return lx.Normal(lx.CG(rtol=0.0, atol=0.0, max_steps=max_steps))


class OptimistixState(eqx.Module):
    """State of the `OptimistixLeastSquares` engine between iterations.

    **Arguments:**

    - `solver_state`: the array leaves of the optimistix solver's state (`None` in place
      of its non-array parts, which each step rebuilds).
    - `converged`: whether the solver's own termination test (its `rtol`, `atol`) passed
      at the last step (0-d bool).
    - `on_grid`: whether the positions stay on the sample's pixel grid for the whole run,
      so that the predictions skip the probe's sub-pixel moves (decided in `init`, on the
      host: `janssen.invert._trainable.fixed_on_grid`).
    """

    solver_state: Any
    converged: Bool[Array, ""]
    on_grid: bool = eqx.field(default=False, static=True)


def _as_solver(solver: Any) -> Any:
    if not isinstance(solver, optx.AbstractLeastSquaresSolver):
        raise ValueError(
            "`solver` must be an optimistix least-squares solver (e.g. "
            f"`optx.LevenbergMarquardt(...)`), got {type(solver).__name__}"
        )
    return solver


class OptimistixLeastSquares(AbstractEngine[OptimistixState]):
    """Nonlinear least squares on the amplitude residuals with an optimistix solver.

    Minimises `½ Σ r²` with `r = valid * (sqrt(I_predicted + eps) - sqrt(I_measured))`
    over all frames and pixels, the same residuals as `GaussNewton`, using any optimistix
    least-squares solver: Gauss-Newton (`optx.GaussNewton`: undamped, every step
    accepted, so the loss may rise near the optimum), Levenberg-Marquardt
    (`optx.LevenbergMarquardt`: damping `λ I` with `λ` the inverse of a trust-region
    size that starts at 1, in the parameters' own units) or Dogleg (`optx.Dogleg`:
    between the steepest-descent and the Gauss-Newton step within a trust region).
    Complex leaves are viewed as real pairs, so the Jacobian is a real operator; it is
    applied through `jax.linearize` and never formed. The state carries the
    linearisation of the last accepted point (a few residual-sized arrays), never a
    `parameters x residuals` matrix.

    Each `reconstruct` iteration is one optimistix `step`: one evaluation of the
    residuals and their linearisation at the current trial point, the trust-region
    decision to accept or reject it, and one linear solve for the next trial point.
    optimistix evaluates a trial point one step after proposing it, so the **first
    iteration returns the starting microscope** (it only evaluates it and proposes a
    step), and a rejected trial returns the microscope unchanged. The reported loss is
    the RMS amplitude residual of the returned microscope (without `eps`). The run stops
    with `RESULTS.converged` when the solver's own test (relative change of the
    parameters and of the residuals below `rtol`/`atol`) passes. The driver's
    projections (`bounds`, the scan's gauge on refined positions) apply to the returned
    microscope; optimistix's next trial point is proposed from its own, unprojected,
    iterate.

    Use a matrix-free linear solver (the default, `normal_cg()`, is
    `lineax.Normal(lineax.CG(...))`): optimistix's own defaults (`lineax.QR`,
    `AutoLinearSolver`) materialise the Jacobian, `parameters x residuals` numbers, which
    only suits a handful of parameters (a distance, a few aberration coefficients).
    `optimistix_engine` builds the three solvers by name.

    **Arguments:**

    - `solver`: an `optx.AbstractLeastSquaresSolver`. Default
      `optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6, linear_solver=normal_cg())`.
    - `eps`: added to the predicted intensity under the square root, relative to the
      mean measured intensity (default `1e-6`), as in `GaussNewton`.
    """

    models_detector: ClassVar[bool] = True

    solver: Any = eqx.field(
        default=optx.LevenbergMarquardt(rtol=1e-6, atol=1e-6, linear_solver=normal_cg()), converter=_as_solver
    )
    eps: float = 1e-6

    def __check_init__(self):
        if not (np.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"`eps` must be finite and > 0, got {self.eps}")

    def _problem(self, microscope: AbstractMicroscope, data: MicroscopeData, trainable: Any, on_grid: bool):
        """The residual function `fn(y, args) -> (r, None)` over real `y`, its `args`, and `y` now."""
        params, static = eqx.partition(microscope, trainable)
        # Weakly typed leaves (`jnp.asarray(1.0)`) trace `init` and `step` differently: made strong.
        params = jax.tree_util.tree_map(lambda x: x.astype(x.dtype) if eqx.is_array(x) else x, params)
        arrays, rest = eqx.partition(static, eqx.is_array)
        eps = self.eps

        # Every array reaches `fn` through `args`, none through its closure: optimistix
        # closure-converts `fn`, and closed-over arrays are collected by identity, so the
        # solver state's structure would depend on which leaves happen to be the same array.
        def fn(y, args):
            like, fixed, frames = args
            # The residuals (and their `eps`) are GaussNewton's: one definition (`_residual`).
            residual_fn = residual_function(eqx.combine(fixed, rest), like, frames, eps, on_grid=on_grid)
            return residual_fn(y)[0], None

        return fn, (params, arrays, data), to_real(params), params, static

    def _solver_init(self, fn, y, args) -> Any:
        f_struct, aux_struct = eqx.filter_eval_shape(fn, y, args)
        return self.solver.init(fn, y, args, {}, f_struct, aux_struct, _NO_TAGS)

    def init(self, microscope, data, trainable):
        return _initial_state(self, microscope, data, trainable, fixed_on_grid(microscope, trainable))

    def step(self, microscope, state, data, trainable, key):
        del key
        fn, args, y, params, static = self._problem(microscope, data, trainable, state.on_grid)
        # A fresh skeleton supplies the non-array parts. Kept out of the state, the
        # jaxprs (compared by identity) cannot force a retrace, and a `Solution` holds
        # plain arrays that serialise and compare like any other engine's.
        fresh = self._solver_init(fn, y, args)
        skeleton = eqx.filter(fresh, eqx.is_array, inverse=True)
        if jax.tree_util.tree_structure(state.solver_state) == jax.tree_util.tree_structure(
            eqx.filter(fresh, eqx.is_array)
        ):
            solver_state = eqx.combine(state.solver_state, skeleton)
        else:
            # The linearisation's saved values can number differently here than in `init`'s
            # trace (which values are constants depends on the trace). That happens on the first
            # step only (later states come from this trace), where the state `init` made is the
            # fresh one at the same point: the same values.
            solver_state = fresh
        y, solver_state, _ = self.solver.step(fn, y, args, {}, solver_state, _NO_TAGS)
        converged, _ = self.solver.terminate(fn, y, args, {}, solver_state, _NO_TAGS)
        new = eqx.combine(from_real(y, params), static)
        loss = AmplitudeLoss()(new(on_grid=state.on_grid), data.intensities, data.valid[None])
        state = OptimistixState(eqx.filter(solver_state, eqx.is_array), converged, state.on_grid)
        return new, state, jnp.sqrt(loss)

    def terminate(self, state, losses):
        del losses
        return state.converged

    def postprocess(self, microscope, state):
        del state
        return microscope


@eqx.filter_jit
def _initial_state(engine: OptimistixLeastSquares, microscope, data, trainable, on_grid: bool) -> OptimistixState:
    # Traced like `step`, so that the array leaves have exactly the structure `step` expects.
    fn, args, y, _, _ = engine._problem(microscope, data, trainable, on_grid)
    solver_state = eqx.filter(engine._solver_init(fn, y, args), eqx.is_array)
    return OptimistixState(solver_state, jnp.array(False), on_grid)


_SOLVERS = {
    "gauss-newton": optx.GaussNewton,
    "levenberg-marquardt": optx.LevenbergMarquardt,
    "dogleg": optx.Dogleg,
}


def optimistix_engine(
    name: str,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    cg_max_steps: int = _DEFAULT_CG_STEPS,
    eps: float = 1e-6,
) -> OptimistixLeastSquares:
    """An `OptimistixLeastSquares` engine with one of optimistix's three solvers, matrix-free.

    **Arguments:**

    - `name`: `"gauss-newton"` (`optx.GaussNewton`), `"levenberg-marquardt"`
      (`optx.LevenbergMarquardt`) or `"dogleg"` (`optx.Dogleg`).
    - `rtol`, `atol`: the solver's termination tolerances.
    - `cg_max_steps`: CG iterations per linear solve (`normal_cg(cg_max_steps)`).
    - `eps`: as in `OptimistixLeastSquares`.

    **Returns:**

    `OptimistixLeastSquares(solver=Solver(rtol, atol, linear_solver=normal_cg(cg_max_steps)), eps=eps)`.
    """
    if name not in _SOLVERS:
        raise ValueError(f"`name` must be one of {sorted(_SOLVERS)}, got {name!r}")
    if isinstance(cg_max_steps, bool) or not isinstance(cg_max_steps, int) or cg_max_steps < 1:
        raise ValueError(f"`cg_max_steps` must be an integer >= 1, got {cg_max_steps!r}")
    for label, value in (("rtol", rtol), ("atol", atol)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"`{label}` must be finite and >= 0, got {value}")
    solver = _SOLVERS[name](rtol=rtol, atol=atol, linear_solver=normal_cg(cg_max_steps))
    return OptimistixLeastSquares(solver, eps=eps)
