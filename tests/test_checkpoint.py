"""Result files: write/read round trip, and save -> load -> resume equals one long run."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import tiny_far_field_problem

from janssen.invert import (
    RESULTS,
    RPIE,
    MomentumPIE,
    load_solution,
    reconstruct,
    save_solution,
)
from janssen.io import read_result, write_result


@pytest.fixture(scope="module")
def problem():
    return tiny_far_field_problem(jr.PRNGKey(5), grid=4)


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    obj = (rng.normal(size=(10, 12)) + 1j * rng.normal(size=(10, 12))).astype(np.complex64)
    probe = (rng.normal(size=(2, 6, 6)) + 1j * rng.normal(size=(2, 6, 6))).astype(np.complex64)
    path = tmp_path / "r.h5"
    write_result(
        path,
        object=obj,
        probe=probe,
        positions=rng.normal(size=(4, 2)),
        loss=np.array([3.0, 2.0, 1.5]),
        wavelength=1e-10,
        distance=0.5,
        object_pixel_size=[1e-8, 2e-8],
        attrs={"engine": "RPIE", "engine_parameters": {"alpha": 0.1}, "iteration": 3},
        extra={"note": np.arange(3)},
        state_bytes=b"\x00\x01abc",
    )
    out = read_result(path)
    np.testing.assert_array_equal(out["object"], obj)
    np.testing.assert_array_equal(out["probe"], probe)
    np.testing.assert_array_equal(out["loss"], [3.0, 2.0, 1.5])
    np.testing.assert_array_equal(out["object_pixel_size"], [1e-8, 2e-8])
    assert out["wavelength"] == 1e-10 and out["distance"] == 0.5
    assert out["attrs"]["engine"] == "RPIE" and out["attrs"]["engine_parameters"] == {"alpha": 0.1}
    assert out["attrs"]["iteration"] == 3
    np.testing.assert_array_equal(out["extra"]["note"], np.arange(3))
    assert out["state_bytes"] == b"\x00\x01abc"
    assert not (tmp_path / "r.h5.partial").exists()
    with pytest.raises(ValueError, match="does not exist"):
        read_result(tmp_path / "missing.h5")


@pytest.mark.parametrize("engine", [RPIE(), MomentumPIE(momentum=0.3)], ids=["rpie", "mpie"])
def test_resume_from_file_equals_one_run(problem, engine, tmp_path):
    data, _, start = problem
    key = jr.PRNGKey(7)
    whole = reconstruct(start, data, engine, num_iterations=5, key=key)
    first = reconstruct(start, data, engine, num_iterations=3, key=key)
    path = tmp_path / "run.h5"
    save_solution(path, first, data, engine)
    # The template: same microscope structure and engine, no iterations, another key.
    like = reconstruct(start, data, engine, num_iterations=0, key=jr.PRNGKey(99))
    loaded = load_solution(path, like)
    assert loaded.iteration == 3
    np.testing.assert_array_equal(np.asarray(loaded.key), np.asarray(key))
    np.testing.assert_array_equal(np.asarray(loaded.losses), np.asarray(first.losses))
    resumed = reconstruct(loaded, data, engine, num_iterations=2)
    assert resumed.iteration == 5
    assert resumed.result == RESULTS.max_iterations_reached
    np.testing.assert_array_equal(
        np.asarray(resumed.microscope.sample.sample), np.asarray(whole.microscope.sample.sample)
    )
    np.testing.assert_array_equal(
        np.asarray(resumed.microscope.probe.fields()), np.asarray(whole.microscope.probe.fields())
    )
    np.testing.assert_array_equal(np.asarray(resumed.losses), np.asarray(whole.losses))
    content = read_result(path)
    assert content["attrs"]["engine"] == type(engine).__name__
    assert type(engine)(**content["attrs"]["engine_parameters"]) == engine


def test_load_rejects_mismatched_template(problem, tmp_path):
    data, _, start = problem
    first = reconstruct(start, data, RPIE(), num_iterations=1)
    path = tmp_path / "run.h5"
    save_solution(path, first, data, RPIE())
    import equinox as eqx

    bigger = eqx.tree_at(lambda m: m.sample.sample, start, jnp.ones((2, 2), jnp.complex64))
    like = first.__class__(bigger, first.state, first.losses, 0, first.result, first.key, first.trainable)
    with pytest.raises(ValueError, match="does not fit"):
        load_solution(path, like)
