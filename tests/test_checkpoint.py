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
    view = read_result(path, state=False)  # what the report reads: all but the checkpoint
    assert view["state_bytes"] is None
    np.testing.assert_array_equal(view["object"], obj)
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


def _tiny_result(path, loss):
    write_result(
        path,
        object=np.ones((4, 4), np.complex64),
        probe=np.ones((2, 2), np.complex64),
        positions=np.zeros((1, 2)),
        loss=np.asarray(loss),
        wavelength=1e-10,
        distance=1.0,
        object_pixel_size=[1e-8, 1e-8],
        attrs={"iteration": len(loss)},
    )


def test_write_does_not_follow_a_link_or_keep_a_stale_temporary(tmp_path):
    """A symbolic link planted at `<out>.partial` is replaced, never written through; a
    temporary left by a killed run is replaced by the new file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "r.h5"
    (tmp_path / "r.h5.partial").symlink_to(victim)
    _tiny_result(out, [1.0])
    assert victim.read_text() == "precious"
    assert not (tmp_path / "r.h5.partial").exists() and not (tmp_path / "r.h5.partial").is_symlink()
    assert read_result(out)["attrs"]["iteration"] == 1
    (tmp_path / "r.h5.partial").write_bytes(b"half a file from a killed run")
    _tiny_result(out, [1.0, 0.5])
    assert read_result(out)["attrs"]["iteration"] == 2 and not (tmp_path / "r.h5.partial").exists()


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    """A write that fails half-way (here: the disk fills while the loss is written) leaves
    the previous result whole and removes its temporary."""
    import errno

    import h5py

    out = tmp_path / "r.h5"
    _tiny_result(out, [3.0, 2.0])
    before = out.read_bytes()
    create = h5py.Group.create_dataset

    def full_disk(self, name, *args, **kwargs):
        if name == "loss":
            raise OSError(errno.ENOSPC, "No space left on device")
        return create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    with pytest.raises(OSError, match=r"cannot write result file .*r\.h5.*No space left on device"):
        _tiny_result(out, [3.0, 2.0, 1.0])
    assert out.read_bytes() == before
    assert not (tmp_path / "r.h5.partial").exists()


def test_extra_attributes_are_in_the_same_write(problem, tmp_path):
    """`save_solution(attrs=...)`: the caller's records land in the one file write, and an
    `engine_parameters` dict adds to the engine's own fields; a mid-run checkpoint says `running`."""
    data, _, start = problem
    saved = []
    path = tmp_path / "run.h5"

    def checkpoint(solution):
        save_solution(path, solution, data, RPIE(), attrs={"engine_parameters": {"optimizer": "x"}, "cli": {"a": 1}})
        saved.append(read_result(path)["attrs"])

    reconstruct(start, data, RPIE(), num_iterations=3, checkpoint=checkpoint, checkpoint_every=2)
    assert [(attrs["iteration"], attrs["result"]) for attrs in saved] == [(2, "running"), (3, "max_iterations_reached")]
    params = saved[-1]["engine_parameters"]
    assert params["optimizer"] == "x" and params["alpha"] == RPIE().alpha
    assert saved[-1]["cli"] == '{"a": 1}'
