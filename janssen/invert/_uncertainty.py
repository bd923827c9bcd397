"""`object_std`: a per-pixel standard-error map of the object from the Gauss-Newton curvature.

Near the least-squares solution `θ̂` of the amplitude residuals
`r(θ) = valid * (sqrt(I_predicted(θ) + eps) - sqrt(I_measured))`, with independent noise of
standard deviation `σ` on each amplitude, the estimate scatters as
`Cov(θ̂) ≈ σ² (J^T J + λ I)^{-1}` (the Laplace / Gauss-Newton approximation; `J` is the real
Jacobian of `r` with complex leaves as real pairs, `λ` a small damping). For Poisson counts
`sqrt(N)` has variance close to 1/4 (Anscombe 1948) when counts are large, so `σ ≈ 0.5`.

Only the diagonal of the inverse is wanted, and `J^T J` is only available as a
matrix-vector product. The diagonal is estimated by **perturbation sampling**: with
Rademacher vectors `z` (detector-shaped) and `w` (object-shaped),

    x = (J^T J + λ I)^{-1} (J^T z + sqrt(λ) w)

has covariance exactly `(J^T J + λ I)^{-1}`, so the mean of `x ⊙ x` over `K` samples is an
unbiased estimate of its diagonal, one preconditioned conjugate-gradient solve per sample.
Each pixel's estimate is a mean of `K` squares of one (nearly Gaussian) variable, so its
relative standard deviation is at most `sqrt(2 / K)` for the variance of one real
component, and about `0.5 / sqrt(K)` for the complex standard deviation (which adds two
components; measured 0.064 at `K = 64`), whatever the off-diagonal structure of the
inverse. Hutchinson's estimator `mean(v ⊙ A^{-1} v)` has a relative variance of
`sum_{j != k} A^{-1}_{kj}² / (A^{-1}_{kk}² K)` instead, and in ptychography the inverse
spreads over the whole probe window (measured on a 32x32 object with a 16x16 probe: that
sum is about 200 times the diagonal's square, and only 2 % of it lies within 4 pixels), so
Hutchinson would need hundreds of times more solves for the same accuracy, and a probing
colouring would need a colour for every pixel of the probe window.

Cost: one linearisation, 8 products by `J^T` for the Jacobi preconditioner, and `K` CG
solves of about 25-30 steps each at the default tolerance (one product by `J` and one by
`J^T` per step, as much work as one gradient): about `30 K` gradient evaluations in all,
so the default `K = 64` costs roughly what 2000 `Gradient` iterations cost.

Two null spaces are removed from every sample (so that the map describes what the data
determine):

- pixels that no probe window covers have no data at all: their standard error is `inf`;
- the object's global phase (`O -> e^{iφ} O` on the covered pixels) leaves every intensity
  unchanged, so its variance is set by the damping alone (`σ² / λ`). It is projected out
  (the map is the covariance restricted to the complement of that direction), which is also
  what a comparison of reconstructions after removing their global phase measures.

References:

- F. J. Anscombe, "The transformation of Poisson, binomial and negative-binomial data",
  Biometrika 35, 246 (1948).
- G. Papandreou and A. L. Yuille, "Gaussian sampling by local perturbations", NeurIPS
  (2010) (sampling a Gaussian by solving a perturbed linear system).
- M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
  Laplacian smoothing splines", Commun. Stat. Simul. Comput. 18, 1059 (1989).
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import ScalarLike
from .._data import MicroscopeData
from .._validate import check_positive
from ..optics._scan import put_window
from ..scopes._base import AbstractMicroscope
from ._realify import from_real, to_real
from ._residual import AmplitudeResidual

# Rademacher vectors used to estimate diag(J^T J) for the Jacobi preconditioner. Its noise
# (about 35 % per pixel) only slows CG a little; it never biases the map.
_NUM_DIAGONAL_PROBES = 8


def _object_residual_fn(microscope: AbstractMicroscope, data: MicroscopeData, eps: Array):
    """The `GaussNewton` amplitude residual as a function of the object alone (real pairs)."""
    like = microscope.sample.sample
    terms = AmplitudeResidual.of(data, eps)

    def residual_fn(real_object):
        return terms.smooth(eqx.tree_at(lambda m: m.sample.sample, microscope, from_real(real_object, like))())

    return residual_fn


def _coverage(microscope: AbstractMicroscope) -> Float[Array, "Y X"]:
    """1 on every object pixel that some probe window covers, 0 elsewhere."""
    corners, shifts = microscope.windows()
    window = jnp.ones(microscope.probe_shape, microscope.sample.sample.real.dtype)

    def body(i, acc):
        return put_window(acc, corners[i], None if shifts is None else shifts[i], window)

    counts = jax.lax.fori_loop(0, corners.shape[0], body, jnp.zeros(microscope.sample.shape, window.dtype))
    return (counts > 0).astype(window.dtype)


def _projector(real_object: Array, covered: Array):
    """Orthogonal projector onto covered pixels, minus the global phase direction there."""
    mask = covered[..., None]
    # `i O` in real pairs: the tangent of O -> e^{iφ} O, which J maps to 0.
    gauge = mask * jnp.stack([-real_object[..., 1], real_object[..., 0]], axis=-1)
    gauge = gauge / jnp.sqrt(jnp.sum(gauge**2))

    def project(v):
        v = mask * v
        return v - jnp.sum(gauge * v) * gauge

    return project


def _pcg(apply_a, apply_m, b: Array, tol: Array, maxiter: int) -> tuple[Array, Array]:
    """Preconditioned conjugate gradients for `A x = b`, stopping on the preconditioned residual.

    Written here rather than through `lineax.CG` because lineax tests convergence element by
    element (`|r_i| <= atol + rtol |b_i|`): a relative test is 0 / 0 on the uncovered
    pixels (where `b_i = 0`), and an absolute one is loose on faint pixels and strict on
    bright ones. The global test `r^T M r <= tol² b^T M b` weighs each pixel by its own
    curvature.
    """
    z = apply_m(b)
    gamma0 = jnp.sum(z * b)

    def cond(state):
        _, _, _, gamma, step = state
        return (step < maxiter) & (gamma > tol**2 * gamma0)

    def body(state):
        x, r, p, gamma, step = state
        ap = apply_a(p)
        alpha = gamma / jnp.sum(p * ap)
        x, r = x + alpha * p, r - alpha * ap
        z = apply_m(r)
        new_gamma = jnp.sum(z * r)
        return x, r, z + (new_gamma / gamma) * p, new_gamma, step + 1

    start = (jnp.zeros_like(b), b, z, gamma0, jnp.array(0))
    x, _, _, _, steps = jax.lax.while_loop(cond, body, start)
    return x, steps


def _jacobi_diagonal(vjp, residual: Array, key: PRNGKeyArray) -> Array:
    """Per pixel, the mean over its two real components of diag(J^T J), estimated as E[(J^T z)²]."""
    keys = jr.split(key, _NUM_DIAGONAL_PROBES)
    draws = jax.vmap(lambda k: vjp(jr.rademacher(k, residual.shape, residual.dtype)) ** 2)(keys)
    return jnp.mean(draws, axis=(0, -1))


@eqx.filter_jit
def _object_variance(
    microscope: AbstractMicroscope,
    data: MicroscopeData,
    noise_std: Array,
    damping: Array,
    key: PRNGKeyArray,
    cg_tol: Array,
    eps: Array,
    *,
    num_samples: int,
    batch_size: int,
    cg_maxiter: int,
) -> tuple[Float[Array, "Y X"], Float[Array, ""], Any]:
    """The map's variance (complex, per pixel), the `σ` used, and the CG step counts.

    `noise_std <= 0` asks for `σ` estimated from the residual: a value, not a Python
    branch, so that both choices share one compilation.
    """
    from ._engines.gauss_newton import normal_operator  # lineax: imported when first needed

    x0 = to_real(microscope.sample.sample)
    residual, jvp = jax.linearize(_object_residual_fn(microscope, data, eps), x0)
    transpose = jax.linear_transpose(jvp, x0)
    vjp = lambda u: transpose(u)[0]  # noqa: E731
    covered = _coverage(microscope)
    project = _projector(x0, covered)
    key_diag, key_samples = jr.split(key)
    diagonal = _jacobi_diagonal(vjp, residual, key_diag)
    lam = damping * jnp.sum(covered * diagonal) / jnp.sum(covered)
    inverse_m = 1 / (diagonal + lam)[..., None]
    apply_a = normal_operator(jvp, vjp, x0, lam.astype(x0.dtype)).mv
    apply_m = lambda v: project(inverse_m * project(v))  # noqa: E731

    def sample(k):
        kz, kw = jr.split(k)
        z = jr.rademacher(kz, residual.shape, residual.dtype)
        w = jr.rademacher(kw, x0.shape, x0.dtype)
        return _pcg(apply_a, apply_m, project(vjp(z) + jnp.sqrt(lam) * w), cg_tol, cg_maxiter)

    def batch(total, keys):
        xs, steps = jax.vmap(sample)(keys)
        return total + jnp.sum(xs**2, axis=0), steps

    keys = jr.split(key_samples, num_samples)
    keys = keys.reshape(num_samples // batch_size, batch_size, *keys.shape[1:])
    total, steps = jax.lax.scan(batch, jnp.zeros_like(x0), keys)
    unit_variance = total / num_samples
    estimate = noise_std <= 0
    sigma = jnp.where(estimate, _residual_noise_std(residual, data, covered, unit_variance, lam, estimate), noise_std)
    variance = sigma**2 * jnp.sum(unit_variance, axis=-1)
    return jnp.where(covered > 0, variance, jnp.inf), sigma, steps.reshape(-1)


def _residual_noise_std(residual, data, covered, unit_variance, lam, needed) -> Array:
    """`σ² = |r|² / (m - p)`, with `p = trace(J (J^T J + λ)^{-1} J^T)` the effective parameter count.

    `p` counts the covered real parameters less the gauge, each reduced by the share of the
    damping, `1 - λ [(J^T J + λ)^{-1}]_kk` (read from the estimated diagonal itself).
    """
    num_data = data.num_positions * jnp.sum(data.valid)
    num_params = 2 * jnp.sum(covered) - 1 - lam * jnp.sum(unit_variance)
    dof = eqx.error_if(  # only when `σ` is to be estimated (`needed`)
        num_data - num_params,
        needed & (num_data <= num_params),
        "object_std: fewer valid detector pixels than object parameters; pass `noise_std`",
    )
    return jnp.sqrt(jnp.sum(residual**2) / dof)


def object_std(
    microscope: AbstractMicroscope,
    data: MicroscopeData,
    *,
    noise_std: ScalarLike | None = None,
    damping: ScalarLike = 1e-6,
    num_samples: int = 64,
    batch_size: int = 8,
    key: PRNGKeyArray | None = None,
    cg_maxiter: int = 500,
    cg_tol: ScalarLike = 1e-3,
    eps: ScalarLike = 1e-6,
) -> Float[Array, "Y X"]:
    """Per-pixel standard error of the object, from the Gauss-Newton curvature at a solution.

    The standard error of the complex object pixel `O_k` is
    `sqrt(var(Re O_k) + var(Im O_k))` with the covariance `σ² (J^T J + λ I)^{-1}` of the
    amplitude residuals (the ones `GaussNewton` minimises) linearised at `microscope`,
    **conditional** on every other leaf: probe, positions and optics are held at their
    values. Only the object's global phase, which no intensity depends on, is removed; when
    the probe was refined too, the joint gauges (object-probe scale, phase ramps) and the
    probe's own uncertainty are not included, so the map is then a lower bound on the
    marginal uncertainty. `microscope` should be a converged reconstruction (e.g. after
    `GaussNewton`): the map describes the scatter of the least-squares solution under the
    noise, to first order.

    The diagonal is estimated matrix-free by perturbation sampling (see the module
    documentation): `num_samples` preconditioned CG solves with `J^T J`, each costing one
    forward and one backward pass per CG step (about 25-30 steps each at the default
    tolerance). The estimate's relative standard deviation per pixel is about
    `0.5 / sqrt(num_samples)` (6 % at the default 64 samples).

    **Arguments:**

    - `microscope`: the reconstruction (any microscope); only its object is perturbed.
    - `data`: the measurements it was reconstructed from.
    - `noise_std`: standard deviation `σ` of the noise on each measured amplitude
      `sqrt(I)`, in `sqrt(counts)`. `None` (default) estimates it from the residual at
      `microscope`, `σ² = |r|² / (m - p)` over the `m` valid detector pixels with `p` the
      effective number of object parameters (the reduced chi-square of a least-squares
      fit): it follows data in any units, read noise and model error, but it also grows
      when the reconstruction has not converged, making the map conservative. For photon
      counts with a converged fit, `noise_std=0.5` (Anscombe) is the physical value; where
      most pixels see less than a few photons the amplitude noise is somewhat smaller.
    - `damping`: `λ` relative to the mean diagonal of `J^T J` over covered pixels
      (default `1e-6`): keeps faint pixels finite without changing well-illuminated ones.
    - `num_samples`: number of random solves (a multiple of `batch_size`).
    - `batch_size`: solves run together with `vmap` (memory grows with it).
    - `key`: PRNG key of the random vectors. Default `PRNGKey(0)`.
    - `cg_maxiter`, `cg_tol`: limit and relative tolerance (on the preconditioned
      residual) of each CG solve.
    - `eps`: intensity offset under the square root, relative to the mean measured
      intensity, as in `GaussNewton` (default `1e-6`).

    **Returns:**

    `(Y, X)` standard error of each complex object pixel, in the object's units; `inf` on
    pixels that no probe window covers.
    """
    if isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"`num_samples` must be an integer >= 1, got {num_samples!r}")
    if isinstance(batch_size, bool) or batch_size < 1 or num_samples % batch_size:
        raise ValueError(f"`batch_size` must be >= 1 and divide `num_samples` ({num_samples}), got {batch_size!r}")
    if isinstance(cg_maxiter, bool) or cg_maxiter < 1:
        raise ValueError(f"`cg_maxiter` must be an integer >= 1, got {cg_maxiter!r}")
    for name, value in (("damping", damping), ("cg_tol", cg_tol), ("eps", eps), ("noise_std", noise_std)):
        if value is not None:
            check_positive(name, value)
    dtype = data.intensities.dtype
    variance, _, _ = _object_variance(
        microscope,
        data,
        jnp.asarray(-1 if noise_std is None else noise_std, dtype),
        jnp.asarray(damping, dtype),
        jr.PRNGKey(0) if key is None else key,
        jnp.asarray(cg_tol, dtype),
        jnp.asarray(eps, dtype),
        num_samples=num_samples,
        batch_size=batch_size,
        cg_maxiter=cg_maxiter,
    )
    return jnp.sqrt(variance)
