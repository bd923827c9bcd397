"""`ZernikeAberration`: a pupil phase expanded on Noll-indexed Zernike polynomials."""

import math
from typing import ClassVar

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ..._custom_types import ScalarLike
from ..._validate import check_finite, check_positive, real_array
from .._wavefront import OpticalWavefront
from .base import AbstractElement, apply, grid_coordinates


def noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order `n` and signed azimuthal frequency `m` of Noll's index `j >= 1`.

    Row `n` holds the indices `n (n + 1) / 2 + 1 ... (n + 1) (n + 2) / 2`, ordered by
    increasing `|m|`; an even `j` takes the cosine (`m > 0`), an odd `j` the sine (`m < 0`).
    """
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    k = j - n * (n + 1) // 2 - 1  # position within the row, 0..n
    m_abs = 2 * ((k + 1) // 2) if n % 2 == 0 else 1 + 2 * (k // 2)
    if m_abs == 0:
        return n, 0
    return n, m_abs if j % 2 == 0 else -m_abs


def radial_coefficients(n: int, m_abs: int) -> list[tuple[int, int]]:
    """`(coefficient, power)` pairs of the radial polynomial `R_n^|m|(rho)` (closed-form sum)."""
    terms = []
    for s in range((n - m_abs) // 2 + 1):
        c = (-1) ** s * math.factorial(n - s)
        c //= math.factorial(s) * math.factorial((n + m_abs) // 2 - s) * math.factorial((n - m_abs) // 2 - s)
        terms.append((c, n - 2 * s))
    return terms


def zernike(j: int, rho: Float[Array, "*s"], theta: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """Noll-normalised Zernike polynomial `Z_j(rho, theta)`: `(1/pi) int_disk Z_i Z_j = delta_ij`."""
    n, m = noll_to_nm(j)
    # Python-int powers lower to `integer_pow`, whose derivative is finite at rho = 0.
    radial = sum(c * rho**p for c, p in radial_coefficients(n, abs(m)))
    if m == 0:
        return math.sqrt(n + 1) * radial
    angular = jnp.cos(m * theta) if m > 0 else jnp.sin(-m * theta)
    return math.sqrt(2 * (n + 1)) * radial * angular


class ZernikeAberration(AbstractElement):
    """A pure phase aberration `phi = sum_j c_j Z_j(rho, theta)` on Noll's Zernike polynomials.

    The polynomials are Noll-normalised (Noll 1976, J. Opt. Soc. Am. 66, 207): over the
    unit disk `(1/pi) int Z_i Z_j = delta_ij`, so `c_j` is the RMS phase, in radians, of
    term `j` across the pupil. `Z_1` is piston, `Z_2`, `Z_3` tilt in x and y, `Z_4`
    defocus `sqrt(3) (2 rho**2 - 1)`, `Z_5`, `Z_6` astigmatism, `Z_7`, `Z_8` coma,
    `Z_11` spherical aberration. The unit disk is the circle of radius `pupil_radius`
    around the grid centre; `rho = r / pupil_radius`, `theta = atan2(y, x)`.

    The transmission is `exp(i phi)` everywhere: the polynomials are continued outside
    the pupil and **no** zero is applied there. Combine with a `CircularAperture` to
    bound the pupil.

    **Arguments:**

    - `coefficients`: `(J,)` coefficients in radians of `Z_1 ... Z_J`.
    - `pupil_radius`: radius of the unit disk in metres, > 0.
    """

    aliases: ClassVar[dict[str, str | tuple[str, ...]]] = {"aberrations": "coefficients"}

    coefficients: Float[Array, " nterms"]
    pupil_radius: Float[Array, ""]

    def __init__(self, coefficients: Float[Array, " nterms"], pupil_radius: ScalarLike):
        self.coefficients = real_array("coefficients", coefficients)
        self.pupil_radius = real_array("pupil_radius", pupil_radius, shape=())

    def __check_init__(self):
        if self.coefficients.ndim != 1 or self.coefficients.shape[0] == 0:
            raise ValueError(
                f"`coefficients` must be a non-empty 1-d array (Noll j = 1..J), got shape {self.coefficients.shape}"
            )
        check_finite("coefficients", self.coefficients)
        check_positive("pupil_radius", self.pupil_radius)

    def phase(self, wavefront: OpticalWavefront) -> Float[Array, "y x"]:
        """The phase `sum_j c_j Z_j` in radians on the grid of `wavefront`."""
        x, y = grid_coordinates(wavefront)
        rho = jnp.sqrt(x**2 + y**2) / self.pupil_radius
        theta = jnp.arctan2(y, x)
        terms = [self.coefficients[j - 1] * zernike(j, rho, theta) for j in range(1, self.coefficients.shape[0] + 1)]
        return sum(terms[1:], terms[0])

    def transmission(self, wavefront: OpticalWavefront) -> Complex[Array, "y x"]:
        return jnp.exp(1j * self.phase(wavefront))

    def magnification(self) -> Float[Array, ""]:
        return jnp.ones((), self.pupil_radius.dtype)

    def __call__(self, wavefront: OpticalWavefront) -> OpticalWavefront:
        return apply(self, wavefront)
