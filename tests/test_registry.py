"""Engines by name (`engine_from_name`, `engine_name`, `engine_class`, `engine_record`) and the
per-part learning-rate factors the gradient engines start from (`default_rate_factors`)."""

import jax.tree_util as jtu
import numpy as np
import pytest

import janssen.invert as jinv
from janssen.invert._checkpoint import engine_parameters
from janssen.optics import Probe, SampleFunction
from janssen.scopes import FarFieldMicroscope

CLASSES = {
    "adam": "Gradient",
    "curvature": "CurvatureSearch",
    "phase-field": "PhaseFieldSearch",
    "sgd": "Gradient",
    "epie": "EPIE",
    "rpie": "RPIE",
    "mpie": "MomentumPIE",
    "gauss-newton": "GaussNewton",
    "lm": "GaussNewton",
    "optx-gn": "OptimistixLeastSquares",
    "optx-lm": "OptimistixLeastSquares",
    "optx-dogleg": "OptimistixLeastSquares",
}


def _same_engine(a, b) -> bool:
    leaves_a, leaves_b = jtu.tree_leaves(a), jtu.tree_leaves(b)
    return (
        type(a) is type(b)
        and jtu.tree_structure(a) == jtu.tree_structure(b)
        and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b, strict=True))
        and engine_parameters(a) == engine_parameters(b)
    )


def test_engine_names_are_the_registry():
    assert jinv.ENGINE_NAMES == tuple(sorted(CLASSES))
    assert {name: jinv.engine_class(name).__name__ for name in jinv.ENGINE_NAMES} == CLASSES


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_name_to_engine_to_name(name):
    """What a result file records (class, scalar fields, `engine_record`) gives the name back and the same engine."""
    engine = jinv.engine_from_name(name)
    assert type(engine) is jinv.engine_class(name)
    saved = {**engine_parameters(engine), **jinv.engine_record(name)}
    # `lm` is GaussNewton with its default damping: it resumes as "gauss-newton" with that damping.
    expected = "gauss-newton" if name == "lm" else name
    assert jinv.engine_name(type(engine).__name__, saved) == expected
    rebuilt = jinv.engine_from_name(expected, **saved)
    assert _same_engine(rebuilt, engine)


def test_registry_builds_what_the_names_say():
    assert jinv.engine_from_name("gauss-newton").initial_damping == pytest.approx(1e-6)
    assert jinv.engine_from_name("lm").initial_damping == jinv.GaussNewton().initial_damping
    assert jinv.engine_from_name("rpie", mode="batched").mode == "batched"
    adam = jinv.engine_from_name("adam", learning_rate=0.5, learning_rates={"probe": 2.0})
    assert adam.learning_rates == {"probe": 2.0}
    assert jinv.engine_record("adam", learning_rate=0.5, learning_rates={"probe": 2}) == {
        "optimizer": "adam",
        "learning_rate": 0.5,
        "loss": "amplitude",
        "learning_rates": {"probe": 2.0},
    }
    assert jinv.engine_record("sgd")["learning_rate"] == jinv.DEFAULT_LEARNING_RATES["sgd"] == 1.0
    assert jinv.engine_record("optx-lm", rtol=1e-3) == {"solver": "levenberg-marquardt", "rtol": 1e-3}
    assert jinv.engine_record("rpie") == {}


def test_registry_refuses_unknown_and_contradictory_names():
    with pytest.raises(ValueError, match=r"unknown engine 'fast' \(choose from adam, curvature, epie"):
        jinv.engine_from_name("fast")
    with pytest.raises(ValueError, match=r"unknown RPIE parameter 'alpah' \(allowed: .*alpha"):
        jinv.engine_from_name("rpie", alpah=0.1)
    with pytest.raises(ValueError, match="engine 'adam' has no optimizer 'sgd'"):
        jinv.engine_from_name("adam", optimizer="sgd")
    with pytest.raises(ValueError, match="no engine name builds the engine 'Gradient'"):
        jinv.engine_name("Gradient", {})  # the optimizer is not recorded
    with pytest.raises(ValueError, match="no engine name builds the engine 'PositionLM'"):
        jinv.engine_name("PositionLM")


def _microscope():
    rng = np.random.default_rng(0)
    dx = 1e-8
    probe = 3.0 * (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16)))
    sample = SampleFunction(np.ones((40, 40), np.complex64), dx)
    positions = np.array([[0.0, 0.0], [3e-8, 0.0], [0.0, 3e-8]])
    return FarFieldMicroscope(Probe(probe.astype(np.complex64), 1e-9, dx), sample, positions)


def test_default_rate_factors_measure_each_part():
    microscope = _microscope()
    probe_rms = float(np.sqrt(np.mean(np.abs(np.asarray(microscope.probe.fields())) ** 2)))
    assert probe_rms == pytest.approx(3.0 * np.sqrt(2), rel=0.1)
    paths = jinv.trainable_paths(microscope, ["object", "probe", "positions"])
    assert paths == ["probe.modes", "sample.sample", "positions"]  # the microscope's leaf order
    adam = jinv.default_rate_factors(microscope, paths)
    assert adam.keys() == {"probe.modes", "positions"}  # the object keeps factor 1
    assert adam["probe.modes"] == pytest.approx(probe_rms, rel=1e-6)
    assert adam["positions"] == pytest.approx(1e-8, rel=1e-6)  # an object pixel
    sgd = jinv.default_rate_factors(microscope, ["object", "probe", "positions"], optimizer="sgd")
    assert sgd == pytest.approx({"probe": probe_rms**2, "positions": 1e-16}, rel=1e-6)


def test_default_rate_factors_are_the_seed_solvers_factors():
    """`simple_microscope_optim`'s engine: its own part sizes, as they are for Adam and squared for SGD."""
    from janssen.invert._seed.refine import _gradient_engine

    sizes = {"probe": 7.0, "zoom": 1.2, "aperture_diameter": 2e-4, "aperture_center": 2e-4, "distance": 0.3}
    params = jinv.PtychographyParams(1e-5, 10, learning_rate=0.01, optimizer_type="sgd")
    engine = _gradient_engine(params, _microscope(), sizes)
    assert engine.learning_rates == {name: size**2 for name, size in sizes.items()}
    params = jinv.PtychographyParams(1e-5, 10, learning_rate=0.01, optimizer_type="adam")
    assert _gradient_engine(params, _microscope(), sizes).learning_rates == sizes


def test_geometry_padding_leaves_room_for_the_scale_search():
    from janssen.io import MicroscopeData

    n, dx, wavelength = 16, 1e-8, 1e-9
    positions = np.array([[-2e-7, 0.0], [2e-7, 0.0], [0.0, 0.0]])  # 20 pixels from the centre
    data = MicroscopeData(np.ones((3, n, n)), positions, wavelength, wavelength / (n * dx), 1.0)
    # init_far_field_microscope's margin n // 8, 7 % of 20 px rounded up, and 4 px.
    assert jinv.geometry_padding(data) == 2 + 2 + 4
