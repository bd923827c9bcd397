"""`PhaseFieldSearch`: a smooth phase across the whole object, fitted to the data on a coarse basis.

On a wide field PIE's local updates leave the object with a smooth phase error, periods of
several probe diameters up to the field's width, that they shrink only slowly: on a 620²
object scanned at 4000 positions by a 24-pixel probe (`simulate(64, 4000, photons=6e4)`),
the default schedule without this engine ended at object error 0.093, the difference to
the truth a phase of ±0.2 rad varying over hundreds of pixels. The data do pin it: at each position a smooth phase
is locally a tilt and a curvature of the exit wave, which move and blur that position's
diffraction pattern a little, differently at every position.

This engine fits that phase as a few numbers. The object's phase correction is a sum of
separable cosines (a type-II discrete cosine basis over the object array, orders `0 ..
order - 1` in each direction, the constant left out), and the probe takes a quadratic phase
of its own (three numbers: the curvature that the object's average curvature trades against,
as in `CurvatureSearch`). Each step is a Levenberg-Marquardt step on the RMS amplitude
residual, accepted only where the residual falls.

The Jacobian is built from five columns per frame, not one per basis function: within the
probe's window a smooth phase is, to second order, `t_1 u_x + t_2 u_y + t_3 u_x**2 + t_4 u_x
u_y + t_5 u_y**2` (`u` the probe-frame coordinates; the constant is a phase of the whole
exit wave and changes no intensity), so each frame's linearised residual in its five local
coefficients `t` is found by five directional derivatives of the prediction along those
phases on the probe, for a whole block of frames at once, and the basis enters only through
the exact second-order Taylor coefficients of each cosine at each frame's centre. The
normal equations `sum_f A_f^T G_f A_f` (`G_f` the frame's 5 x 5 Gram matrix, `A_f` the map
from the parameters to its local coefficients) then cost about seven predictions of the data
whatever the order; the trial step applies the whole basis exactly.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .curvature import AbstractMarquardtSearch, Trial, _Blocks, check_marquardt, marquardt_start

# The local monomials in probe-frame coordinates u (pixels from the probe's centre pixel over
# the probe's larger side): u_x, u_y, u_x**2, u_x u_y, u_y**2.
_LOCAL = 5


class PhaseFieldState(eqx.Module):
    """State of `PhaseFieldSearch` between steps.

    **Arguments:**

    - `damping`: the current relative Levenberg-Marquardt damping (0-d).
    - `stalled`: how many steps in a row have been rejected or gained less than `rtol`
      (0-d int).
    - `on_grid`: whether the positions stay on the sample's pixel grid (decided in `init`,
      on the host: `janssen.invert._trainable.fixed_on_grid`).
    """

    damping: Float[Array, ""]
    stalled: Array
    on_grid: bool = eqx.field(default=False, static=True)


def _cosines(where: Array, n: int, order: int) -> tuple[Array, Array, Array]:
    """The type-II cosines over `n` pixels at pixel coordinates `where`, and their first and second derivatives.

    `cos(pi m (x + 1/2) / n)` for `m < order` (derivatives per pixel), each `(*where.shape, order)`.
    """
    k = (jnp.pi / n * jnp.arange(order, dtype=where.dtype)).reshape((1,) * where.ndim + (order,))  # rad / pixel
    angle = k * (where[..., None] + 0.5)
    values = jnp.cos(angle)
    return values, -k * jnp.sin(angle), -(k**2) * values


class PhaseFieldSearch(AbstractMarquardtSearch[PhaseFieldState]):
    """Fit a smooth phase across the object, with a quadratic phase on the probe, to the data.

    See the module docstring for the model: the object is multiplied by `exp(i phi)`,
    `phi(x, y) = sum c_mn cos(pi m (x + 1/2) / X) cos(pi n (y + 1/2) / Y)` over `0 <= m, n <
    order` except `m = n = 0` (`X`, `Y` the object's width and height in pixels; `c` in
    radians), and every probe mode by `exp(i (q_1 u_x**2 + q_2 u_x u_y + q_3 u_y**2))`.
    Meant as a stage after PIE on wide fields (see `janssen.invert.Stage` and
    `default_schedule`); it refines the object and the probe together and nothing else.

    **Arguments:**

    - `order`: cosines per direction (default 6: the shortest period is `2 X / 5`, 0.4 of
      the field). The local model needs the phase to be smooth over the probe, so keep the
      shortest period above a few probe widths.
    - `initial_damping`: the relative damping of the first step (default `1e-3`).
    - `patience`: stalled steps in a row after which the run stops (default 2): steps
      rejected, or accepted with a gain below `rtol`.
    - `rtol`: a step that lowers the mean squared residual by less than this fraction of
      it counts as stalled (default `1e-5`; on a 620² field the first step gained
      `2.8e-4`, the next ones `2.8e-6` and `1.4e-7`).
    - `eps`: the floor under the square root of the linearised residual, relative to the
      mean measured intensity (as `GaussNewton`'s; default `1e-6`).
    """

    models_detector: ClassVar[bool] = True

    order: int = eqx.field(default=6, static=True)
    initial_damping: float = 1e-3
    patience: int = eqx.field(default=2, static=True)
    rtol: float = 1e-5
    eps: float = 1e-6

    def __check_init__(self):
        if isinstance(self.order, bool) or not (isinstance(self.order, int) and self.order >= 2):
            raise ValueError(f"`order` must be an integer >= 2, got {self.order!r}")
        check_marquardt(self)
        if not (np.isfinite(self.rtol) and 0 <= self.rtol < 1):
            raise ValueError(f"`rtol` must lie in [0, 1), got {self.rtol}")

    @property
    def num_parameters(self) -> int:
        """`order**2 - 1` object coefficients and 3 probe coefficients."""
        return self.order**2 - 1 + 3

    def init(self, microscope, data, trainable):
        return PhaseFieldState(*marquardt_start(self, "a smooth phase", microscope, data, trainable))

    def _split(self, parameters: Float[Array, " p"]) -> tuple[Array, Array]:
        """The object's `(order, order)` cosine coefficients (`c_00 = 0`) and the probe's three."""
        grid = jnp.concatenate([jnp.zeros(1, parameters.dtype), parameters[: self.order**2 - 1]])
        return grid.reshape(self.order, self.order), parameters[self.order**2 - 1 :]

    def apply(self, microscope, parameters: Float[Array, " p"]):
        """`microscope` with `exp(i phi)` on its object and the quadratic phase on every probe mode."""
        obj = microscope.sample.sample
        real = obj.real.dtype
        coefficients, quadratic = self._split(parameters.astype(real))
        rows = _cosines(jnp.arange(obj.shape[0], dtype=real), obj.shape[0], self.order)[0]  # (y, n)
        columns = _cosines(jnp.arange(obj.shape[1], dtype=real), obj.shape[1], self.order)[0]  # (x, m)
        phi = rows @ coefficients.T @ columns.T  # c[m, n]: m along x (columns), n along y (rows)
        fields = microscope.probe.fields()
        on_probe = jnp.tensordot(quadratic, _monomials(fields.shape[-2:], real)[2:], axes=1)
        new = eqx.tree_at(lambda m: m.sample.sample, microscope, obj * jnp.exp(1j * phi).astype(obj.dtype))
        probe = microscope.probe.with_fields(fields * jnp.exp(1j * on_probe).astype(fields.dtype)[None])
        return eqx.tree_at(lambda m: m.probe, new, probe)

    def local_map(self, microscope) -> Float[Array, "npos 5 p"]:
        """Each frame's five local coefficients `t` as a linear map of the parameters.

        The second-order Taylor coefficients of every cosine at the centre of the frame's
        probe window (`microscope.locate`), in the monomials of `_monomials`, and the
        probe's quadratic coefficients added to the second-order ones.
        """
        obj_shape = microscope.sample.sample.shape
        probe_shape = microscope.probe_shape
        real = microscope.sample.sample.real.dtype
        corners, subpixel = jax.vmap(microscope.locate)(microscope.positions)
        centres = corners.astype(real) + subpixel.astype(real)
        cx = centres[:, 0] + probe_shape[1] // 2
        cy = centres[:, 1] + probe_shape[0] // 2
        x, x1, x2 = _cosines(cx, obj_shape[1], self.order)  # (npos, order): index m
        y, y1, y2 = _cosines(cy, obj_shape[0], self.order)  # index n
        scale = float(max(probe_shape))
        outer = lambda a, b: (a[:, :, None] * b[:, None, :]).reshape(a.shape[0], -1)[:, 1:]  # noqa: E731
        rows = [
            scale * outer(x1, y),
            scale * outer(x, y1),
            scale**2 * outer(x2, y) / 2,
            scale**2 * outer(x1, y1),
            scale**2 * outer(x, y2) / 2,
        ]
        objects = jnp.stack(rows, axis=1)  # (npos, 5, order**2 - 1)
        probe = jnp.broadcast_to(jnp.eye(_LOCAL, 3, -2, dtype=real), (objects.shape[0], _LOCAL, 3))
        return jnp.concatenate([objects, probe], axis=2)

    def equations(self, microscope, blocks: _Blocks) -> tuple[Array, Array, Array]:
        """`J^T J`, `J^T r` and `sum r_exact**2` of the amplitude residual in the parameters at 0 (local model)."""
        real = blocks.data.intensities.dtype
        fields = microscope.probe.fields()
        monomials = _monomials(fields.shape[-2:], real)

        def block(inputs):
            ids, alive = inputs
            terms = blocks._terms(ids)

            def residual(local):
                phase = jnp.tensordot(local, monomials, axes=1)
                probe = microscope.probe.with_fields(fields * jnp.exp(1j * phase).astype(fields.dtype)[None])
                predicted = eqx.tree_at(lambda m: m.probe, microscope, probe).predict(ids, on_grid=blocks.on_grid)
                return terms.smooth(predicted), predicted

            r, jvp, predicted = jax.linearize(residual, jnp.zeros(_LOCAL, real), has_aux=True)
            columns = jax.vmap(jvp)(jnp.eye(_LOCAL, dtype=real)) * alive[None, :, None, None]  # (5, B, H, W)
            gram = jnp.einsum("ibhw,jbhw->bij", columns, columns)
            gradient = jnp.einsum("ibhw,bhw->bi", columns, alive[:, None, None] * r)
            return gram, gradient, jnp.sum(alive * terms.frame_sums(predicted))

        gram, gradient, squares = jax.lax.map(block, (blocks.index, blocks.live))
        local = self.local_map(microscope)[blocks.index.ravel()]  # padding frames have zero Gram
        gram = gram.reshape(-1, _LOCAL, _LOCAL)
        gradient = gradient.reshape(-1, _LOCAL)
        normal = jnp.einsum("fia,fij,fjb->ab", local, gram, local)
        return normal, jnp.einsum("fia,fi->a", local, gradient), jnp.sum(squares)

    def advance(self, state: PhaseFieldState, trial: Trial) -> PhaseFieldState:
        gained = trial.accept & (trial.trial_loss < (1 - self.rtol) * trial.loss)
        stalled = jnp.where(gained, 0, state.stalled + 1).astype(jnp.int32)
        return PhaseFieldState(trial.damping, stalled, state.on_grid)

    def terminate(self, state: PhaseFieldState, losses: Float[Array, " n"]) -> Bool[Array, ""]:
        del losses
        return state.stalled >= self.patience


def _monomials(shape: tuple[int, int], dtype) -> Array:
    """`u_x, u_y, u_x**2, u_x u_y, u_y**2` over a probe window, `(5, y, x)`.

    `u`: pixels from the window's centre pixel over its larger side.
    """
    y, x = np.indices(shape)
    scale = float(max(shape))
    ux = (x - shape[1] // 2) / scale
    uy = (y - shape[0] // 2) / scale
    return jnp.asarray(np.stack([ux, uy, ux**2, ux * uy, uy**2]), dtype)


#: Bounds of `phase_field_order`.
_ORDERS = (2, 12)


def probe_width(microscope) -> float:
    """The probe's width in pixels: `2 sqrt(2)` times the RMS radius of its intensity (all modes; on the host).

    For a uniformly lit disc this is its diameter. The focused probes of `janssen.io.simulate`
    measure about 1.1 times their nominal disc diameter (27 pixels for 24).
    """
    intensity = np.sum(np.abs(np.asarray(microscope.probe.fields())) ** 2, axis=0)
    total = float(np.sum(intensity))
    if not (np.isfinite(total) and total > 0):
        raise ValueError(f"the probe's total intensity must be finite and > 0, got {total}")
    y, x = np.indices(intensity.shape)
    weights = intensity / total
    cx, cy = float(np.sum(weights * x)), float(np.sum(weights * y))
    radius2 = float(np.sum(weights * ((x - cx) ** 2 + (y - cy) ** 2)))
    return 2.0 * np.sqrt(2.0 * radius2)


def phase_field_order(microscope) -> int:
    """The `PhaseFieldSearch` order for `microscope`: the shortest period about four probe widths.

    `1 + floor(S / (2 w))` with `S` the object's smaller side and `w` its `probe_width`
    (the cosines of orders below `K` have periods down to `2 S / (K - 1)`), between 2 and
    12. From the data-derived starts (`init_far_field_microscope`): 3 on the small preset
    (a 164² object, probe 27.6 px wide), 7 on the large one (1390², 100.7 px), 12 on a 620²
    object scanned at 4000 positions by a 26.5 px probe.
    """
    side = min(microscope.sample.sample.shape)
    order = 1 + int(side // (2.0 * probe_width(microscope)))
    return int(np.clip(order, *_ORDERS))
