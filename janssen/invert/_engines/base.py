"""`AbstractEngine`: what an engine implements; the driver owns the loop."""

import abc
from typing import Any, ClassVar, Generic, TypeVar

import equinox as eqx
import jax
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from ..._data import MicroscopeData
from ...scopes._base import AbstractMicroscope
from .._trainable import selected_paths

_State = TypeVar("_State")


def never_stop() -> Bool[Array, ""]:
    """`False` on the device, for the `terminate` of an engine that always runs its iterations.

    A transfer: `jnp.array(False)` would compile a copy, a kernel of its own on the first call.
    """
    return jax.device_put(np.False_)


class AbstractEngine(eqx.Module, Generic[_State]):
    """A reconstruction algorithm, as four pure functions the `reconstruct` driver calls.

    - `init` builds the engine's state (optimizer moments, momentum buffers, damping…)
      from the starting microscope; called once per fresh run (not on resume).
    - `step` performs one iteration (one sweep over the data for PIE engines) and
      returns the new microscope, the new state and the iteration's data residual.
    - `terminate` says whether to stop early.
    - `postprocess` tidies the final microscope (e.g. orthogonalise probe modes).

    `trainable` is a boolean filter spec over the microscope (see
    `janssen.invert.trainable_spec`). Engines must refine exactly the selected leaves.

    `holds_phase_ramp`: `False` (default) lets the driver hold the far-field phase ramp
    after every step (`janssen.invert.fix_phase_ramp`); an engine that treats the ramp
    itself (the PIE family, whose `fix_gauge` decides) sets it to `True`.

    `models_detector`: whether the engine predicts through the microscope's forward model
    (`microscope()`, `intensity`, `predict`), and so models its `detector` (a background,
    per-frame scales). `False` (default) for engines with their own closed-form update of
    the coherent intensity (the PIE family). `check_detector` decides what `reconstruct`
    accepts: by default, a microscope with a `detector` only for engines that model it
    (rather than fit a model without it); the PIE family fits a fixed background.
    """

    holds_phase_ramp: ClassVar[bool] = False
    models_detector: ClassVar[bool] = False

    def check_detector(self, microscope: AbstractMicroscope, trainable: Any) -> None:
        """Raise `ValueError` unless this engine fits the microscope's `detector` as `trainable` selects it.

        The default: any detector when `models_detector`, none otherwise. The PIE family
        overrides it (a fixed background, nothing refined).
        """
        if microscope.detector is None or self.models_detector:
            return
        refined = selected_paths(trainable.detector, trainable.detector)
        asked = f"`trainable` selects the detector's {refined}, but " if refined else ""
        raise ValueError(
            f"{asked}{type(self).__name__} does not model a detector background or per-frame scales yet (the "
            "microscope has a `detector`): use Gradient, GaussNewton or OptimistixLeastSquares, or drop the term "
            "with `janssen.scopes.with_detector(microscope, None)` (and subtract a known background from the data)"
        )

    @property
    def sums_over_positions(self) -> bool:
        """Whether a step is one update from sums over the positions (`position_sums`, `step_from_sums`).

        Such a step can be taken over frames that are never held together: sum
        `position_sums` over batches of positions (the leaves of its PyTree add), then
        `step_from_sums` once; `janssen.invert.reconstruct_from_file(..., whole_scan=True)`
        does so, an epoch per step, equal to `reconstruct` on the frames in memory. `False`
        by default; the batched PIE engines say `True`.
        """
        return False

    def position_sums(self, microscope: AbstractMicroscope, state: _State, data: MicroscopeData, trainable: Any) -> Any:
        """`data`'s share of the next step's sums (`microscope` holding `data`'s positions)."""
        raise NotImplementedError(f"{type(self).__name__}'s step is not a sum over positions")

    def step_from_sums(
        self, microscope: AbstractMicroscope, state: _State, sums: Any, trainable: Any
    ) -> tuple[AbstractMicroscope, _State, Float[Array, ""]]:
        """The step from `position_sums` summed over every position: `(microscope, state, loss)` as `step`."""
        raise NotImplementedError(f"{type(self).__name__}'s step is not a sum over positions")

    @abc.abstractmethod
    def init(self, microscope: AbstractMicroscope, data: MicroscopeData, trainable: Any) -> _State:
        """The initial engine state."""

    @abc.abstractmethod
    def step(
        self,
        microscope: AbstractMicroscope,
        state: _State,
        data: MicroscopeData,
        trainable: Any,
        key: PRNGKeyArray,
    ) -> tuple[AbstractMicroscope, _State, Float[Array, ""]]:
        """One iteration: `(microscope, state, loss)`; `loss` is the RMS amplitude residual."""

    @abc.abstractmethod
    def terminate(self, state: _State, losses: Float[Array, " n"]) -> Bool[Array, ""]:
        """Whether to stop now, given the losses so far."""

    @abc.abstractmethod
    def postprocess(self, microscope: AbstractMicroscope, state: _State) -> AbstractMicroscope:
        """The microscope to return to the user."""


class AbstractFixedLengthEngine(AbstractEngine[_State]):
    """An engine that runs every iteration it is asked for and returns its last microscope as is.

    `terminate` is always `False` (the driver's `num_iterations` and convergence tests
    decide when to stop) and `postprocess` is the identity. The PIE family, `Gradient`,
    `GaussNewton` and `PositionLM` are such engines; a new engine that needs neither an
    early stop of its own nor a final tidy-up subclasses this and writes `init` and `step`.
    """

    def terminate(self, state: _State, losses: Float[Array, " n"]) -> Bool[Array, ""]:
        del state, losses
        return never_stop()

    def postprocess(self, microscope: AbstractMicroscope, state: _State) -> AbstractMicroscope:
        del state
        return microscope
