"""`Convergence`: when a run has stopped improving."""

from collections.abc import Sequence

import equinox as eqx
import numpy as np
from jaxtyping import ArrayLike


class Convergence(eqx.Module):
    """Stop a run when the data residual has stopped falling.

    The losses the engines report are RMS amplitude residuals `e`; the R factor
    `R = sum (|Psi| - sqrt(I))**2 / sum I` is proportional to `e**2`. The run has
    converged when the best R of the last `window` iterations is less than `rtol`
    (relative) below the best R before them:
    `1 - (min(e[-window:]) / min(e[:-window]))**2 < rtol`. Taking minima makes the test
    indifferent to the small oscillations of sequential PIE sweeps. A run is never
    stopped before `window + 1` iterations.

    **Arguments:**

    - `rtol`: relative decrease of R per `window` iterations below which the run stops,
      >= 0 (default 1e-3: R still falling by 0.1 % per 10 iterations).
    - `window`: iterations compared, >= 1 (default 10).
    """

    rtol: float = 1e-3
    window: int = eqx.field(default=10, static=True)

    def __check_init__(self):
        if not (np.isfinite(self.rtol) and self.rtol >= 0):
            raise ValueError(f"`rtol` must be a finite number >= 0, got {self.rtol}")
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"`window` must be an integer >= 1, got {self.window!r}")

    def __call__(self, losses: Sequence[float] | ArrayLike) -> bool:
        """Whether the run has converged, given every loss so far (host-side)."""
        values = np.asarray(losses, dtype=np.float64)
        if values.size <= self.window or not np.all(np.isfinite(values[-self.window - 1 :])):
            return False
        before, recent = np.min(values[: -self.window]), np.min(values[-self.window :])
        if not before > 0:
            return True
        return bool(1.0 - (recent / before) ** 2 < self.rtol)
