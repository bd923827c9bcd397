"""The `reconstruct` driver: resume, non-finite guard, compilation, validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import compilations, counting_engine, tiny_far_field_problem

from janssen.invert import (
    RESULTS,
    RPIE,
    AbstractEngine,
    GaussNewton,
    Gradient,
    MomentumPIE,
    PositionLM,
    reconstruct,
    trainable_spec,
)
from janssen.optics import ScaledFraunhofer
from janssen.scopes import FarFieldMicroscope


@pytest.fixture(scope="module")
def problem():
    return tiny_far_field_problem(jax.random.PRNGKey(5), n=32, grid=4)


@pytest.mark.parametrize("engine", [MomentumPIE(), RPIE(mode="batched")], ids=["sequential", "batched"])
def test_resume_equals_one_run(problem, engine):
    data, _, start = problem
    key = jax.random.PRNGKey(11)
    once = reconstruct(start, data, engine, num_iterations=5, key=key)
    first = reconstruct(start, data, engine, num_iterations=3, key=key)
    twice = reconstruct(first, data, engine, num_iterations=2)
    assert twice.iteration == once.iteration == 5
    np.testing.assert_array_equal(once.losses, twice.losses)
    np.testing.assert_array_equal(once.microscope.sample.sample, twice.microscope.sample.sample)
    np.testing.assert_array_equal(once.state.object_velocity, twice.state.object_velocity)


def test_same_key_same_result_different_key_differs(problem):
    data, _, start = problem
    a = reconstruct(start, data, RPIE(), num_iterations=2, key=jax.random.PRNGKey(1))
    b = reconstruct(start, data, RPIE(), num_iterations=2, key=jax.random.PRNGKey(1))
    c = reconstruct(start, data, RPIE(), num_iterations=2, key=jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a.microscope.sample.sample, b.microscope.sample.sample)
    assert not np.array_equal(a.microscope.sample.sample, c.microscope.sample.sample)


def test_default_key_is_prngkey_zero(problem):
    data, _, start = problem
    default = reconstruct(start, data, RPIE(), num_iterations=2)
    explicit = reconstruct(start, data, RPIE(), num_iterations=2, key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(default.key, explicit.key)
    np.testing.assert_array_equal(default.microscope.sample.sample, explicit.microscope.sample.sample)


class _PoisonAfter(AbstractEngine):
    """Runs RPIE, but puts a NaN into the object from iteration `bad` on."""

    inner: RPIE
    bad: int
    holds_phase_ramp = True  # as the RPIE it runs

    def init(self, microscope, data, trainable):
        return (self.inner.init(microscope, data, trainable), jnp.zeros((), jnp.int32))

    def step(self, microscope, state, data, trainable, key):
        inner_state, count = state
        new, inner_state, loss = self.inner.step(microscope, inner_state, data, trainable, key)
        poison = jnp.where(count + 1 >= self.bad, jnp.nan, 0.0)
        new = eqx.tree_at(lambda m: m.sample.sample, new, new.sample.sample + poison)
        return new, (inner_state, count + 1), loss

    def terminate(self, state, losses):
        return jnp.array(False)

    def postprocess(self, microscope, state):
        return microscope


def test_nonfinite_stops_with_last_good_state(problem):
    data, _, start = problem
    good = reconstruct(start, data, RPIE(), num_iterations=3)
    poisoned = reconstruct(start, data, _PoisonAfter(RPIE(), 4), num_iterations=10)
    assert poisoned.result == RESULTS.nonfinite
    assert poisoned.iteration == 3
    assert np.all(np.isfinite(poisoned.microscope.sample.sample))
    np.testing.assert_allclose(poisoned.microscope.sample.sample, good.microscope.sample.sample, atol=1e-6)
    with pytest.raises(RuntimeError, match="non-finite"):
        reconstruct(start, data, _PoisonAfter(RPIE(), 1), num_iterations=3, throw=True)


class _BlowUpAt(AbstractEngine):
    """Runs RPIE, but multiplies the object by `factor` at iteration `bad` (a step size gone wrong)."""

    inner: RPIE
    bad: int
    factor: float
    holds_phase_ramp = True

    def init(self, microscope, data, trainable):
        return (self.inner.init(microscope, data, trainable), jnp.zeros((), jnp.int32))

    def step(self, microscope, state, data, trainable, key):
        inner_state, count = state
        new, inner_state, loss = self.inner.step(microscope, inner_state, data, trainable, key)
        scale = jnp.where(count + 1 == self.bad, self.factor, 1.0).astype(new.sample.sample.real.dtype)
        new = eqx.tree_at(lambda m: m.sample.sample, new, new.sample.sample * scale)
        return new, (inner_state, count + 1), loss

    def terminate(self, state, losses):
        return jnp.array(False)

    def postprocess(self, microscope, state):
        return microscope


def test_divergence_stops_and_keeps_the_best_state(problem):
    """A loss that jumps above 10x its lowest stops the run with `diverged`; the state kept is
    the one with the lowest loss (with its iteration and losses), not the last finite one."""
    data, _, start = problem
    good = reconstruct(start, data, RPIE(), num_iterations=4)
    assert np.all(np.diff(np.asarray(good.losses)) < 0)  # the lowest loss is the latest until the blow-up
    blown = reconstruct(start, data, _BlowUpAt(RPIE(), 4, 1e3), num_iterations=10)
    assert blown.result == RESULTS.diverged
    # Iteration 4 multiplies the object by 1e3; iteration 5 reports that state's loss (far above 10x):
    # the best state is the input of iteration 4, i.e. after 3 iterations.
    assert blown.iteration == 3
    np.testing.assert_array_equal(np.asarray(blown.losses), np.asarray(good.losses)[:3])
    np.testing.assert_allclose(blown.microscope.sample.sample, good_after(start, data, 3), atol=1e-6)
    with pytest.raises(RuntimeError, match="divergence"):
        reconstruct(start, data, _BlowUpAt(RPIE(), 2, 1e3), num_iterations=5, throw=True)
    # A milder rise (x1.5 the amplitude: the loss rises 5.6x, measured) runs on; so does any with None.
    mild = reconstruct(start, data, _BlowUpAt(RPIE(), 4, 1.5), num_iterations=6)
    assert mild.result == RESULTS.max_iterations_reached and mild.iteration == 6
    free = reconstruct(start, data, _BlowUpAt(RPIE(), 4, 1e3), num_iterations=6, divergence=None)
    assert free.result == RESULTS.max_iterations_reached
    with pytest.raises(ValueError, match="divergence"):
        reconstruct(start, data, RPIE(), num_iterations=1, divergence=0.5)


def good_after(start, data, iterations):
    return np.asarray(reconstruct(start, data, RPIE(), num_iterations=iterations).microscope.sample.sample)


@pytest.mark.parametrize(
    "inner, trainable, bounds",
    [
        (RPIE(), None, None),
        (Gradient(), ["object", "probe", "positions"], {"positions": (-1e-6, 1e-6)}),
        (GaussNewton(cg_maxiter=3), ["object", "positions"], None),
        (GaussNewton(cg_maxiter=3), ["object", "distance"], None),
        (PositionLM(), "positions", None),
    ],
    ids=["rpie", "adam+positions+bounds", "gauss-newton+positions", "gauss-newton+distance", "position-lm"],
)
def test_second_call_compiles_nothing(problem, inner, trainable, bounds):
    """Each engine compiles its step once: not again on resume, nor for a new key. The
    distance case starts from a Python-float distance (a weakly typed array), which the
    driver makes strongly typed: the engine's output is, so the second step would otherwise
    compile again."""
    data, _, start = problem
    if trainable is not None and "distance" in trainable:
        propagator = ScaledFraunhofer(float(data.distance), data.camera_pixel_size, tuple(data.frame_shape))
        start = FarFieldMicroscope(start.probe, start.sample, start.positions, propagator)
        assert start.propagator.distance.weak_type
    engine, traces = counting_engine(inner)
    first = reconstruct(start, data, engine, trainable=trainable, bounds=bounds, num_iterations=3)
    assert len(traces) == 1
    reconstruct(first, data, engine, bounds=bounds, num_iterations=3)
    reconstruct(start, data, engine, trainable=trainable, bounds=bounds, num_iterations=2, key=jax.random.PRNGKey(9))
    assert len(traces) == 1


def test_longer_run_compiles_nothing(problem):
    """The driver's own bookkeeping (loss history, iteration keys, the engine's initial
    state) compiles nothing per iteration: once a run has compiled the step, a longer run
    and its resumption compile nothing at all."""
    data, _, start = problem
    engine = MomentumPIE()
    reconstruct(start, data, engine, num_iterations=2)
    with compilations() as compiled:
        longer = reconstruct(start, data, engine, num_iterations=6)
        resumed = reconstruct(longer, data, engine, num_iterations=3)
    assert compiled == []
    assert resumed.losses.shape == (9,) and resumed.iteration == 9
    np.testing.assert_array_equal(resumed.losses[:6], longer.losses)


def test_callback_and_snapshots(problem):
    data, _, start = problem
    seen = []
    solution = reconstruct(
        start, data, RPIE(), num_iterations=4, save_every=2, callback=lambda i, loss, m: seen.append((i, loss))
    )
    assert [i for i, _ in seen] == [1, 2, 3, 4]
    np.testing.assert_allclose([loss for _, loss in seen], solution.losses)
    assert [i for i, _ in solution.snapshots] == [2, 4]


def test_checkpoint_called(problem):
    """Checkpoints during the run say `running`, never `max_iterations_reached`; the last one says how it ended."""
    data, _, start = problem
    saved = []
    reconstruct(
        start,
        data,
        RPIE(),
        num_iterations=5,
        checkpoint=lambda s: saved.append((s.iteration, s.result)),
        checkpoint_every=2,
    )
    assert saved == [(2, RESULTS.running), (4, RESULTS.running), (5, RESULTS.max_iterations_reached)]


def test_mismatched_data_raises(problem):
    data, _, start = problem
    fewer = type(data)(
        data.intensities[:-1], data.positions[:-1], data.wavelength, data.camera_pixel_size, data.distance
    )
    with pytest.raises(ValueError, match="frames"):
        reconstruct(start, fewer, RPIE(), num_iterations=1)
    with pytest.raises(ValueError, match="nothing would be refined|no floating"):
        reconstruct(
            start, data, RPIE(), trainable=lambda m: m.probe.wavelength * 0 + 1 if False else (), num_iterations=1
        )
    with pytest.raises(ValueError, match="no parameter 'zoom"):
        reconstruct(start, data, RPIE(), trainable=["zoom"], num_iterations=1)


def test_text_progress_meter_reports_losses(problem, capsys):
    from janssen.invert import TextProgressMeter

    data, _, start = problem
    solution = reconstruct(start, data, RPIE(), num_iterations=20, progress_meter=TextProgressMeter())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    # Not a terminal: one line every tenth of the run, each with that iteration's loss.
    assert [int(line.split("iter ")[1].split()[0]) for line in lines] == list(range(2, 21, 2))
    reported = [float(line.split("loss ")[1].split()[0]) for line in lines]
    np.testing.assert_allclose(reported, np.asarray(solution.losses)[1::2], rtol=1e-3)


class _Drift(AbstractEngine):
    """Runs RPIE on the object, and moves every position by `drift` metres per iteration."""

    inner: RPIE
    drift: float

    def init(self, microscope, data, trainable):
        return self.inner.init(microscope, data, trainable_spec(microscope, "object"))

    def step(self, microscope, state, data, trainable, key):
        new, state, loss = self.inner.step(microscope, state, data, trainable_spec(microscope, "object"), key)
        return eqx.tree_at(lambda m: m.positions, new, new.positions + self.drift), state, loss

    def terminate(self, state, losses):
        return jnp.array(False)

    def postprocess(self, microscope, state):
        return microscope


def test_positions_off_object_stop_the_run(problem):
    """Slicing inside jit would clamp a window that runs off the object; the driver must stop."""
    from janssen.optics import positions_outside

    data, _, start = problem
    # 3 object pixels per iteration; the smallest margin of this scan is 3-6 pixels. Only the
    # positions are declared trainable (the engine refines the object on its own): with the
    # object declared too, a common shift is a gauge motion that the driver removes.
    step = 3 * float(start.sample.dx[0])
    solution = reconstruct(start, data, _Drift(RPIE(), step), trainable=["positions"], num_iterations=10)
    assert solution.result == RESULTS.positions_off_object
    assert 0 < solution.iteration < 10
    m = solution.microscope
    assert positions_outside(m.positions, m.sample.dx, m.sample.shape, m.probe_shape).size == 0
    np.testing.assert_allclose(m.positions, start.positions + solution.iteration * step, rtol=1e-5)
