"""Partial coherence: coherent mode sets, mixed-state probes and Gaussian–Schell modes.

A partially coherent field is described by its cross-spectral density
`W(r1, r2) = sum_k w_k phi_k(r1) conj(phi_k(r2))`: mutually incoherent, orthonormal
modes `phi_k` carrying powers `w_k` (Wolf's coherent-mode representation). Mixed-state
ptychography refines such a set (P. Thibault and A. Menzel, "Reconstructing state
mixtures from diffraction measurements", Nature 494, 68 (2013)).

References for the Gaussian–Schell model:

- L. Mandel and E. Wolf, *Optical Coherence and Quantum Optics* (Cambridge, 1995), §7.5.
- A. Starikov and E. Wolf, "Coherent-mode representation of Gaussian Schell-model
  sources and of their radiation fields", J. Opt. Soc. Am. 72, 923 (1982).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Num, Real

from .._custom_types import PairLike, ScalarLike
from .._validate import check_finite, check_nonnegative, check_positive, complex_array, pair, real_array
from ._fft import centred_coordinates
from ._probe import AbstractProbe


class CoherentModeSet(eqx.Module):
    """Mutually incoherent modes with their weights: a partially coherent field.

    The intensity is `sum_m weights[m] * |modes[m]|**2`. `orthogonalize_modes` and
    `gaussian_schell_modes` return modes of unit power (`sum |modes[m]|**2 = 1`), so
    that the weights are the modes' powers; other sets are accepted as given.

    **Arguments:**

    - `modes`: complex array `(modes, y, x)`.
    - `weights`: `(modes,)` real, >= 0.
    - `wavelength`: metres, > 0.
    - `dx`: pixel pitch in metres, scalar or `(x, y)`, > 0.
    - `z_position`: position along the optical axis in metres (default 0).
    """

    modes: Complex[Array, "modes y x"]
    weights: Float[Array, " _modes"]
    wavelength: Float[Array, ""]
    dx: Float[Array, "2"]
    z_position: Float[Array, ""]

    def __init__(
        self,
        modes: Num[ArrayLike, "modes y x"],
        weights: Real[ArrayLike, " _modes"],
        wavelength: ScalarLike,
        dx: PairLike,
        z_position: ScalarLike = 0.0,
    ):
        self.modes = complex_array("modes", modes, ndim=3)
        self.weights = real_array("weights", weights)
        self.wavelength = real_array("wavelength", wavelength, shape=())
        self.dx = pair("dx", dx)
        self.z_position = real_array("z_position", z_position, shape=())

    def __check_init__(self):
        _check_modes_and_weights(self.modes, self.weights)
        check_positive("wavelength", self.wavelength)
        check_positive("dx", self.dx)
        check_finite("z_position", self.z_position)

    @property
    def num_modes(self) -> int:
        """Number of modes."""
        return self.modes.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """The grid shape `(H, W)`."""
        return self.modes.shape[-2:]

    @property
    def intensity(self) -> Float[Array, "y x"]:
        """`sum_m weights[m] |modes[m]|**2`."""
        return _weighted_intensity(self.modes, self.weights)

    @property
    def effective_mode_count(self) -> Float[Array, ""]:
        """`1 / sum_m p_m**2` with `p = weights / sum(weights)`: 1 for a coherent field, M for M equal modes."""
        return _effective_mode_count(self.weights)


def _check_modes_and_weights(modes: Array, weights: Array) -> None:
    if weights.shape != (modes.shape[0],):
        raise ValueError(
            f"`weights` must have shape ({modes.shape[0]},) (one per mode of `modes` {modes.shape}), "
            f"got shape {weights.shape}"
        )
    check_nonnegative("weights", weights)
    check_finite("modes", modes)


def _weighted_intensity(modes: Array, weights: Array) -> Array:
    return jnp.sum(weights[:, None, None] * (modes.real**2 + modes.imag**2), axis=0)


def _effective_mode_count(weights: Array) -> Array:
    p = weights / jnp.sum(weights)
    return 1.0 / jnp.sum(p**2)


def orthogonalize_modes(
    fields: Complex[Array, "modes y x"],
) -> tuple[Complex[Array, "modes y x"], Float[Array, " modes"]]:
    """The orthonormal modes and powers of an incoherent sum of fields.

    With `A` the `(M, H*W)` matrix of the fields and `A = U S V^H` its thin SVD, the
    new fields are `U^H A = S V^H`: a unitary mixing of the old ones, so the density
    matrix `A^H A` (and with it the intensity `sum |fields|**2`) is unchanged. The
    modes are the rows of `V^H` (unit power, mutually orthogonal) and the weights are
    `S**2`, each mode's power, in decreasing order. Rank-deficient inputs give
    zero weights (their modes are still orthonormal).

    **Arguments:**

    - `fields`: `(M, H, W)` complex, with `M <= H * W`.

    **Returns:**

    `(modes, weights)`: `(M, H, W)` orthonormal modes and `(M,)` powers, sorted by
    decreasing power, with `sum_m weights[m] |modes[m]|**2 == sum_m |fields[m]|**2`.
    """
    fields = complex_array("fields", fields, ndim=3)
    m, h, w = fields.shape
    if m > h * w:
        raise ValueError(f"`fields` must have at most H * W = {h * w} modes, got {m}")
    _, s, vh = jnp.linalg.svd(fields.reshape(m, h * w), full_matrices=False)
    return vh.reshape(m, h, w), s**2


def extend_modes(
    fields: Num[ArrayLike, "*modes y x"],
    num_modes: int,
    *,
    share: float = 0.05,
) -> tuple[Complex[Array, "num_modes y x"], Float[Array, " num_modes"]]:
    """Starting modes for a mixed-state run: the modes of `fields` plus new ones, same total power.

    A probe guess (one field, or an incoherent sum of several) becomes `num_modes`
    orthonormal modes: first the modes of `fields` (`orthogonalize_modes`), then the
    strongest of them times low-order polynomials of the position (`x`, `y`, `x**2`,
    `xy`, `y**2`, ...; about its intensity centroid, in units of its rms width), each
    made orthogonal to the modes before it (Gram-Schmidt). These are the smooth changes
    that partial coherence adds to a beam (a Gaussian–Schell beam's next modes are its
    first one times Hermite polynomials: `x`, `y`, ...); a reconstruction then refines
    the modes and their weights. Computed on the host in float64 (it looks at the
    values, so not inside `jit`).

    **Arguments:**

    - `fields`: `(y, x)` or `(modes, y, x)` complex probe fields.
    - `num_modes`: the number of modes to return, at least the number of fields.
    - `share`: the fraction of the total power each new mode starts with, in `[0, 1)`
      (default 0.05); at most half the power goes to new modes. The given modes keep
      their relative powers in the rest.

    **Returns:**

    `(modes, weights)`: `(num_modes, y, x)` orthonormal modes, the given ones first
    (`modes[0]` is `fields` itself for one field, up to its norm and a global phase),
    and their powers, summing to the power of `fields`. Wrap them as
    `MixedStateProbe(CoherentModeSet(modes, weights, wavelength, dx))`.
    """
    fields = np.asarray(fields)
    fields = fields[None] if fields.ndim == 2 else fields
    if fields.ndim != 3:
        raise ValueError(f"`fields` must have shape (y, x) or (modes, y, x), got shape {fields.shape}")
    if not num_modes >= fields.shape[0]:
        raise ValueError(f"`num_modes` must be at least the number of fields, {fields.shape[0]}, got {num_modes}")
    if not 0 <= share < 1:
        raise ValueError(f"`share` must lie in [0, 1), got {share}")
    # The dtype JAX stores these fields in (numpy's complex128 is complex64 without x64).
    dtype = jnp.result_type(jnp.asarray(fields).dtype, jnp.complex64)
    orthogonal = orthogonalize_modes(jnp.asarray(fields.astype(np.complex128)))
    given, powers = (np.asarray(a, dtype=np.complex128) for a in orthogonal)
    powers = powers.real
    u, v = centroid_coordinates(np.abs(given[0]) ** 2)
    basis = list(given) + list(polynomial_modes(given, u, v, num_modes - len(given)))
    extra = num_modes - len(powers)
    share = min(share, 0.5 / max(extra, 1))
    weights = np.concatenate([powers * (1 - share * extra), np.full(extra, share * float(np.sum(powers)))])
    return jnp.asarray(np.stack(basis), dtype=dtype), jnp.asarray(weights)


def centroid_coordinates(intensity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates about the intensity centroid, in units of its rms width along each axis."""
    height, width = intensity.shape
    intensity = intensity / np.sum(intensity)
    y, x = np.mgrid[:height, :width].astype(np.float64)
    cx, cy = np.sum(x * intensity), np.sum(y * intensity)
    sx = np.sqrt(np.sum((x - cx) ** 2 * intensity)) or 1.0
    sy = np.sqrt(np.sum((y - cy) ** 2 * intensity)) or 1.0
    return (x - cx) / sx, (y - cy) / sy


def polynomial_modes(given: np.ndarray, u: np.ndarray, v: np.ndarray, count: int) -> np.ndarray:
    """`count` unit fields `given[0] * u**a * v**b`, orthogonal to `given` and to each other.

    The one builder of polynomial modes: the monomials are taken by increasing degree
    (`u`, `v`, `u**2`, `u v`, `v**2`, ...) and made orthonormal by Gram-Schmidt against
    `given` (orthonormal fields) and the modes before them; a monomial that adds nothing
    new (a field on one row has no `v` variation) is skipped. Used for the stand-in modes
    of a partially coherent focused probe (`janssen.io.make_focused_probe`, `u, v` the
    pupil frequencies) and for the new modes of a mixed-state start (`extend_modes`, `u, v`
    about the intensity centroid). Host NumPy, float64.

    **Arguments:**

    - `given`: `(k, y, x)` orthonormal complex fields, `k >= 1`; the monomials multiply `given[0]`.
    - `u`, `v`: `(y, x)` real coordinates.
    - `count`: the number of new modes, >= 0.

    **Returns:**

    `(count, y, x)` complex128 orthonormal fields.
    """
    given = np.asarray(given, dtype=np.complex128)
    height, width = given.shape[-2:]
    basis, new = list(given), []
    order = 1
    while len(new) < count:
        if order > height + width:
            raise ValueError(f"`fields` must vary enough to make {count} new modes, got {len(new)}")
        for i in range(order + 1):
            candidate = given[0] * u ** (order - i) * v**i
            # Twice: one classical Gram-Schmidt pass leaves rounding-level overlaps.
            for _ in range(2):
                for mode in basis:
                    candidate = candidate - np.vdot(mode, candidate) * mode
            norm = np.linalg.norm(candidate)
            if norm > 1e-6 * np.linalg.norm(given[0] * u ** (order - i) * v**i) and len(new) < count:
                basis.append(candidate / norm)
                new.append(candidate / norm)
        order += 1
    return np.stack(new) if new else np.zeros((0, height, width), np.complex128)


class MixedStateProbe(AbstractProbe):
    """A partially coherent probe: a `CoherentModeSet` refined as a mixed state.

    `fields()` are `sqrt(weights) * modes`. Engines that update the fields (the PIE
    family) rebuild the probe through `with_fields`, which re-orthogonalises them
    (`orthogonalize_modes`), so the weights are refined along with the modes.
    `modes` and `weights` are array fields: gradient engines refine them directly
    (`trainable=["probe.modes", "probe.weights"]`). Thibault & Menzel (2013).

    **Arguments:**

    - `mode_set`: the starting `CoherentModeSet`.
    """

    modes: Complex[Array, "modes y x"]
    weights: Float[Array, " _modes"]
    wavelength: Float[Array, ""]
    dx: Float[Array, "2"] | None
    z_position: Float[Array, ""]

    def __init__(self, mode_set: CoherentModeSet):
        self.modes = mode_set.modes
        self.weights = mode_set.weights
        self.wavelength = mode_set.wavelength
        self.dx = mode_set.dx
        self.z_position = mode_set.z_position

    def __check_init__(self):
        _check_modes_and_weights(self.modes, self.weights)

    @property
    def mode_set(self) -> CoherentModeSet:
        """The probe's modes and weights as a `CoherentModeSet` (which needs the probe's pitch)."""
        if self.dx is None:
            raise ValueError(
                "`mode_set` needs the probe's pixel pitch, and this probe has none of its own (a microscope's "
                "probe takes its sample's): use `microscope.sample_plane_probe().mode_set`"
            )
        return CoherentModeSet(self.modes, self.weights, self.wavelength, self.dx, self.z_position)

    @property
    def num_modes(self) -> int:
        """Number of modes."""
        return self.modes.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """The grid shape `(H, W)`."""
        return self.modes.shape[-2:]

    @property
    def intensity(self) -> Float[Array, "y x"]:
        """Total intensity `sum_m weights[m] |modes[m]|**2`."""
        return _weighted_intensity(self.modes, self.weights)

    def fields(self) -> Complex[Array, "modes y x"]:
        # A gradient step can push a weight below zero: such modes are dark. The inner
        # `where` keeps sqrt's infinite slope at 0 out of the gradient (no NaN).
        positive = self.weights > 0
        amplitude = jnp.where(positive, jnp.sqrt(jnp.where(positive, self.weights, 1.0)), 0.0)
        amplitude = amplitude.astype(self.modes.dtype)
        return amplitude[:, None, None] * self.modes

    def with_fields(self, fields: Complex[Array, "modes y x"]) -> "MixedStateProbe":
        modes, weights = orthogonalize_modes(fields)
        return eqx.tree_at(lambda p: (p.modes, p.weights), self, (modes.astype(self.modes.dtype), weights))


# ---- Gaussian–Schell model ----------------------------------------------------------------


def gaussian_schell_modes(
    shape: tuple[int, int],
    dx: PairLike,
    wavelength: ScalarLike,
    *,
    beam_width: PairLike,
    coherence_width: PairLike,
    num_modes: int,
    z_position: ScalarLike = 0.0,
) -> CoherentModeSet:
    """The coherent modes of a Gaussian–Schell-model source, in two dimensions.

    The source has intensity `S(r) = exp(-x**2 / (2 sx**2) - y**2 / (2 sy**2))`
    (`beam_width = (sx, sy)`) and degree of coherence
    `exp(-dx**2 / (2 mx**2) - dy**2 / (2 my**2))` (`coherence_width = (mx, my)`). Its
    cross-spectral density separates in x and y, and along each axis (Mandel & Wolf
    §7.5; Starikov & Wolf 1982), with `a = 1 / (4 s**2)`, `b = 1 / (2 m**2)` and
    `c = sqrt(a**2 + 2 a b)`, the eigenfunctions are Hermite–Gauss functions
    `H_n(sqrt(2c) x) exp(-c x**2)` with eigenvalues proportional to
    `q**n`, `q = b / (a + b + c)`. The 2-D modes are the products
    `H_m(sqrt(2c_x) x) H_n(sqrt(2c_y) y) exp(-c_x x**2 - c_y y**2)` with eigenvalues
    `q_x**m q_y**n`; the `num_modes` largest are kept, in decreasing order.

    The modes are normalised to unit power on the grid and the weights to a total of 1.
    Everything is differentiable in `beam_width` and `coherence_width` (which may be
    traced arrays); the choice of the kept modes is not (it is piecewise constant).

    **Arguments:**

    - `shape`: grid `(H, W)`; the origin is pixel `(H // 2, W // 2)`.
    - `dx`: pixel pitch in metres, scalar or `(x, y)`, > 0.
    - `wavelength`: metres, > 0 (carried by the result).
    - `beam_width`: rms width `s` of the intensity in metres, scalar or `(x, y)`, > 0.
    - `coherence_width`: rms width `m` of the degree of coherence in metres, scalar or
      `(x, y)`, > 0.
    - `num_modes`: number of modes kept, >= 1.
    - `z_position`: axial position in metres (default 0).

    **Returns:**

    A `CoherentModeSet` of `num_modes` modes.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"`shape` must be a pair of positive ints (H, W), got {shape}")
    if not isinstance(num_modes, (int, np.integer)) or num_modes < 1:
        raise ValueError(f"`num_modes` must be an int >= 1, got {num_modes!r}")
    dx = pair("dx", dx)
    beam_width = pair("beam_width", beam_width)
    coherence_width = pair("coherence_width", coherence_width)
    for name, value in (("dx", dx), ("beam_width", beam_width), ("coherence_width", coherence_width)):
        check_positive(name, value)
    ratio, c = gsm_parameters(beam_width, coherence_width)
    x = centred_coordinates(shape[1], dx[0])
    y = centred_coordinates(shape[0], dx[1])
    hx = _hermite_functions(x * jnp.sqrt(2 * c[0]), num_modes)
    hy = _hermite_functions(y * jnp.sqrt(2 * c[1]), num_modes)
    order_x, order_y = _largest_products(jnp.log(ratio), num_modes)
    modes = hy[order_y][:, :, None] * hx[order_x][:, None, :]
    modes = modes / jnp.sqrt(jnp.sum(modes**2, axis=(1, 2), keepdims=True))
    weights = ratio[0] ** order_x * ratio[1] ** order_y
    return CoherentModeSet(modes, weights / jnp.sum(weights), wavelength, dx, z_position)


def gsm_parameters(
    beam_width: Float[Array, "*axes"], coherence_width: Float[Array, "*axes"]
) -> tuple[Float[Array, "*axes"], Float[Array, "*axes"]]:
    """The 1-D Gaussian–Schell eigenvalue ratio `q` and mode parameter `c`.

    With `a = 1 / (4 beam_width**2)`, `b = 1 / (2 coherence_width**2)`:
    `c = sqrt(a**2 + 2 a b)` (mode `n` is `H_n(sqrt(2c) x) exp(-c x**2)`) and
    `q = b / (a + b + c)` (eigenvalue `n` is proportional to `q**n`).

    **Arguments:**

    - `beam_width`, `coherence_width`: rms widths of intensity and degree of coherence.

    **Returns:**

    `(q, c)`, broadcast over the inputs.
    """
    a = 1.0 / (4.0 * beam_width**2)
    b = 1.0 / (2.0 * coherence_width**2)
    c = jnp.sqrt(a**2 + 2.0 * a * b)
    return b / (a + b + c), c


def _hermite_functions(u: Float[Array, " n"], count: int) -> Float[Array, "count n"]:
    """`psi_k(u) = H_k(u) exp(-u**2 / 2) / sqrt(2**k k! sqrt(pi))` for `k < count`.

    The three-term recurrence of the *normalised* functions never forms `H_k` or `k!`,
    which overflow long before the functions themselves do.
    """
    psi0 = jnp.exp(-(u**2) / 2) * np.pi**-0.25
    psi1 = np.sqrt(2.0) * u * psi0

    def step(carry, k):
        previous, current = carry
        following = jnp.sqrt(2.0 / (k + 1)) * u * current - jnp.sqrt(k / (k + 1)) * previous
        return (current, following), current

    ks = jnp.arange(1, count + 1, dtype=u.dtype)
    _, rest = jax.lax.scan(step, (psi0, psi1), ks)
    return jnp.concatenate([psi0[None], rest[: count - 1]], axis=0)


def _largest_products(log_ratio: Float[Array, "2"], count: int) -> tuple[Array, Array]:
    """Orders `(m, n)` of the `count` largest `q_x**m q_y**n`, in decreasing order.

    Exact ties (an isotropic source) would be ordered by rounding noise, which a small
    change of a width could reorder; quantising the key first keeps the order fixed
    (ties go to the lower x order) so the result is smooth in the widths.
    """
    m, n = jnp.meshgrid(jnp.arange(count), jnp.arange(count), indexing="ij")
    m, n = m.reshape(-1), n.reshape(-1)
    key = jax.lax.stop_gradient(m * log_ratio[0] + n * log_ratio[1])
    key = jnp.round(key * 1e4)
    _, index = jax.lax.top_k(key, count)
    return m[index], n[index]


# ---- Schell-model sources (numerical) ---------------------------------------------------

# Separable terms of the cross-spectral density kept before the eigendecomposition (at
# least; `4 * count` when more modes are asked for).
_MIN_TERMS = 128


def schell_modes(
    field: Complex[Array, "y x"],
    coordinates: tuple[Float[Array, " x"], Float[Array, " y"]],
    coherence_width: Float[Array, "2"],
    count: int,
    *,
    envelope_width: Float[Array, "2"] | None = None,
    support: Float[Array, "2"] | None = None,
) -> tuple[Complex[Array, "count y x"], Float[Array, " count"]]:
    """The strongest coherent modes of a Schell-model field, computed numerically.

    The one builder of Schell-model modes. The cross-spectral density is
    `W(r1, r2) = A(r1) conj(A(r2)) g(r1) g(r2) mu(r1 - r2)`, with `A = field`, a separable
    amplitude `g(x, y) = g_x(x) g_y(y)`, `g_a(t) = [|t| <= support_a] exp(-t**2 / (4 e_a**2))`
    (`e = envelope_width`; no envelope or no support when `None`), and a Gaussian degree of
    coherence `mu(d) = exp(-d_x**2 / (2 m_x**2) - d_y**2 / (2 m_y**2))` (`m = coherence_width`).
    Each axis kernel `g_a(t1) g_a(t2) mu_a(t1 - t2)` is diagonalised on the grid; the
    strongest products of axis eigenvectors times `field` are incoherent terms of `W`,
    whose strongest orthonormal modes come from the small Gram matrix (the method of
    snapshots). With `field = 1` and no support this is the Gaussian–Schell model, whose
    closed form is `gaussian_schell_modes` (they agree to rounding, tested);
    `janssen.io.make_focused_probe` uses it for a lens lit by a partially coherent beam.

    **Arguments:**

    - `field`: `(y, x)` complex amplitude `A`.
    - `coordinates`: `(x, y)`, the grid's coordinates along each axis (any unit shared
      with the widths).
    - `coherence_width`: `(m_x, m_y)`, > 0.
    - `count`: the number of modes, >= 1 (static).
    - `envelope_width`: `(e_x, e_y)` or `None`.
    - `support`: `(s_x, s_y)` half-widths outside which `g` vanishes, or `None`.

    **Returns:**

    `(modes, weights)`: `(count, y, x)` orthonormal modes in decreasing order of power, the
    first with the phase of `field`, and their powers normalised to sum to 1.
    """
    x, y = coordinates
    envelope = (None, None) if envelope_width is None else (envelope_width[0], envelope_width[1])
    limit = (None, None) if support is None else (support[0], support[1])
    lam_x, vec_x = _axis_modes(x, limit[0], coherence_width[0], envelope[0])
    lam_y, vec_y = _axis_modes(y, limit[1], coherence_width[1], envelope[1])
    # W = A conj(A) (Kx (x) Ky): each product of axis eigenvectors, times A, is one
    # incoherent term of W; the strongest terms carry all but a negligible part of it.
    products = (lam_y[:, None] * lam_x[None, :]).ravel()
    terms_kept = min(products.size, max(_MIN_TERMS, 4 * count))
    strength, index = jax.lax.top_k(products, terms_kept)
    iy, ix = jnp.divmod(index, lam_x.size)
    terms = vec_y.T[iy][:, :, None] * vec_x.T[ix][:, None, :]
    fields = ((jnp.sqrt(strength)[:, None, None] * terms) * field[None]).astype(field.dtype)
    kept, eigenvalues = _strongest_modes(fields, count)
    weights = eigenvalues / jnp.sum(eigenvalues)
    # An eigenmode's phase is arbitrary; give the strongest the field's (its coherent
    # limit is then exactly the field).
    overlap = jnp.vdot(kept[0], field)
    kept = kept.at[0].multiply(overlap / jnp.maximum(jnp.abs(overlap), jnp.finfo(weights.dtype).tiny))
    return kept, weights


def _strongest_modes(fields: Complex[Array, "k y x"], count: int) -> tuple[Complex[Array, "count y x"], Array]:
    """The `count` strongest orthonormal modes of `sum_k fields[k] fields[k]^H`, and their powers.

    The method of snapshots: with `F` the `(k, H*W)` matrix of the fields, the
    eigenvectors `u` of the small Gram matrix `F F^H` give the modes `F^H u / sqrt(lambda)`
    with the same eigenvalues `lambda`. For a few modes out of many fields this is far
    cheaper than the SVD of `F` (`orthogonalize_modes`), and as accurate for the strong
    modes.
    """
    flat = fields.reshape(fields.shape[0], -1)
    gram = flat @ jnp.conj(flat).T
    eigenvalues, vectors = jnp.linalg.eigh(gram)
    eigenvalues, vectors = eigenvalues[::-1][:count], vectors[:, ::-1][:, :count]
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    modes = jnp.conj(vectors).T @ flat
    modes = modes / jnp.maximum(jnp.linalg.norm(modes, axis=1, keepdims=True), jnp.finfo(eigenvalues.dtype).tiny)
    return modes.reshape(count, *fields.shape[1:]), eigenvalues


def _axis_modes(
    t: Float[Array, " n"],
    limit: Float[Array, ""] | None,
    coherence: Float[Array, ""],
    envelope: Float[Array, ""] | None,
) -> tuple[Float[Array, " n"], Float[Array, "n n"]]:
    """Eigenvalues and eigenvectors (columns) of one axis's kernel `g(t1) g(t2) mu(t1 - t2)`.

    With a support the kernel vanishes outside `|t| <= limit`, where the field can be
    non-zero, so the eigenvectors vanish there too and few of them represent the kernel.
    """
    amplitude = jnp.ones_like(t) if limit is None else (jnp.abs(t) <= limit).astype(t.dtype)
    if envelope is not None:
        amplitude = amplitude * jnp.exp(-(t**2) / (4 * envelope**2))
    difference = t[:, None] - t[None, :]
    kernel = amplitude[:, None] * amplitude[None, :] * jnp.exp(-(difference**2) / (2 * coherence**2))
    eigenvalues, eigenvectors = jnp.linalg.eigh(kernel)
    return jnp.maximum(eigenvalues, 0.0), eigenvectors
