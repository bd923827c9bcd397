"""`GaussNewton`: Levenberg-Marquardt on the amplitude residuals, with matrix-free `J^T J`.

The residuals are `r(θ) = valid * (sqrt(I_predicted(θ) + eps) - sqrt(I_measured))` over
every frame and pixel, `θ` the trainable leaves of the microscope with complex leaves
viewed as real pairs (`janssen.invert._realify`), so that the Jacobian `J` is a real
matrix and `J^T J` is symmetric positive semi-definite. Each iteration solves the damped
normal equations `(J^T J + λ D) δ = -J^T r` with conjugate gradients (`lineax.CG`,
preconditioned by `D`),
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

from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float

from ...optics._scan import take_window
from .._constraints import project_scan_step, scan_gauges
from .._losses import AmplitudeLoss
from .._metrics import illumination_map
from .._realify import from_real, to_real
from .._residual import residual_function
from .._trainable import _expand, _get, fixed_on_grid
from .base import AbstractFixedLengthEngine

# Bounds on the relative damping: a long run of rejections must not overflow it, and a
# long run of acceptances must not drive it to 0 (pure Gauss-Newton on a singular J^T J).
_MIN_DAMPING, _MAX_DAMPING = 1e-10, 1e10
_RAISE, _LOWER = 10.0, 1.0 / 3.0
# Weights below 1 % of a leaf's largest count as 1 % (see `_diagonal_shape`).
_FLOOR = 1e-2


class GaussNewtonEngineState(eqx.Module):
    """State of the `GaussNewton` engine between iterations.

    **Arguments:**

    - `damping`: the current relative Levenberg-Marquardt damping (0-d; see `GaussNewton`).
    - `accepted`: whether the last trial step was accepted (0-d bool).
    - `on_grid`: whether the positions stay on the sample's pixel grid for the whole run,
      so that the predictions skip the probe's sub-pixel moves (decided in `init`, on the
      host: `janssen.invert._trainable.fixed_on_grid`).
    """

    damping: Float[Array, ""]
    accepted: Bool[Array, ""]
    on_grid: bool = eqx.field(default=False, static=True)


def _tree_dot(a: Any, b: Any) -> Array:
    return sum((jnp.vdot(x, y) for x, y in zip(jtu.tree_leaves(a), jtu.tree_leaves(b), strict=True)), jnp.array(0.0))


def _is_zero(tree: Any) -> Array:
    return jnp.all(jnp.stack([jnp.all(leaf == 0) for leaf in jtu.tree_leaves(tree)]))


def _axpy(alpha: Any, x: Any, y: Any) -> Any:
    return jtu.tree_map(lambda u, v: alpha * u + v, x, y)


def _num_real_parameters(real_params: Any) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jtu.tree_leaves(real_params)))


def normal_operator(jvp, vjp, x: Any, damping: Any) -> lx.FunctionLinearOperator:
    """`v -> J^T J v + damping * v` as a symmetric PSD `lineax` operator on PyTrees like `x`.

    `jvp` applies `J` (e.g. from `jax.linearize`) and `vjp` applies `J^T` to a residual-
    shaped array; both act on real PyTrees (complex leaves as real pairs). `damping` is a
    scalar or a PyTree like `x` of non-negative weights (a diagonal `λ D`).
    """
    if isinstance(damping, jax.Array) and damping.ndim == 0:
        damp = lambda v: jtu.tree_map(lambda u: damping * u, v)  # noqa: E731
    else:
        damp = lambda v: jtu.tree_map(jnp.multiply, damping, v)  # noqa: E731
    return lx.FunctionLinearOperator(
        lambda v: _axpy(1.0, damp(v), vjp(jvp(v))),
        jax.eval_shape(lambda: x),
        tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
    )


def _path(key_path) -> str:
    return jtu.keystr(key_path).lstrip(".")


def _object_intensity(microscope: Any) -> Array:
    """`sum_j |O|^2` over the probe windows: the object's weight on each probe pixel.

    Summed one window at a time in a loop: cutting every window at once would write a
    `(npos, h, w)` array only to sum it (on the medium preset 45 ms of a 0.07 s FFT floor).
    """
    corners, shifts = microscope.windows()
    intensity = jnp.abs(microscope.sample.sample) ** 2
    shape = tuple(microscope.probe_shape)

    def add(j, total):
        shift = None if shifts is None else shifts[j]
        return total + take_window(intensity, corners[j], shift, shape)

    return jax.lax.fori_loop(0, corners.shape[0], add, jnp.zeros(shape, intensity.dtype))


def _mapped_jvp(jvp, tangents: list[Any], reduce) -> Array:
    """`reduce(J t)` for several tangents, one after the other in a loop (one copy of the
    product to compile), each product reduced before the next: a vmapped product would write
    every tangent's `(npos, H, W)` image before reducing any."""
    stacked = jtu.tree_map(lambda *leaves: jnp.stack(leaves), *tangents)
    return jax.lax.map(lambda t: reduce(jvp(t)), stacked)


def _frame_sums(tangent: Array) -> Array:
    return jnp.sum(tangent**2, axis=tuple(range(1, tangent.ndim)))


def _diagonal_shape(microscope: Any, x: Any, jvp) -> Any:
    """Per-parameter weights proportional to the diagonal of `J^T J`, leaf by leaf.

    Known structure first: the object's diagonal is (for each of the real and imaginary
    parts) about half the illumination `sum_j |P_j|^2`, the probe's half of `sum_j |O_j|^2`
    over the windows, and each position moves only its own frame, so two products by `J`
    give the positions' diagonal exactly; so does one product for each leaf the microscope
    declares separable (`separable_leaves`: a detector background, per-frame scales), whose
    elements touch disjoint residuals. Any other leaf gets a constant. A floor of 1 %
    of the leaf's maximum keeps barely illuminated pixels from taking huge steps (as rPIE's
    regularisation does).
    """

    separable = microscope.separable_leaves()
    # The leaves with known structure, by the names the microscope declares for them.
    obj, probe, positions = (_expand([name], microscope)[0] for name in ("object", "probe", "positions"))

    def weights(key_path, leaf):
        path, ny, nx = _path(key_path), *microscope.sample.shape
        if path == obj and leaf.shape == (ny, nx, 2):
            base = illumination_map(microscope)[..., None]
        elif path == probe and leaf.ndim == 4 and leaf.shape[1:3] == tuple(microscope.probe_shape):
            base = _object_intensity(microscope)[None, :, :, None]
        elif path == positions:
            # Unit tangents in metres would overflow float32 once squared: probe with steps of
            # the scan's own size and divide by its square.
            size = jnp.maximum(jnp.max(jnp.abs(leaf)), jnp.finfo(leaf.dtype).tiny)
            zeros = jtu.tree_map(jnp.zeros_like, x)
            tangents = [
                eqx.tree_at(lambda t: t.positions, zeros, jnp.zeros_like(leaf).at[:, c].set(size))
                for c in range(leaf.shape[1])
            ]
            base = _mapped_jvp(jvp, tangents, _frame_sums).T / size**2
        elif path in separable:
            zeros = jtu.tree_map(jnp.zeros_like, x)
            column_sums = jvp(eqx.tree_at(lambda t: _get(t, path), zeros, jnp.ones_like(leaf)))
            others = tuple(axis for axis in range(column_sums.ndim) if axis not in separable[path])
            base = jnp.sum(column_sums**2, axis=others)
        else:
            return jnp.ones_like(leaf)
        base = jnp.maximum(base, _FLOOR * jnp.max(base))
        return jnp.broadcast_to(base, leaf.shape).astype(leaf.dtype)

    return jtu.tree_map_with_path(weights, x)


def _scan_projector(microscope: Any, trainable: Any):
    """Removes the gauge motions of the scan (`scan_gauges`) from the positions of a step."""
    translation, dilation = scan_gauges(trainable, microscope)
    if not (translation or dilation):
        return lambda v: v
    project = lambda p: project_scan_step(p, microscope.positions, translation=translation, dilation=dilation)  # noqa: E731
    return lambda v: eqx.tree_at(lambda t: t.positions, v, project(v.positions))


class GaussNewton(AbstractFixedLengthEngine[GaussNewtonEngineState]):
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

    **Scaling.** The Levenberg term is `λ D` with `D` a positive diagonal proportional to
    the diagonal of `J^T J` (Marquardt's choice, which makes the step independent of the
    units of each part): about the illumination `sum_j |P_j|^2` for the object, the
    object's intensity over the windows for the probe, the exact per-position curvature
    for scan positions (each position moves only its own frame), and a constant for
    any other leaf (distance, zoom, aperture, mode weights…). Each leaf's weights are
    then scaled so that they equal the curvature of the loss along that leaf's own
    gradient. So `damping` is relative (`damping = 1` weighs the Levenberg term like the
    curvature itself) and positions in metres, a probe of amplitude ~30 and an object of
    amplitude ~1 take balanced steps. The same `D`, times `1 + damping`, preconditions CG.
    With `scaling=False`, `D` is the identity times the curvature along the whole
    gradient. The damping stays within `[1e-10, 1e10]`.

    **Positions.** The gauge motions of a refined scan (`janssen.invert.scan_gauges`: its
    mean when the object is refined too, its scale when the distance is as well) are
    projected out of the normal equations, as the driver projects them out of every step.

    **Arguments:**

    - `initial_damping`: the relative damping of the first iteration (default `1e-3`).
    - `cg_maxiter`: the most CG iterations per step; `-1` (default) chooses
      `min(12, 5 + floor(n ** 0.25))` for `n` real parameters. (Measured on the benchmark
      presets from the suite's start: 12 CG iterations per step reach object error 0.066
      after as many steps as 32 did, 5 on medium and 6 on small, at 0.45 and 0.67 of the
      time per step; 8 needed more steps: docs/benchmarks.md.)
    - `cg_tol`: CG stops when every entry of the normal-equations residual is below
      `cg_tol` times the largest entry of the right-hand side (a max-norm relative test)
      and the last CG update is as small; `-1.0` (default) chooses `1e-3`.
    - `eps`: added to the predicted intensity under the square root, relative to the
      mean measured intensity (default `1e-6`): the residual stays differentiable where a
      prediction is 0 (its derivative is bounded by `1 / (2 sqrt(eps))`) while shifting
      amplitudes by at most `sqrt(eps)` times the typical amplitude. The reported loss
      and the acceptance test use the exact residual, without `eps`.
    - `scaling`: use the diagonal scaling and preconditioner described above (default
      `True`); `False` is plain Levenberg damping `λ I`.
    """

    models_detector: ClassVar[bool] = True

    initial_damping: float = 1e-3
    cg_maxiter: int = eqx.field(default=-1, static=True)
    cg_tol: float = eqx.field(default=-1.0, static=True)
    eps: float = 1e-6
    scaling: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not (np.isfinite(self.initial_damping) and self.initial_damping > 0):
            raise ValueError(f"`initial_damping` must be finite and > 0, got {self.initial_damping}")
        if isinstance(self.cg_maxiter, bool) or not (self.cg_maxiter == -1 or self.cg_maxiter >= 1):
            raise ValueError(f"`cg_maxiter` must be -1 (automatic) or an integer >= 1, got {self.cg_maxiter!r}")
        if not (self.cg_tol == -1.0 or 0 < self.cg_tol < 1):
            raise ValueError(f"`cg_tol` must be -1 (automatic) or in (0, 1), got {self.cg_tol}")
        if not (np.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"`eps` must be finite and > 0, got {self.eps}")

    def _solver(self, num_parameters: int, rhs: Any) -> lx.CG:
        maxiter = self.cg_maxiter if self.cg_maxiter > 0 else min(12, 5 + int(num_parameters**0.25))
        tol = self.cg_tol if self.cg_tol > 0 else 1e-3
        # lineax tests |r_i| <= atol + rtol |b_i| element by element. Parameters that no data
        # touch (object pixels outside every probe window) have b_i = 0, and a relative test
        # there is 0 / 0, which lineax reads as converged after one step. So the tolerance is
        # absolute, relative to the largest entry of the right-hand side: a max-norm test.
        # No periodic recomputation of the residual (`stabilise_every`): it costs a product
        # by `J^T J` every 10 steps, and at 12 steps rounding has not built up (measured:
        # the same errors to 4 digits over 6 medium iterations).
        scale = jnp.max(jnp.stack([jnp.max(jnp.abs(leaf)) for leaf in jtu.tree_leaves(rhs)]))
        return lx.CG(rtol=0.0, atol=tol * scale, max_steps=maxiter, stabilise_every=None)

    def init(self, microscope, data, trainable):
        damping = jnp.asarray(self.initial_damping, dtype=data.intensities.dtype)
        return GaussNewtonEngineState(damping, jnp.array(True), fixed_on_grid(microscope, trainable))

    def step(self, microscope, state, data, trainable, key):
        del key
        params, static = eqx.partition(microscope, trainable)
        x = to_real(params)
        residual_fn = residual_function(static, params, data, self.eps, on_grid=state.on_grid)
        residual, jvp, predicted = jax.linearize(residual_fn, x, has_aux=True)
        transpose = jax.linear_transpose(jvp, x)
        loss = AmplitudeLoss()(predicted, data.intensities, data.valid[None])
        project = _scan_projector(microscope, trainable)
        delta = self._solve(jvp, lambda u: transpose(u)[0], residual, x, state.damping, microscope, project)
        trial = _axpy(1.0, delta, x)
        predicted_trial = self._predict(trial, static, params, state.on_grid)
        trial_loss = AmplitudeLoss()(predicted_trial, data.intensities, data.valid[None])
        accept = trial_loss < loss  # False for a NaN trial: never take a diverging step
        kept = jtu.tree_map(lambda new, old: jnp.where(accept, new, old), trial, x)
        damping = jnp.clip(state.damping * jnp.where(accept, _LOWER, _RAISE), _MIN_DAMPING, _MAX_DAMPING)
        new = eqx.combine(from_real(kept, params), static)
        new_state = GaussNewtonEngineState(damping.astype(state.damping.dtype), accept, state.on_grid)
        return new, new_state, jnp.sqrt(jnp.where(accept, trial_loss, loss))

    @staticmethod
    def _predict(real_params: Any, static: Any, like: Any, on_grid: bool) -> Array:
        return eqx.combine(from_real(real_params, like), static)(on_grid=on_grid)

    def _solve(self, jvp, vjp, residual: Array, x: Any, damping: Array, microscope: Any, project) -> Any:
        """The Levenberg-Marquardt step `-(J^T J + λ D)^{-1} J^T r`, by (preconditioned) CG."""
        gradient = project(vjp(residual))
        dtype = residual.dtype
        if self.scaling:
            weights = self._scaling(jvp, gradient, _diagonal_shape(microscope, x, jvp))
            diagonal = jtu.tree_map(lambda w: (damping * w).astype(dtype), weights)
            # lineax's CG declares a breakdown when p^T A p < 100 n eps (p^T r), a test meant for
            # unpreconditioned CG. With a good preconditioner p^T A p / p^T r is of order 1, so
            # for n ~ 1e6 float32 parameters every first step "breaks down" (NaN). CG's iterates
            # do not depend on a constant factor in the preconditioner: a large one passes the test.
            boost = 1e4 * max(1.0, 100 * _num_real_parameters(x) * float(jnp.finfo(dtype).eps))
            inverse = jtu.tree_map(lambda w: (boost / ((1 + damping) * w)).astype(dtype), weights)
            preconditioner = lx.FunctionLinearOperator(
                lambda v: project(jtu.tree_map(jnp.multiply, inverse, v)),
                jax.eval_shape(lambda: x),
                tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
            )
            options = {"preconditioner": preconditioner}
        else:
            # Curvature along the gradient, |J g|^2 / |g|^2: the scale that makes `damping` relative.
            norm = jnp.sqrt(_tree_dot(gradient, gradient))
            ju = jvp(jtu.tree_map(lambda g: g / jnp.where(norm > 0, norm, 1), gradient))
            scale = jnp.where(norm > 0, jnp.vdot(ju, ju), 1)
            diagonal, options = (damping * scale).astype(dtype), {}
        inner = normal_operator(jvp, vjp, x, diagonal)
        # lineax's CG starts with `b - A y0` at `y0 = 0`: a product by `J^T J` of zeros,
        # skipped here (one of the step's 13 products).
        operator = lx.FunctionLinearOperator(
            lambda v: jax.lax.cond(_is_zero(v), lambda u: u, lambda u: project(inner.mv(project(u))), v),
            jax.eval_shape(lambda: x),
            tags=(lx.symmetric_tag, lx.positive_semidefinite_tag),
        )
        rhs = jtu.tree_map(jnp.negative, gradient)
        solver = self._solver(_num_real_parameters(x), rhs)
        solution = lx.linear_solve(operator, rhs, solver, options=options, throw=False)
        return project(solution.value)

    @staticmethod
    def _scaling(jvp, gradient: Any, shape: Any) -> Any:
        """`shape`, each leaf rescaled so that `g_k^T D_k g_k = |J g_k|^2` along its own gradient."""
        leaves, treedef = jtu.tree_flatten(gradient)
        shapes = treedef.flatten_up_to(shape)
        # Unit directions: a gradient in 1/metres times J would overflow float32 when squared.
        units = [g / jnp.where(jnp.any(g != 0), jnp.sqrt(jnp.sum(g**2)), 1) for g in leaves]
        tangents = [treedef.unflatten([u if i == k else jnp.zeros_like(u) for i, u in enumerate(units)])
                    for k in range(len(units))]  # fmt: skip
        curvatures = _mapped_jvp(jvp, tangents, lambda t: jnp.sum(t**2))
        scaled = []
        for k, (u, w) in enumerate(zip(units, shapes, strict=True)):
            along = jnp.sum(w * u**2)
            curvature = curvatures[k]
            factor = jnp.where(along > 0, curvature / jnp.where(along > 0, along, 1), 1)
            # A leaf with a zero gradient keeps its relative weights at the typical scale.
            scaled.append(w * jnp.where(factor > 0, factor, 1))
        return treedef.unflatten(scaled)
