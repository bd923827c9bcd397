"""`CXIFrames`: frames read lazily in position batches; sharding from a file; streaming."""

import re

import equinox as eqx
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_cxi_orientation as orientation
from helpers import illumination_map, noiseless_far_field_problem, object_error, tiny_far_field_problem

import janssen.io as jio
from janssen.invert import RPIE, reconstruct, shard_positions

DETECTOR_DATA = "entry_1/instrument_1/detector_1/data"


def make_data(*, npos=7, shape=(8, 6)):
    rng = np.random.default_rng(3)
    counts = rng.poisson(20.0, (npos, *shape)).astype(np.float32)
    positions = rng.uniform(-1e-6, 1e-6, (npos, 2))
    bad = np.zeros(shape, bool)
    bad[1, 2] = True
    return jio.MicroscopeData(counts, positions, 1.3e-10, jnp.array([75e-6, 55e-6]), 2.5, bad)


def contiguous_copy(path):
    """Rewrite the frames as one plain, uncompressed block (as many instruments store them)."""
    with h5py.File(path, "r+") as handle:
        frames = handle[DETECTOR_DATA][()]
        del handle[DETECTOR_DATA]
        handle.create_dataset(DETECTOR_DATA, data=frames)  # the soft link in data_1 still resolves


@pytest.mark.parametrize("mapped", [False, True])
def test_reads_what_read_cxi_reads(tmp_path, mapped):
    data = make_data()
    path = tmp_path / "scan.cxi"
    jio.write_cxi(path, data)
    if mapped:
        contiguous_copy(path)
    whole = jio.read_cxi(path)
    with jio.CXIFrames(path) as frames:
        assert frames.memory_mapped is mapped  # write_cxi compresses: h5py reads; a plain block is mapped
        assert frames.num_positions == len(frames) == 7 and frames.frame_shape == (8, 6)
        np.testing.assert_array_equal(frames.positions, np.asarray(whole.positions, np.float64))
        expected = np.asarray(whole.intensities)
        # Exact: the same numbers, any order, repeats allowed.
        np.testing.assert_array_equal(frames.read([5, 1, 5, 0]), expected[[5, 1, 5, 0]])
        np.testing.assert_array_equal(frames.read(slice(2, 6)), expected[2:6])
        batch = frames.batch(np.array([6, 2]))
        np.testing.assert_array_equal(np.asarray(batch.intensities), expected[[6, 2]])
        np.testing.assert_array_equal(np.asarray(batch.positions), np.asarray(whole.positions)[[6, 2]])
        np.testing.assert_array_equal(np.asarray(batch.bad_pixels), np.asarray(whole.bad_pixels))
        assert float(batch.wavelength) == float(whole.wavelength)
        np.testing.assert_array_equal(np.asarray(batch.camera_pixel_size), np.asarray(whole.camera_pixel_size))


@pytest.mark.parametrize("as_numpy", [False, True])
def test_in_memory_batch_takes_the_indexed_frames(as_numpy):
    """`MicroscopeData.batch` gathers the same frames from JAX and NumPy arrays, negative
    indices counted from the end, and refuses an index outside the positions."""
    data = make_data()
    if as_numpy:
        data = eqx.tree_at(lambda d: d.intensities, data, np.asarray(data.intensities))
    expected = np.asarray(data.intensities)
    batch = data.batch([6, -7, 2, 2])
    np.testing.assert_array_equal(np.asarray(batch.intensities), expected[[6, 0, 2, 2]])
    np.testing.assert_array_equal(np.asarray(batch.positions), np.asarray(data.positions)[[6, 0, 2, 2]])
    for bad in ([7], [-8]):
        with pytest.raises(IndexError, match=r"`index` must lie in \[-7, 7\) for 7 positions"):
            data.batch(bad)


# ---- detector orientation: what read_cxi reads, batch by batch ----------------------------------


def oriented_data():
    """8 frames of 16 x 12 (even sides, where a plain flip would move the centre pixel), pitch x != y, and an
    asymmetric mask: a forgotten transpose, pitch swap or flip about the wrong pixel changes what is read."""
    data = make_data(npos=8, shape=(16, 12))
    bad = np.zeros((16, 12), bool)
    bad[1, 2] = bad[8, 9] = True
    return eqx.tree_at(lambda d: d.bad_pixels, data, jnp.asarray(bad))


GEOMETRY = ("positions", "wavelength", "camera_pixel_size", "distance", "bad_pixels")


def assert_same_data(a, b, index=slice(None), names=("intensities", *GEOMETRY)):
    """`a`'s fields `names` equal `b`'s (at the positions `index`): same shapes, dtypes and numbers."""
    for name in names:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        if name in ("intensities", "positions"):
            y = y[index]
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name


@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("axes", jio.DETECTOR_ORIENTATIONS)
def test_every_orientation_reads_what_read_cxi_reads(tmp_path, axes, mapped):
    data = oriented_data()
    path = tmp_path / "o.cxi"
    jio.write_cxi(path, data, detector_axes=axes)
    if mapped:
        contiguous_copy(path)
    whole = jio.read_cxi(path)
    assert_same_data(whole, data)  # read_cxi maps the stored orientation back onto the data
    expected = np.asarray(whole.intensities)
    with jio.CXIFrames(path) as frames:
        assert frames.memory_mapped is mapped
        assert frames.frame_shape == whole.frame_shape == (16, 12)  # stored (12, 16) when transposed
        np.testing.assert_array_equal(frames.positions, np.asarray(whole.positions, np.float64))
        assert_same_data(frames.geometry, whole, slice(0, 1), GEOMETRY)  # the mask and pitch in janssen's frame
        for i in range(whole.num_positions):
            np.testing.assert_array_equal(frames.read([i]), expected[i : i + 1])
        np.testing.assert_array_equal(frames.read(slice(1, 6)), expected[1:6])  # as shard_positions reads
        np.testing.assert_array_equal(frames.read([5, 1, 5, 0]), expected[[5, 1, 5, 0]])
        served = [(index, batch) for index, batch in frames.batches(3, seed=2, drop_remainder=False)]
    assert sorted(np.concatenate([index for index, _ in served]).tolist()) == list(range(8))
    for index, batch in served:
        assert_same_data(batch, whole, index)


def refusal(read, path):
    """The message of the `CXIError` that `read(path)` raises."""
    with pytest.raises(jio.CXIError) as info:
        read(path)
    return str(info.value)


@pytest.mark.parametrize("case", orientation.CONTRADICTIONS)
def test_contradictory_metadata_is_refused_as_read_cxi_refuses_it(tmp_path, case):
    """test_cxi_orientation.py's contradictory files: `CXIFrames` raises `read_cxi`'s `CXIError`, word for word."""
    change, message = orientation.CONTRADICTIONS[case]
    data, path = orientation.DATASETS["far"], tmp_path / "bad.cxi"
    jio.write_cxi(path, data, detector_axes=("-y", "+x"))
    with h5py.File(path, "r") as handle:
        basis = handle[orientation.DETECTOR + "/basis_vectors"][()]
        corner = handle[orientation.DETECTOR + "/corner_position"][()]
    for name, value in change(basis, corner, float(data.distance)).items():
        orientation.rewrite(path, name, value)
    expected = refusal(jio.read_cxi, path)
    assert re.search(message, expected)
    assert refusal(jio.CXIFrames, path) == expected


@pytest.mark.parametrize("case", orientation.SLIPS)
def test_unit_slip_is_refused_as_read_cxi_refuses_it(tmp_path, case):
    path = tmp_path / "slip.cxi"
    orientation.write_slip(path, case)
    expected = refusal(jio.read_cxi, path)
    assert f"'/{orientation.SLIPS[case][1]}'" in expected
    assert refusal(jio.CXIFrames, path) == expected


def test_batches_cover_every_position_once(tmp_path):
    path = tmp_path / "scan.cxi"
    jio.write_cxi(path, make_data(npos=10))
    with jio.CXIFrames(path) as frames:
        kept = [index for index, batch in frames.batches(3, seed=1)]
        assert [len(index) for index in kept] == [3, 3, 3]  # the remainder of 1 is dropped
        every = [index for index, _ in frames.batches(3, seed=1, drop_remainder=False)]
        assert sorted(np.concatenate(every).tolist()) == list(range(10))
        in_order = next(frames.batches(4))[0]
        np.testing.assert_array_equal(in_order, [0, 1, 2, 3])
        assert not np.array_equal(kept[0], [0, 1, 2])  # shuffled


def test_bad_input(tmp_path):
    with pytest.raises(jio.CXIError, match="does not exist"):
        jio.CXIFrames(tmp_path / "absent.cxi")
    path = tmp_path / "scan.cxi"
    jio.write_cxi(path, make_data())
    with jio.CXIFrames(path) as frames:
        with pytest.raises(ValueError, match=r"`index` must lie in \[0, 7\)"):
            frames.read([7])
        with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
            next(frames.batches(0))
    with h5py.File(path, "r+") as handle:
        del handle["entry_1/sample_1/geometry_1/translation"]
        del handle["entry_1/data_1/translation"]
    with pytest.raises(jio.CXIError, match="sample translations"):
        jio.CXIFrames(path)


def test_shard_positions_from_a_file(tmp_path):
    data, _, start = noiseless_far_field_problem(grid=3)
    path = tmp_path / "scan.cxi"
    jio.write_cxi(path, data)
    from_data = shard_positions(start, jio.read_cxi(path))[1]
    with jio.CXIFrames(path) as frames:
        from_file = shard_positions(start, frames)[1]
    for name in ("intensities", "positions", "wavelength", "camera_pixel_size", "distance", "bad_pixels"):
        np.testing.assert_array_equal(np.asarray(getattr(from_file, name)), np.asarray(getattr(from_data, name)))
    assert from_file.intensities.dtype == from_data.intensities.dtype


def stream(microscope, frames, engine, *, batch_size, epochs):
    """docs/scale.md's recipe: one `reconstruct` iteration per batch of positions read from the file."""
    solution = None
    for epoch in range(epochs):
        for _, batch in frames.batches(batch_size, seed=epoch):
            positions = jnp.asarray(batch.positions, microscope.positions.dtype)
            if solution is None:
                solution = reconstruct(
                    eqx.tree_at(lambda m: m.positions, microscope, positions), batch, engine, num_iterations=1
                )
            else:
                solution = reconstruct(
                    eqx.tree_at(lambda s: s.microscope.positions, solution, positions), batch, engine, num_iterations=1
                )
    return solution


def test_streaming_reconstruction_converges(tmp_path, getkey):
    data, true, start = tiny_far_field_problem(getkey(), n=32, grid=5, step=5)
    path = tmp_path / "scan.cxi"
    jio.write_cxi(path, data)
    illumination = np.asarray(illumination_map(true))
    truth = np.asarray(true.sample.sample)
    before = object_error(truth, np.asarray(start.sample.sample), illumination)
    with jio.CXIFrames(path) as frames:
        solution = stream(start, frames, RPIE(mode="batched", adapt_alpha=False), batch_size=5, epochs=8)
    after = object_error(truth, np.asarray(solution.microscope.sample.sample), illumination)
    # Measured: 0.174 (unit object) -> 0.042 after 8 epochs of 5 batches of 5 positions
    # (8 full-data batched rPIE iterations: 0.061).
    assert before > 0.15
    assert after <= 0.06


@pytest.fixture(scope="module")
def simulated_file(tmp_path_factory):
    """janssen's simulator, 64 positions of 48 x 48, written to a CXI file a batch at a time."""
    import jax.random as jr

    path = tmp_path_factory.mktemp("stream") / "scan.cxi"
    written = jio.simulate_cxi(path, 48, 64, key=jr.PRNGKey(5), photons=1e6, batch_size=20)
    return path, written


def test_start_from_a_file_is_the_default_start(simulated_file):
    from janssen.invert import init_far_field_from_file, init_far_field_microscope

    path, _ = simulated_file
    whole = init_far_field_microscope(jio.read_cxi(path))
    with jio.CXIFrames(path) as frames:
        same = init_far_field_from_file(frames, sample_positions=64)
        patch = init_far_field_from_file(frames, sample_positions=24)
        with pytest.raises(ValueError, match="`sample_positions`"):
            init_far_field_from_file(frames, sample_positions=0)
    # Every frame read: the default path's start exactly (float32 round-off of the centring).
    np.testing.assert_allclose(np.asarray(same.positions), np.asarray(whole.positions), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(same.probe.fields()), np.asarray(whole.probe.fields()))
    assert same.sample.sample.shape == whole.sample.sample.shape
    # From 24 central frames: the same scan and grid; the guess is that of the patch.
    np.testing.assert_allclose(np.asarray(patch.positions), np.asarray(whole.positions), atol=1e-12)
    assert patch.sample.sample.shape == whole.sample.sample.shape


def test_a_given_probe_is_scaled_to_the_frames_the_start_reads_once(simulated_file, monkeypatch):
    """`scale_probe=True`: the probe's power is the mean counts per frame of the central frames
    the start reads (in float64, to 1e-6), and those frames are read once; without it the probe
    keeps its own power (to 1e-6); a probe with no power is refused."""
    from janssen.invert import central_indices, init_far_field_from_file, init_far_field_microscope

    path, written = simulated_file
    given = np.asarray(written.probe)[0] * 3.7  # any power
    reads = []
    read = jio.CXIFrames.read

    def counting(self, index):
        reads.append(np.asarray(index).size)
        return read(self, index)

    monkeypatch.setattr(jio.CXIFrames, "read", counting)
    with jio.CXIFrames(path) as frames:
        central = central_indices(frames.positions, 24)
        scaled = init_far_field_from_file(frames, probe=given, sample_positions=24, scale_probe=True, align=False)
        assert sum(reads) == 24  # the central frames, once
        kept = init_far_field_from_file(frames, probe=given, sample_positions=24, align=False)
        counts = np.mean(np.sum(read(frames, np.sort(central)).astype(np.float64), axis=(1, 2)))
    power = lambda m: float(np.sum(np.abs(np.asarray(m.probe.fields(), np.complex128)) ** 2))  # noqa: E731
    np.testing.assert_allclose(power(scaled), counts, rtol=1e-6)
    np.testing.assert_allclose(power(kept), np.sum(np.abs(given.astype(np.complex128)) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match="`probe` must have some power"):
        init_far_field_microscope(jio.read_cxi(path), np.zeros_like(given), scale_probe=True)


def test_reconstruct_from_file_converges_as_in_memory(simulated_file):
    """Sequential rPIE streamed in batches of 16 positions against the same engine on the frames in memory.

    Measured (30 epochs / iterations, default-path start): streamed 0.0176, in memory
    0.0180; the per-epoch loss falls from 4.54 to 0.67.
    """
    from janssen.invert import init_far_field_from_file, reconstruct_from_file

    path, written = simulated_file
    truth = jio.read_ground_truth(path)
    weight = np.asarray(illumination_map(truth.microscope()))
    with jio.CXIFrames(path) as frames:
        start = init_far_field_from_file(frames)
        streamed = reconstruct_from_file(start, frames, RPIE(), epochs=30, batch_size=16)
        with pytest.raises(ValueError, match="`epochs`"):
            reconstruct_from_file(start, frames, RPIE(), epochs=-1)
        with pytest.raises(ValueError, match="one position per frame"):
            reconstruct_from_file(
                eqx.tree_at(lambda m: m.positions, start, start.positions[:5]), frames, RPIE(), epochs=1
            )
    memory = reconstruct(start, jio.read_cxi(path), RPIE(), num_iterations=30)
    streamed_error = object_error(written.object, np.asarray(streamed.microscope.sample.sample), weight)
    memory_error = object_error(written.object, np.asarray(memory.microscope.sample.sample), weight)
    assert streamed.microscope.positions.shape == (64, 2) and streamed.iteration == 30 and len(streamed.losses) == 30
    np.testing.assert_array_equal(np.asarray(streamed.microscope.positions), np.asarray(start.positions))
    assert streamed_error < 0.066
    assert streamed_error < 1.25 * memory_error
    assert float(streamed.losses[-1]) < 0.3 * float(streamed.losses[0])


def test_reconstruct_from_file_reports_checkpoints_and_stops_on_ctrl_c(simulated_file):
    """`callback` after every epoch, `checkpoint` after every `checkpoint_every` epochs and at the end, and
    Ctrl-C (here raised by the callback of epoch 2) ends the run with `interrupted`, keeping what was done."""
    from janssen.invert import RESULTS, init_far_field_from_file, reconstruct_from_file

    path, _ = simulated_file
    seen, saved = [], []

    def callback(epoch, loss, microscope):
        seen.append((epoch, loss, microscope.positions.shape))
        if epoch == 2:
            raise KeyboardInterrupt

    with jio.CXIFrames(path) as frames:
        start = init_far_field_from_file(frames)
        whole = reconstruct_from_file(start, frames, RPIE(), epochs=3, batch_size=32, checkpoint=saved.append)
        stopped = reconstruct_from_file(start, frames, RPIE(), epochs=5, batch_size=32, callback=callback)
        with pytest.raises(ValueError, match="`checkpoint_every`"):
            reconstruct_from_file(start, frames, RPIE(), epochs=1, checkpoint_every=-1)
    assert [solution.iteration for solution in saved] == [1, 2, 3, 3]  # every epoch, then the end
    assert [solution.result for solution in saved[:3]] == [RESULTS.running] * 3
    assert saved[-1].result == whole.result == RESULTS.max_iterations_reached
    assert all(solution.microscope.positions.shape == (64, 2) for solution in saved)
    np.testing.assert_array_equal(np.asarray(saved[1].losses), np.asarray(whole.losses)[:2])
    assert [(epoch, shape) for epoch, _, shape in seen] == [(1, (64, 2)), (2, (64, 2))]
    assert stopped.result == RESULTS.interrupted and stopped.iteration == 2 and stopped.losses.shape == (2,)
    np.testing.assert_array_equal(np.asarray(stopped.losses), np.asarray(whole.losses)[:2])  # same key, same run


def test_reconstruct_from_file_resumes_from_its_checkpoint(simulated_file, tmp_path):
    """3 epochs saved with `save_solution`, read back into the `epochs=0` template with `load_solution`
    and continued for 2 more: the 5 epochs of one run, its losses and object, with momentum (mPIE).

    Measured: identical (largest difference 0); continued from a fresh start instead of the
    checkpoint the object differs by 0.71 of its largest value.
    """
    import jax.random as jr

    from janssen.invert import (
        MomentumPIE,
        init_far_field_from_file,
        load_solution,
        reconstruct_from_file,
        save_solution,
    )

    path, _ = simulated_file
    engine = MomentumPIE(adapt_alpha=False, momentum=0.3)  # a state that carries more than the microscope
    options = {"batch_size": 24, "key": jr.PRNGKey(3)}  # batches of 24, 24 and 16
    with jio.CXIFrames(path) as frames:
        start = init_far_field_from_file(frames)
        whole = reconstruct_from_file(start, frames, engine, epochs=5, **options)
        part = reconstruct_from_file(start, frames, engine, epochs=3, **options)
        save_solution(tmp_path / "part.h5", part, frames.geometry, engine)
        like = reconstruct_from_file(start, frames, engine, epochs=0, **options)
        assert like.iteration == 0 and like.losses.shape == (0,) and like.microscope.positions.shape == (64, 2)
        assert reconstruct_from_file(like, frames, engine, epochs=0) is like
        loaded = load_solution(tmp_path / "part.h5", like)
        np.testing.assert_array_equal(
            np.asarray(loaded.microscope.sample.sample), np.asarray(part.microscope.sample.sample)
        )
        rest = reconstruct_from_file(loaded, frames, engine, epochs=2, batch_size=24)
        fresh = reconstruct_from_file(start, frames, engine, epochs=2, **options)
    assert rest.iteration == 5 and rest.losses.shape == (5,)
    np.testing.assert_array_equal(np.asarray(rest.losses)[:3], np.asarray(part.losses))
    np.testing.assert_allclose(np.asarray(rest.losses), np.asarray(whole.losses), rtol=1e-6)
    scale = float(np.abs(np.asarray(whole.microscope.sample.sample)).max())
    obj = lambda solution: np.asarray(solution.microscope.sample.sample)  # noqa: E731
    np.testing.assert_allclose(obj(rest), obj(whole), rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(
        np.asarray(rest.state.object_velocity), np.asarray(whole.state.object_velocity), atol=1e-6 * scale
    )
    print(f"fresh start vs one run: {np.abs(obj(fresh) - obj(whole)).max() / scale:.3g}")
    assert np.abs(obj(fresh) - obj(whole)).max() > 0.2 * scale  # the check can fail: the start matters


def test_whole_scan_steps_are_reconstruct_in_memory(simulated_file):
    """`whole_scan=True`: batched mPIE (its default momentum 0.9 and loss-based damping) takes one step per
    epoch from sums over batches of 24, 24 and 16 positions, and runs as `reconstruct` on the frames in memory.

    Measured (6 epochs against 6 iterations): losses equal to 1e-7 (5.067 -> 3.155), object within
    1.2e-4 and probe within 4.3e-5 of their largest values (float32 sums added in another order).
    Batch by batch instead (`whole_scan=False`, the same engine), the losses differ from the first epoch.
    """
    from janssen.invert import MomentumPIE, init_far_field_from_file, reconstruct_from_file

    path, _ = simulated_file
    engine = MomentumPIE(mode="batched")
    with jio.CXIFrames(path) as frames:
        start = init_far_field_from_file(frames)
        whole = reconstruct_from_file(start, frames, engine, epochs=6, batch_size=24, whole_scan=True)
        batches = reconstruct_from_file(start, frames, engine, epochs=1, batch_size=24)
        with pytest.raises(ValueError, match=r"`whole_scan`: RPIE's step is not a sum over positions"):
            reconstruct_from_file(start, frames, RPIE(), epochs=1, whole_scan=True)
    memory = reconstruct(start, jio.read_cxi(path), engine, num_iterations=6)
    assert whole.iteration == 6 and whole.losses.shape == (6,) and whole.microscope.positions.shape == (64, 2)
    np.testing.assert_array_equal(np.asarray(whole.microscope.positions), np.asarray(start.positions))
    np.testing.assert_allclose(np.asarray(whole.losses), np.asarray(memory.losses), rtol=1e-5)
    assert float(memory.losses[-1]) < 0.7 * float(memory.losses[0])  # it moved: 5.07 -> 3.15
    assert abs(float(batches.losses[0]) - float(memory.losses[0])) > 1e-3 * float(memory.losses[0])
    for part in (lambda s: s.microscope.sample.sample, lambda s: s.microscope.probe.fields()):
        ours, theirs = np.asarray(part(whole)), np.asarray(part(memory))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-3 * float(np.abs(theirs).max()))


def test_whole_scan_resumes_and_stops_on_ctrl_c(simulated_file, tmp_path):
    """A whole-scan run saved after 3 epochs, read into its `epochs=0` template and continued for 2 is the
    5-epoch run (losses to 1e-6); Ctrl-C in epoch 3's callback keeps epochs 1-2 and says `interrupted`."""
    from janssen.invert import (
        RESULTS,
        MomentumPIE,
        init_far_field_from_file,
        load_solution,
        reconstruct_from_file,
        save_solution,
    )

    path, _ = simulated_file
    engine = MomentumPIE(mode="batched")
    options = {"batch_size": 20, "whole_scan": True}

    def interrupt(epoch, loss, microscope):
        if epoch == 3:
            raise KeyboardInterrupt

    saved = []
    with jio.CXIFrames(path) as frames:
        start = init_far_field_from_file(frames)
        one = reconstruct_from_file(start, frames, engine, epochs=5, checkpoint=saved.append, **options)
        part = reconstruct_from_file(start, frames, engine, epochs=3, **options)
        save_solution(tmp_path / "part.h5", part, frames.geometry, engine)
        like = reconstruct_from_file(start, frames, engine, epochs=0, **options)
        assert like.iteration == 0 and like.losses.shape == (0,)
        rest = reconstruct_from_file(load_solution(tmp_path / "part.h5", like), frames, engine, epochs=2, **options)
        stopped = reconstruct_from_file(start, frames, engine, epochs=5, callback=interrupt, **options)
    assert [solution.iteration for solution in saved] == [1, 2, 3, 4, 5, 5]
    assert rest.iteration == 5 and rest.result == RESULTS.max_iterations_reached
    np.testing.assert_allclose(np.asarray(rest.losses), np.asarray(one.losses), rtol=1e-6)
    scale = float(np.abs(np.asarray(one.microscope.sample.sample)).max())
    np.testing.assert_allclose(
        np.asarray(rest.microscope.sample.sample), np.asarray(one.microscope.sample.sample), atol=1e-6 * scale
    )
    # The callback of epoch 3 runs after its step was kept: the run stops with three epochs done.
    assert stopped.result == RESULTS.interrupted and stopped.iteration == 3
    np.testing.assert_array_equal(np.asarray(stopped.losses), np.asarray(one.losses)[:3])


@pytest.mark.parametrize("whole_scan", [False, True])
def test_a_streamed_epoch_compiles_nothing_after_the_first_two(simulated_file, whole_scan):
    """After two epochs (batches of 24, 24 and 16: every program compiled) the next four compile nothing.

    Before 2026-12-08 `Solution.final_loss`, asked after every batch, indexed a loss array one
    longer each time on the device, and each epoch's loss history was made with `jnp.asarray`
    of a list: a program compiled (and kept, about 1.1 MB) for every batch and epoch, a
    streamed run's memory growing by 20-30 MB an epoch on a 4000-position scan.
    """
    from helpers import compilations

    from janssen.invert import MomentumPIE, init_far_field_from_file, reconstruct_from_file

    path, _ = simulated_file
    engine = MomentumPIE(mode="batched") if whole_scan else RPIE(adapt_alpha=False)
    counts = []
    with jio.CXIFrames(path) as frames, compilations() as compiled:
        jax.jit(lambda x: x * 3.5 + 1)(jnp.ones(17 + whole_scan)).block_until_ready()  # a new program
        assert len(compiled) >= 1  # the listener hears compilations
        start = init_far_field_from_file(frames)
        callback = lambda epoch, loss, microscope: counts.append(len(compiled))  # noqa: E731
        reconstruct_from_file(start, frames, engine, epochs=6, batch_size=24, callback=callback, whole_scan=whole_scan)
    assert counts[2:] == [counts[1]] * 4


def test_verdict_and_geometry_check_read_a_file_as_the_data_in_memory(simulated_file):
    """`compute_verdict` and `check_geometry` on an open `CXIFrames`: the numbers of the frames in memory."""
    from janssen.invert import compute_verdict, init_far_field_from_file

    path, _ = simulated_file
    data = jio.read_cxi(path)
    with jio.CXIFrames(path) as frames:
        microscope = init_far_field_from_file(frames, sample_positions=64)
        from_file = compute_verdict(microscope, frames, batch_size=24)  # blocks of 24, 24 and 16 frames
        grid = jio.check_geometry(frames)
    in_memory = compute_verdict(microscope, data, batch_size=24)
    np.testing.assert_allclose(from_file.r, in_memory.r, rtol=1e-6)
    assert from_file.floor == in_memory.floor  # host float64 work on the same float32 frames
    np.testing.assert_allclose(from_file.per_frame, in_memory.per_frame, rtol=1e-5)
    np.testing.assert_allclose(from_file.per_pixel, in_memory.per_pixel, rtol=1e-5)
    assert grid == jio.check_geometry(data)
