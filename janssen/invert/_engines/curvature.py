"""`CurvatureSearch`: the object's phase curvature against the probe's, fitted to the data as three numbers.

Put a quadratic phase `Q(s) = a s_x**2 + b s_x s_y + c s_y**2` on the object (`s` in
object pixels from its centre pixel) and `-Q(r)` on the probe (`r` in probe pixels from
its centre pixel). At a position `d` (pixels) the exit wave is multiplied by
`exp(i (Q(r + d) - Q(r)))`, and `Q(r + d) - Q(r)` is *linear* in `r`: each exit wave gets
a phase ramp whose slope is proportional to its position, which moves its diffraction
pattern by an amount proportional to that position and changes nothing else. The data
see such a change only through those small moves, so PIE's local updates remove it
slowly: on the large preset (a 1390 x 1390 object, 256 x 256 probe, 1000 positions) the
object that rPIE, small-step ePIE and batched mPIE leave after 99 iterations differs
from the truth mostly by a linear and a quadratic phase (error 0.085; 0.073 with the best ramp removed; 0.061 with
the best quadratic removed as well, both fitted against the truth).

This engine fits `(a, b, c)` to the data directly: each step linearises the amplitude
residual in the three numbers at the current microscope, solves the damped 3 x 3 normal
equations (Levenberg-Marquardt with Marquardt's diagonal scaling) and keeps the trial
only if the residual falls. The normal equations are summed over blocks of frames, each
linearised on its own, so the step holds one block's linearisation at a time: a step
costs about five predictions of the data and little memory beyond the frames.
"""

import abc
from typing import Any, ClassVar, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..._data import MicroscopeData, frames_within
from .._residual import AmplitudeResidual, safe_sqrt
from .._trainable import fixed_on_grid, refines
from .base import AbstractEngine

_MIN_DAMPING, _MAX_DAMPING = 1e-10, 1e10
_RAISE, _LOWER = 10.0, 1.0 / 3.0


class CurvatureState(eqx.Module):
    """State of `CurvatureSearch` between steps.

    **Arguments:**

    - `damping`: the current relative Levenberg-Marquardt damping (0-d).
    - `rejected`: how many trial steps in a row have been rejected (0-d int).
    - `on_grid`: whether the positions stay on the sample's pixel grid, so that the
      predictions skip the probe's sub-pixel moves (decided in `init`, on the host:
      `janssen.invert._trainable.fixed_on_grid`).
    """

    damping: Float[Array, ""]
    rejected: Array
    on_grid: bool = eqx.field(default=False, static=True)


def _centred_pixels(shape: tuple[int, int], dtype) -> tuple[Array, Array]:
    y, x = np.indices(shape)
    return jnp.asarray(x - shape[1] // 2, dtype), jnp.asarray(y - shape[0] // 2, dtype)


def _quadratic(coefficients: Float[Array, "3"], x: Array, y: Array) -> Array:
    a, b, c = coefficients
    return a * x**2 + b * x * y + c * y**2


_S = TypeVar("_S")


class AbstractMarquardtSearch(AbstractEngine[_S]):
    """A Levenberg-Marquardt search in a few numbers `p` that move the object and the probe together.

    A subclass says how the numbers act (`apply(microscope, p)`, the identity at `p = 0`),
    how the linearised residual's normal equations at `p = 0` are summed over blocks of
    frames (`equations`), and how its state follows a trial (`advance`); each step then
    solves the damped equations (`marquardt_step`) and keeps the trial only where the
    residual falls (`marquardt_verdict`). Because the equations and the residual are sums
    over frames, the same step runs on frames streamed from a file
    (`janssen.invert.search_from_file`).

    **Arguments** every subclass has: `initial_damping`, `patience`, `eps` (`check_marquardt`).
    """

    initial_damping: eqx.AbstractVar[float]
    patience: eqx.AbstractVar[int]
    eps: eqx.AbstractVar[float]

    @abc.abstractmethod
    def apply(self, microscope, parameters: Float[Array, " p"]):
        """`microscope` moved by `parameters` (unchanged at 0)."""

    @abc.abstractmethod
    def equations(self, microscope, blocks: "_Blocks") -> tuple[Array, Array, Array]:
        """`(J^T J, J^T r, sum r_exact**2)` over `blocks`' frames, linearised at `parameters = 0`."""

    @abc.abstractmethod
    def advance(self, state: _S, trial: "Trial") -> _S:
        """The state after `trial` (its damping, and the count the stopping rule reads)."""

    def step(self, microscope, state, data, trainable, key):
        del trainable, key
        blocks = _Blocks.of(data, self.eps, state.on_grid)
        trial = marquardt_trial(self.apply, microscope, blocks, self.equations(microscope, blocks), state)
        return trial.microscope, self.advance(state, trial), trial.rms

    def postprocess(self, microscope, state):
        del state
        return microscope


class CurvatureSearch(AbstractMarquardtSearch[CurvatureState]):
    """Fit the object's phase curvature, with the opposite curvature on the probe, to the data.

    See the module docstring for the model: three numbers `(a, b, c)`, the coefficients of
    `Q = a s_x**2 + b s_x s_y + c s_y**2` in radians per `L**2` (`L` the object's larger
    side in pixels, so that the numbers are of order one whatever the field), applied as
    `O exp(iQ)` and `P exp(-iQ)` (every probe mode; `probe.with_fields`). Each step is a
    Levenberg-Marquardt step on the RMS amplitude residual, accepted only if the
    residual falls; the run stops after `patience` rejections in a row. Meant as a stage
    after PIE on wide fields (see `janssen.invert.Stage`), where this one slow direction
    is all that is left; it refines the object and the probe together and nothing else.

    **Arguments:**

    - `initial_damping`: the relative damping of the first step (default `1e-3`).
    - `patience`: rejected steps in a row after which the run stops (default 2).
    - `eps`: the floor under the square root of the linearised residual, relative to the
      mean measured intensity (as `GaussNewton`'s; default `1e-6`).
    """

    models_detector: ClassVar[bool] = True

    initial_damping: float = 1e-3
    patience: int = eqx.field(default=2, static=True)
    eps: float = 1e-6

    def __check_init__(self):
        check_marquardt(self)

    def init(self, microscope, data, trainable):
        return CurvatureState(*marquardt_start(self, "a phase curvature", microscope, data, trainable))

    @staticmethod
    def apply(microscope, coefficients: Float[Array, "3"]):
        """`microscope` with `exp(iQ)` on its object and `exp(-iQ)` on its probe (`coefficients` = `(a, b, c)`)."""
        obj = microscope.sample.sample
        real = obj.real.dtype
        scale = 1.0 / max(obj.shape) ** 2
        coefficients = coefficients.astype(real) * scale
        on_object = _quadratic(coefficients, *_centred_pixels(obj.shape, real))
        fields = microscope.probe.fields()
        on_probe = _quadratic(coefficients, *_centred_pixels(fields.shape[-2:], real))
        new = eqx.tree_at(lambda m: m.sample.sample, microscope, obj * jnp.exp(1j * on_object).astype(obj.dtype))
        probe = microscope.probe.with_fields(fields * jnp.exp(-1j * on_probe).astype(fields.dtype)[None])
        return eqx.tree_at(lambda m: m.probe, new, probe)

    def equations(self, microscope, blocks):
        return blocks.normal_equations(self.apply, microscope)

    def advance(self, state: CurvatureState, trial: "Trial") -> CurvatureState:
        rejected = jnp.where(trial.accept, 0, state.rejected + 1).astype(jnp.int32)
        return CurvatureState(trial.damping, rejected, state.on_grid)

    def terminate(self, state: CurvatureState, losses: Float[Array, " n"]) -> Bool[Array, ""]:
        del losses
        return state.rejected >= self.patience


def check_marquardt(engine) -> None:
    """Check the arguments every Marquardt search has: `initial_damping`, `patience`, `eps`."""
    if not (np.isfinite(engine.initial_damping) and engine.initial_damping > 0):
        raise ValueError(f"`initial_damping` must be finite and > 0, got {engine.initial_damping}")
    if isinstance(engine.patience, bool) or not (isinstance(engine.patience, int) and engine.patience >= 1):
        raise ValueError(f"`patience` must be an integer >= 1, got {engine.patience!r}")
    if not (np.isfinite(engine.eps) and engine.eps > 0):
        raise ValueError(f"`eps` must be finite and > 0, got {engine.eps}")


def marquardt_start(engine, moved: str, microscope, data, trainable) -> tuple[Array, Array, bool]:
    """A Marquardt search's first state: `(initial damping, 0 steps counted, on_grid)`.

    Refuses a `trainable` that does not select both the object and the probe, between
    which the search moves `moved` (e.g. `"a phase curvature"`).
    """
    if not refines(trainable, microscope, "object", "probe"):
        raise ValueError(
            f"{type(engine).__name__} moves {moved} between the object and the probe, so `trainable` must "
            "select both (e.g. `trainable=['object', 'probe']`)"
        )
    damping = jnp.asarray(engine.initial_damping, dtype=data.intensities.dtype)
    return damping, jnp.array(0, jnp.int32), fixed_on_grid(microscope, trainable)


class Trial(eqx.Module):
    """What `marquardt_trial` returns: the microscope kept, whether the trial was kept, the next damping, the losses."""

    microscope: Any
    accept: Array  # 0-d bool: the trial lowered the residual
    damping: Array  # the next relative damping, in the state's dtype
    loss: Array  # mean squared residual before the step
    trial_loss: Array  # and at the trial

    @property
    def rms(self) -> Array:
        """The RMS residual of the microscope kept."""
        return jnp.sqrt(jnp.where(self.accept, self.trial_loss, self.loss))


def marquardt_step(equations: tuple[Array, Array, Array], damping: Array) -> Array:
    """The Levenberg-Marquardt step `delta` solving `(J^T J + damping diag(J^T J)) delta = -J^T r`.

    `equations` = `(J^T J, J^T r, sum r**2)` at zero parameters (Marquardt's scaling).
    """
    normal, gradient, _ = equations
    diagonal = jnp.maximum(jnp.diag(normal), jnp.finfo(normal.dtype).tiny)
    return -jnp.linalg.solve(normal + damping * jnp.diag(diagonal), gradient)


def marquardt_verdict(microscope, trial, loss: Array, trial_loss: Array, state) -> Trial:
    """Keep `trial` when its mean squared residual `trial_loss` is below `loss` (never for a NaN).

    The damping then shrinks by 3, else grows by 10, within `[1e-10, 1e10]`.
    """
    accept = trial_loss < loss  # False for NaN
    kept = jax.tree_util.tree_map(lambda t, o: jnp.where(accept, t, o) if eqx.is_array(t) else t, trial, microscope)
    damping = jnp.clip(state.damping * jnp.where(accept, _LOWER, _RAISE), _MIN_DAMPING, _MAX_DAMPING)
    return Trial(kept, accept, damping.astype(state.damping.dtype), loss, trial_loss)


def marquardt_trial(apply, microscope, blocks: "_Blocks", equations: tuple[Array, Array, Array], state) -> Trial:
    """One Levenberg-Marquardt trial in the parameters of `apply(microscope, parameters)`, kept only if it helps.

    `equations` = `(J^T J, J^T r, sum r**2)` at zero parameters; the step is
    `marquardt_step`'s (`state.damping`), kept when the exact residual over `blocks` falls
    (`marquardt_verdict`).
    """
    trial = apply(microscope, marquardt_step(equations, state.damping))
    loss, trial_loss = equations[2] / blocks.count, blocks.squares(trial) / blocks.count
    return marquardt_verdict(microscope, trial, loss, trial_loss, state)


# Frames per block of the normal equations: the linearisation is held for one block at a
# time, so the step's memory does not grow with the scan (the whole scan's linearisation
# took the large preset's peak from 1.8 GB to 6.2 GB, 25x its 250 MB of frames).
_BLOCK = 16

# Frame pixels per block, at most: 16 frames of 128 x 128, 4 of 256 x 256. On the large
# preset (256 x 256) the phase-field search's first iteration peaked 286 MB above its start
# with blocks of 16 frames (five tangent columns and the linearisation of each), 187 MB with 4.
_BLOCK_PIXELS = 16 * 128 * 128


def _block_size(frame_shape: tuple[int, ...]) -> int:
    """Frames per block of the normal equations: `_BLOCK`, fewer of frames larger than 128 x 128."""
    return min(_BLOCK, frames_within(frame_shape, _BLOCK_PIXELS))


class _Blocks(eqx.Module):
    """The frames in blocks of `_block_size` (the last one padded), for sums over the scan held a block at a time.

    Each block reads its own measured counts and takes their square roots, so nothing
    frame-sized but the data themselves is held.
    """

    data: MicroscopeData
    index: Array  # (blocks, block size) frame numbers, the padding repeating frame 0...
    live: Array  # ... with weight 0
    floor: Array  # under the square root of the smooth residual (`AmplitudeResidual.of`)
    count: Array  # valid pixels over all frames
    on_grid: bool = eqx.field(static=True)  # predict without the probe's sub-pixel moves

    @staticmethod
    def of(data: MicroscopeData, eps: float, on_grid: bool, floor: Array | None = None) -> "_Blocks":
        """`data` in blocks; `floor` (default: `eps` times `data`'s mean counts) under the smooth residual's root."""
        count, size = data.num_positions, _block_size(data.frame_shape)
        blocks = -(-count // size)
        slots = jnp.arange(blocks * size)
        index = (slots % count).reshape(blocks, size)
        live = (slots < count).astype(data.intensities.dtype).reshape(blocks, size)
        floor = AmplitudeResidual.of(data, eps).floor if floor is None else jnp.asarray(floor, data.intensities.dtype)
        return _Blocks(data, index, live, floor, count * jnp.sum(data.valid), on_grid)

    def _terms(self, ids: Array) -> AmplitudeResidual:
        """The amplitude residual of the frames `ids` (the one definition, `AmplitudeResidual`)."""
        valid = self.data.valid[None].astype(self.data.intensities.dtype)
        return AmplitudeResidual(safe_sqrt(self.data.intensities[ids]), valid, self.floor)

    def squares(self, microscope) -> Array:
        """`sum r_exact**2` over every frame and valid pixel."""

        def block(inputs):
            ids, alive = inputs
            return jnp.sum(alive * self._terms(ids).frame_sums(microscope.predict(ids, on_grid=self.on_grid)))

        return jnp.sum(jax.lax.map(block, (self.index, self.live)))

    def normal_equations(self, apply, microscope) -> tuple[Array, Array, Array]:
        """`J^T J` (3 x 3), `J^T r` and `sum r_exact**2` of the amplitude residual in the three coefficients at 0.

        `J^T J = sum_j J_j^T J_j` over the blocks: each block is linearised on its own and
        its three tangent columns formed by forward products.
        """
        real = self.data.intensities.dtype
        zero = jnp.zeros(3, real)

        def block(inputs):
            ids, alive = inputs
            terms = self._terms(ids)

            def residual(coefficients):
                predicted = apply(microscope, coefficients).predict(ids, on_grid=self.on_grid)
                return terms.smooth(predicted), predicted

            r, jvp, predicted = jax.linearize(residual, zero, has_aux=True)
            columns = (jax.vmap(jvp)(jnp.eye(3, dtype=real)) * alive[None, :, None, None]).reshape(3, -1)
            weighted = (alive[:, None, None] * r).ravel()
            return columns @ columns.T, columns @ weighted, jnp.sum(alive * terms.frame_sums(predicted))

        normal, gradient, squares = jax.lax.map(block, (self.index, self.live))
        return jnp.sum(normal, axis=0), jnp.sum(gradient, axis=0), jnp.sum(squares)
