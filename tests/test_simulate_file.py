"""`simulate_cxi` / `simulate_preset_cxi`: simulated datasets written to CXI a batch at a time."""

import h5py
import jax.random as jr
import numpy as np
import pytest

import janssen.io as jio


def _contents(path) -> dict:
    out = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(lambda name, item: out.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return out


@pytest.mark.parametrize("axes", [("+y", "+x"), ("-x", "+y")])
def test_lazy_file_equals_the_in_memory_simulation_written_whole(tmp_path, axes):
    """Every dataset of the file equals `write_cxi(simulate(...))`'s, bit for bit, whatever the batch size."""
    options = dict(key=jr.PRNGKey(2), photons=1e5, modes=2)
    dataset = jio.simulate(48, 37, **options)
    jio.write_cxi(tmp_path / "whole.cxi", dataset.data, ground_truth=dataset, detector_axes=axes)
    seen = []
    jio.simulate_cxi(
        tmp_path / "lazy.cxi", 48, 37, batch_size=10, detector_axes=axes, progress=lambda *a: seen.append(a), **options
    )
    whole, lazy = _contents(tmp_path / "whole.cxi"), _contents(tmp_path / "lazy.cxi")
    assert sorted(whole) == sorted(lazy)
    for name in whole:
        np.testing.assert_array_equal(lazy[name], whole[name], err_msg=name)
    assert seen == [(10, 37), (20, 37), (30, 37), (37, 37)]
    assert not (tmp_path / "lazy.cxi.partial").exists()


def test_batched_simulation_draws_the_same_frames_as_one_batch():
    # The noise comes from one generator in scan order: the batch size changes nothing.
    from janssen.io._simulate import _measurement, _simulation_inputs

    inputs = _simulation_inputs(32, 23, key=jr.PRNGKey(5), photons=1e4)
    one = np.concatenate(list(_measurement(**inputs, batch_size=23)[1]))
    many = np.concatenate(list(_measurement(**inputs, batch_size=4)[1]))
    np.testing.assert_array_equal(many, one)
    whole = jio.simulate(32, 23, key=jr.PRNGKey(5), photons=1e4)
    np.testing.assert_array_equal(one, np.asarray(whole.data.intensities))


def test_uncompressed_file_is_memory_mapped_and_read_back(tmp_path):
    written = jio.simulate_cxi(tmp_path / "raw.cxi", 32, 20, key=jr.PRNGKey(1), compression=None)
    path = written.path
    truth = jio.simulate(32, 20, key=jr.PRNGKey(1))
    with jio.CXIFrames(path) as frames:
        assert frames.memory_mapped
        np.testing.assert_array_equal(frames.read(slice(None)), np.asarray(truth.data.intensities))
    back = jio.read_ground_truth(path)
    for name in ("object", "probe", "positions"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), np.asarray(getattr(truth, name)))
        np.testing.assert_array_equal(getattr(written, name), np.asarray(getattr(truth, name)))
    assert written.geometry.frame_shape == (32, 32)


def test_preset_file_matches_the_preset(tmp_path):
    path = jio.simulate_preset_cxi(tmp_path / "small.cxi", "small", key=jr.PRNGKey(0), photons=1e5).path
    preset = jio.simulate_preset("small", key=jr.PRNGKey(0), photons=1e5)
    np.testing.assert_array_equal(np.asarray(jio.read_cxi(path).intensities), np.asarray(preset.data.intensities))


def test_refusals_and_nothing_left_behind(tmp_path):
    target = tmp_path / "taken.cxi"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        jio.simulate_cxi(target, 32, 4, key=jr.PRNGKey(0))
    assert target.read_bytes() == b"keep me"
    with pytest.raises(ValueError, match="`compression`"):
        jio.simulate_cxi(tmp_path / "a.cxi", 32, 4, key=jr.PRNGKey(0), compression="lzf9")
    with pytest.raises(ValueError, match="`batch_size`"):
        jio.simulate_cxi(tmp_path / "a.cxi", 32, 4, key=jr.PRNGKey(0), batch_size=0)
    with pytest.raises(ValueError, match="`name`"):
        jio.simulate_preset_cxi(tmp_path / "a.cxi", "huge", key=jr.PRNGKey(0))

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jio.simulate_cxi(tmp_path / "b.cxi", 32, 8, key=jr.PRNGKey(0), batch_size=2, progress=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.cxi"]
    jio.simulate_cxi(target, 32, 4, key=jr.PRNGKey(0), overwrite=True)
    assert jio.read_cxi(target).num_positions == 4
