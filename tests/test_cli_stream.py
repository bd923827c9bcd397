"""`janssen reconstruct --stream`: frames left in the CXI file, read a batch of positions at a time."""

import json
import shlex

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import illumination_map, object_error

import janssen.io as jio
from janssen.cli import main
from janssen.optics import Probe, SampleFunction, orthogonalize_modes
from janssen.plots import select_frames
from janssen.scopes import FarFieldMicroscope

EPOCHS = 8


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    """janssen's simulator, 64 positions of 48 x 48, written to a CXI file a batch at a time (as test_lazy_cxi.py)."""
    path = tmp_path_factory.mktemp("cli_stream") / "scan.cxi"
    written = jio.simulate_cxi(path, 48, 64, key=jr.PRNGKey(5), photons=1e6, batch_size=20)
    return path, written


def run(capsys, *argv):
    """`janssen reconstruct ARGV`: the exit code, stdout and stderr."""
    code = main(["--compile-cache", "off", "reconstruct", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


#: Stage caps for the default schedule in these tests (`DEFAULT_STAGE_ITERATIONS` is 100, 200, 8,
#: 100, 8, 100): every stage runs, in seconds, the same on the file and in memory.
SHORT_STAGES = (6, 4, 3, 6, 2, 4)


def test_stream_reaches_the_in_memory_error_and_writes_the_result(stream_file, tmp_path, monkeypatch, capsys):
    """The default schedule streamed in batches of 16 against the default schedule on the frames in memory,
    both from the command line, with the stages capped at `SHORT_STAGES`.

    Measured: streamed object error 0.0183, in memory 0.0186 (the unit object: 0.52); with
    the real caps (186 epochs and 5 search steps, the stages converging where they do in
    memory) 0.0119 against 0.0123, R equal to 5 digits. Before 2026-12-08 the streamed
    default was rPIE, the search, rPIE, the search, rPIE (8 epochs: 0.0274).
    """
    import janssen.cli._inputs as inputs
    import janssen.invert as jinv
    import janssen.invert._schedule as schedule
    import janssen.plots._save as save

    path, written = stream_file
    monkeypatch.setattr(schedule, "DEFAULT_STAGE_ITERATIONS", SHORT_STAGES)
    memory = tmp_path / "m.h5"
    assert run(capsys, path, "--out", memory)[0] == 0
    # No memory to spare: the in-memory path would refuse the file, the streamed one never asks.
    monkeypatch.setattr(inputs, "available_memory", lambda: 1.0)
    drawn = []  # what the patterns figure is drawn from (the figure is still written)
    plot_patterns = save.plot_patterns

    def recording(measured, predicted, figure, **options):
        drawn.append((measured, predicted, options["frames"]))
        return plot_patterns(measured, predicted, figure, **options)

    monkeypatch.setattr(save, "plot_patterns", recording)
    refused = run(capsys, path, "--out", tmp_path / "refused.h5")
    assert refused[0] == 2 and "add --stream" in refused[2] and "Traceback" not in refused[2]
    out = tmp_path / "s.h5"
    code, stdout, stderr = run(capsys, path, "--stream", "--stream-batch", 16, "--out", out)
    assert code == 0, stderr
    monkeypatch.undo()

    # Progress: one line per epoch on stderr, numbered within each PIE stage against its cap;
    # the stages run, as in memory; the summary counts the epochs and the searches' steps.
    names = ["RPIE", "EPIE", "PhaseFieldSearch", "MomentumPIE", "PhaseFieldSearch", "MomentumPIE"]
    pie = [(name, cap) for name, cap in zip(names, SHORT_STAGES, strict=True) if name != "PhaseFieldSearch"]
    assert [line.split()[:3] for line in stderr.splitlines() if " epoch " in line and "loss" in line] == [
        [name, "epoch", f"{epoch}/{cap}"] for name, cap in pie for epoch in range(1, cap + 1)
    ]
    (line,) = [line for line in stderr.splitlines() if line.startswith("stages: ")]
    stages = [part.split()[:2] for part in line.removeprefix("stages: ").split(", ")]
    assert [name for name, _ in stages] == names
    assert [int(count) for name, count in stages if name != "PhaseFieldSearch"] == [cap for _, cap in pie]
    steps = sum(int(count) for _, count in stages)
    assert f"{steps} epochs and search steps in total (max_iterations_reached)" in stdout
    assert "left in the file" in stderr

    truth = jio.read_ground_truth(path)
    weight = np.asarray(illumination_map(truth.microscope()))
    saved, in_memory = jio.read_result(out), jio.read_result(memory)
    streamed_error = object_error(written.object, saved["object"], weight)
    memory_error = object_error(written.object, in_memory["object"], weight)
    print(f"object error streamed {streamed_error:.4f}, in memory {memory_error:.4f}")
    assert streamed_error < 0.025
    assert streamed_error < 1.1 * memory_error

    # The result file holds what the normal path's does, every position, one loss per epoch or step,
    # the last stage's engine (what --resume continues).
    attrs = saved["attrs"]
    assert attrs["iteration"] == steps and attrs["engine"] == "MomentumPIE"
    assert attrs["result"] == "max_iterations_reached"
    # Batched mPIE as the in-memory schedule runs it: whole-scan steps, its own momentum and damping.
    assert attrs["engine_parameters"]["mode"] == "batched" and attrs["engine_parameters"]["adapt_alpha"] is True
    assert saved["loss"].shape == (steps,) and saved["loss"][-1] < 0.3 * saved["loss"][0]
    assert saved["positions"].shape == (64, 2) and saved["object"].shape == in_memory["object"].shape
    assert saved["probe"].shape == in_memory["probe"].shape
    cli = json.loads(attrs["cli"])
    assert cli["stream"] == {"batch_size": 16, "epochs": None} and cli["engine"] == "auto"  # the stages' own caps
    # The verdict, read from the file in blocks, is the one computed on the frames in memory.
    verdict = saved["verdict"]
    assert verdict["per_frame"].shape == (64,) and verdict["per_pixel"].shape == (48, 48)
    data, dx = jio.read_cxi(path), saved["object_pixel_size"]
    rebuilt = FarFieldMicroscope(
        Probe(saved["probe"], data.wavelength, dx), SampleFunction(saved["object"], dx), saved["positions"]
    )
    expected = jinv.compute_verdict(rebuilt, data)
    np.testing.assert_allclose(verdict["r"], expected.r, rtol=1e-5)
    np.testing.assert_allclose(verdict["floor"], expected.floor, rtol=1e-9)
    assert verdict["floor"] < verdict["r"] < 2 * verdict["floor"]

    # The figures, the patterns one too, and the report, which reads no frame.
    for kind in ("object", "probe", "loss", "residual", "patterns"):
        assert (tmp_path / f"s_{kind}.png").stat().st_size > 1000
    assert "streamed from the data file" in (tmp_path / "s.html").read_text()
    # The patterns figure shows the best, median and worst frame by the saved verdict's R: their
    # frames as the file holds them (bit for bit: read as `read_cxi` reads them) and the saved
    # result's prediction of them (float32 rounding: rtol 1e-5 of the brightest pixel).
    ((measured, predicted, shown),) = drawn
    assert shown == select_frames(verdict["per_frame"])
    indices = np.asarray([index for _, index in shown])
    assert len(indices) == 3
    np.testing.assert_array_equal(measured, np.asarray(data.intensities)[indices])
    expected_frames = np.asarray(rebuilt.predict(jnp.asarray(indices, dtype=jnp.int32)))
    np.testing.assert_allclose(predicted, expected_frames, rtol=0, atol=1e-5 * expected_frames.max())

    # A streamed result continues streamed only: refused before the data are read.
    code, _, err = run(capsys, path, "--resume", out, "--iterations", 1)
    assert code == 2 and "written by a streamed run (--stream): continue it with --stream" in err
    assert len(err.strip().splitlines()) == 1


def test_stream_from_the_true_probe(stream_file, tmp_path, monkeypatch, capsys):
    """`--stream --probe TRUE.npy`: the start uses the file's probe, and the run reaches an object error
    at least as good as from the data-derived start (8 epochs in batches of 16 each).

    Measured: from the true probe 0.0194, from the data-derived start 0.0266 (the unit object:
    0.52); the start's probe against the file's: normalised overlap 1 - 1e-8, power equal to the
    mean counts per frame to 5e-8.
    """
    import janssen.invert as jinv

    path, written = stream_file
    probe_file = tmp_path / "true_probe.npy"
    np.save(probe_file, np.asarray(written.probe)[0] * 3.0)  # any scale: the command scales it to the counts
    starts = []
    build = jinv.init_far_field_from_file

    def recording(frames, **options):
        starts.append(build(frames, **options))
        return starts[-1]

    monkeypatch.setattr(jinv, "init_far_field_from_file", recording)
    argv = ("--stream", "--stream-batch", 16, "--iterations", EPOCHS)
    code, _, err = run(capsys, path, *argv, "--probe", probe_file, "--out", tmp_path / "p.h5")
    assert code == 0, err
    code, _, err = run(capsys, path, *argv, "--out", tmp_path / "d.h5")
    assert code == 0, err

    # The probe the streamed start used is the file's: the same field (overlap 1 to 1e-5; a
    # tilt by the centring on the bright field would lower it), scaled to the mean counts per
    # frame (here the 64 frames, all nearer the centre than the 512 the start reads).
    used = np.asarray(starts[0].probe.fields())[0].astype(np.complex128)
    given = np.load(probe_file).astype(np.complex128)
    overlap = abs(np.vdot(used, given)) / (np.linalg.norm(used) * np.linalg.norm(given))
    assert overlap > 1 - 1e-5
    counts = float(np.mean(np.sum(np.asarray(jio.read_cxi(path).intensities, dtype=np.float64), axis=(1, 2))))
    np.testing.assert_allclose(np.sum(np.abs(used) ** 2), counts, rtol=1e-5)

    truth = jio.read_ground_truth(path)
    weight = np.asarray(illumination_map(truth.microscope()))
    from_truth = object_error(written.object, jio.read_result(tmp_path / "p.h5")["object"], weight)
    from_data = object_error(written.object, jio.read_result(tmp_path / "d.h5")["object"], weight)
    print(f"object error from the true probe {from_truth:.4f}, from the data-derived start {from_data:.4f}")
    assert from_truth < 0.035
    assert from_truth <= from_data * 1.02  # at least as good (2 %: float32 rounding between runs)


def test_stream_refuses_a_bad_probe_file_as_the_in_memory_run_does(stream_file, tmp_path, capsys):
    """A probe of the wrong shape: the one-line refusal (exit 2) of the in-memory path, word for word,
    given before any frame is read; nothing written."""
    path, _ = stream_file
    probe_file = tmp_path / "probe.npy"
    np.save(probe_file, np.ones((8, 8), dtype=np.complex64))
    expected = f"probe {str(probe_file)!r} must be (y, x) or (modes, y, x) with frames (48, 48), got (8, 8)"
    outs = {}
    for flags in ([], ["--stream"]):
        code, stdout, err = run(capsys, path, *flags, "--probe", probe_file, "--out", tmp_path / "x.h5")
        assert code == 2 and expected in err and "Traceback" not in stdout + err
        errors = [line for line in err.splitlines() if "error:" in line]  # stderr's other line: the data
        assert len(errors) == 1
        outs[bool(flags)] = errors[0]
    assert outs[True] == outs[False] and expected in outs[True]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.npy"]


@pytest.fixture(scope="module")
def two_mode_file(tmp_path_factory):
    """64 positions of 48 x 48 lit by two Gaussian-Schell modes (powers 0.759 / 0.241)."""
    path = tmp_path_factory.mktemp("cli_stream_modes") / "modes.cxi"
    key = jr.PRNGKey(5)
    written = jio.simulate_cxi(path, 48, 64, key=key, photons=1e6, batch_size=20, modes=2, coherence_width=180e-9)
    return path, written


def _mode_powers(probe) -> np.ndarray:
    """The probe's orthogonal modes' fractions of its power, strongest first."""
    _, powers = orthogonalize_modes(jnp.asarray(probe))
    powers = np.sort(np.asarray(powers, dtype=np.float64))[::-1]
    return powers / powers.sum()


def test_stream_two_modes_recovers_their_powers(two_mode_file, tmp_path, monkeypatch, capsys):
    """`--stream --modes 2` (batches of 16) against `--modes 2` in memory, both the default schedule with its
    stages capped at 20, 10, 3, 20, 2 and 10, on a two-mode file; both start from powers 0.95 / 0.05.

    Measured: streamed powers 0.773 / 0.227, in memory 0.782 / 0.218, true 0.759 / 0.241
    (tolerance 0.03); object error streamed 0.0166, in memory 0.0184 (the unit object: 0.52).
    With caps of 30 for the PIE stages: 0.765 and 0.767, errors 0.0129 and 0.0135.
    """
    import janssen.invert._schedule as schedule

    monkeypatch.setattr(schedule, "DEFAULT_STAGE_ITERATIONS", (20, 10, 3, 20, 2, 10))
    path, written = two_mode_file
    streamed, memory = tmp_path / "s.h5", tmp_path / "m.h5"
    code, _, err = run(capsys, path, "--modes", 2, "--stream", "--stream-batch", 16, "--out", streamed)
    assert code == 0, err
    code, _, err = run(capsys, path, "--modes", 2, "--out", memory)
    assert code == 0, err

    truth = jio.read_ground_truth(path)
    true_powers = _mode_powers(truth.probe)
    saved, in_memory = jio.read_result(streamed), jio.read_result(memory)
    assert saved["probe"].shape == in_memory["probe"].shape == (2, 48, 48)
    assert json.loads(saved["attrs"]["cli"])["modes"] == 2
    powers = _mode_powers(saved["probe"])
    weight = np.asarray(illumination_map(truth.microscope()))
    streamed_error = object_error(written.object, saved["object"], weight)
    memory_error = object_error(written.object, in_memory["object"], weight)
    print(f"powers {powers} (in memory {_mode_powers(in_memory['probe'])}, true {true_powers})")
    print(f"object error streamed {streamed_error:.4f}, in memory {memory_error:.4f}")
    np.testing.assert_allclose(powers, true_powers, atol=0.03)
    assert streamed_error < 0.025
    assert streamed_error < 1.15 * memory_error


@pytest.fixture(scope="module")
def sixteen_frames(tmp_path_factory):
    """16 positions of 32 x 32 (as the refusals' data) and a three-mode probe file for them."""
    folder = tmp_path_factory.mktemp("cli_stream_small")
    path = folder / "data.cxi"
    jio.simulate_cxi(path, 32, 16, key=jr.PRNGKey(0))
    probe = folder / "three.npy"
    np.save(probe, np.ones((3, 32, 32), dtype=np.complex64))
    return path, probe


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--modes", "20"], "--modes 20 exceeds the 16 frames of"),
        (["--modes", "2", "--probe", "{probe}"], "the starting probe has 3 modes, more than --modes 2"),
    ],
)
def test_stream_refuses_bad_modes_as_the_in_memory_run_does(sixteen_frames, tmp_path, capsys, flags, message):
    """The same one-line error, streamed or not; nothing written."""
    path, probe = sixteen_frames
    flags = [flag.format(probe=probe) for flag in flags]
    errors = []
    for stream in ([], ["--stream"]):
        code, _, err = run(capsys, path, "--out", tmp_path / "x.h5", *stream, *flags)
        assert code == 2 and message in err, err
        # One error line (after the data line where the frames are looked at first), no traceback.
        assert [line for line in err.splitlines() if "error" in line] == [err.strip().splitlines()[-1]]
        assert "Traceback" not in err
        errors.append(err.strip().splitlines()[-1])
    assert errors[0] == errors[1]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stream-batch", "16"], "--stream-batch needs --stream"),
        (["--stream", "--stream-batch", "0"], "--stream-batch (config key 'stream_batch') must be an integer from 1"),
        (["--stream", "--iterations", "0"], "--iterations must be an integer from 1 to 100000 (with --stream, epochs"),
        (["--stream", "--engine", "adam"], "--stream runs the PIE engines only"),
        (["--stream", "--engine", "gauss-newton"], "not 'gauss-newton'"),
        (["--stream", "--near-field"], "--near-field cannot be combined with --stream"),
        (["--stream", "--geometry"], "--geometry cannot be combined with --stream"),
        (["--stream", "--uncertainty"], "--uncertainty cannot be combined with --stream"),
    ],
)
def test_options_streaming_cannot_honour_are_refused(stream_file, tmp_path, capsys, flags, message):
    path, _ = stream_file
    code, _, err = run(capsys, path, "--out", tmp_path / "x.h5", *flags)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_stream_config_keys_and_refusals(stream_file, tmp_path, capsys):
    path, _ = stream_file
    config = tmp_path / "run.toml"
    config.write_text('stream = "yes"\n')
    code, _, err = run(capsys, path, "--config", config, "--out", tmp_path / "x.h5")
    assert code == 2 and "key 'stream' must be true or false, got 'yes' (str)" in err
    config.write_text("stream = true\nstream_batch = 2.5\n")
    code, _, err = run(capsys, path, "--config", config, "--out", tmp_path / "x.h5")
    assert code == 2 and "key 'stream_batch' must be an integer, got 2.5 (float)" in err
    config.write_text("stream = true\n[engine]\nalpha = 0.2\n")  # auto: the default schedule, as in memory
    code, _, err = run(capsys, path, "--config", config, "--out", tmp_path / "x.h5")
    assert code == 2 and "the default schedule takes no [engine] parameters" in err and "Traceback" not in err
    siemens = tmp_path / "star.npz"
    siemens.write_bytes(b"")
    code, _, err = run(capsys, siemens, "--stream", "--out", tmp_path / "y.h5")
    assert code == 2 and "--stream reads CXI files" in err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_stream_resume_continues_the_run(stream_file, tmp_path, monkeypatch, capsys):
    """3 epochs, then `--stream --resume` for 3 more, against 6 epochs in one run (batches of 16).

    The resumed run starts from the saved object and probe exactly, with the engine's state
    (its batch count: 3 epochs of 4 batches) and the batch size from the file, and numbers its
    epochs 4 to 6. Measured: the 3 + 3 run is the 6-epoch run, its losses and object identical
    (largest difference 0), object error 0.0319 both (the unit object: 0.52); the test allows
    1e-5 of the object's largest value and 1e-3 relative on the error.
    """
    import janssen.invert as jinv

    path, written = stream_file
    whole, part = tmp_path / "whole.h5", tmp_path / "part.h5"
    argv = ("--stream", "--stream-batch", 16, "--engine", "rpie")  # one engine: the default's stages do not resume
    assert run(capsys, path, *argv, "--iterations", 6, "--out", whole)[0] == 0
    assert run(capsys, path, *argv, "--iterations", 3, "--out", part)[0] == 0
    first = jio.read_result(part)
    starts = []
    streamed = jinv.reconstruct_from_file

    def recording(start, frames, engine, **options):
        if options["epochs"]:
            starts.append(start)
        return streamed(start, frames, engine, **options)

    monkeypatch.setattr(jinv, "reconstruct_from_file", recording)
    code, stdout, stderr = run(capsys, path, "--stream", "--resume", part, "--iterations", 3)
    assert code == 0, stderr
    assert "in batches of 16: continuing" in stderr and "6 epochs in total (max_iterations_reached)" in stdout
    assert [line.split()[1] for line in stderr.splitlines() if line.startswith("epoch ")] == ["4/6", "5/6", "6/6"]

    # (a) From the saved object and probe exactly, with the saved engine state.
    (start,) = starts
    assert isinstance(start, jinv.Solution) and start.iteration == 3
    np.testing.assert_array_equal(np.asarray(start.microscope.sample.sample), first["object"])
    np.testing.assert_array_equal(np.asarray(start.microscope.probe.fields()), first["probe"])
    assert int(start.state.iteration) == 3 * 4  # batches done, for the probe delay
    # (b) The record counts 6 epochs and keeps the first 3 losses.
    resumed, one_run = jio.read_result(part), jio.read_result(whole)
    attrs = resumed["attrs"]
    assert attrs["iteration"] == 6 and attrs["result"] == "max_iterations_reached"
    assert json.loads(attrs["cli"])["stream"] == {"batch_size": 16, "epochs": 6}
    np.testing.assert_array_equal(resumed["loss"][:3], first["loss"])
    np.testing.assert_allclose(resumed["loss"], one_run["loss"], rtol=1e-5)
    # (c) As accurate as the run that was never stopped (here: the same run).
    truth = jio.read_ground_truth(path)
    weight = np.asarray(illumination_map(truth.microscope()))
    errors = [object_error(written.object, saved["object"], weight) for saved in (resumed, one_run)]
    print(f"object error resumed {errors[0]:.4f}, in one run {errors[1]:.4f}")
    assert errors[0] <= errors[1] * (1 + 1e-3) and errors[0] < 0.04
    scale = np.abs(one_run["object"]).max()
    np.testing.assert_allclose(resumed["object"], one_run["object"], rtol=0, atol=1e-5 * scale)


def test_stream_resume_keeps_the_probe_modes(stream_file, tmp_path, capsys):
    """`--modes 2` streamed for 2 epochs, then resumed for 1 (no `--modes`: the file's two): the 3-epoch
    run. Measured: identical losses, object and both probe modes (the test allows 1e-5)."""
    path, _ = stream_file
    whole, part = tmp_path / "whole.h5", tmp_path / "part.h5"
    argv = ("--stream", "--stream-batch", 16, "--modes", 2, "--engine", "rpie")
    assert run(capsys, path, *argv, "--iterations", 3, "--out", whole)[0] == 0
    assert run(capsys, path, *argv, "--iterations", 2, "--out", part)[0] == 0
    code, _, err = run(capsys, path, "--stream", "--resume", part, "--iterations", 1)
    assert code == 0, err
    resumed, one_run = jio.read_result(part), jio.read_result(whole)
    assert resumed["probe"].shape == (2, 48, 48) and resumed["attrs"]["iteration"] == 3
    np.testing.assert_allclose(resumed["loss"], one_run["loss"], rtol=1e-5)
    for name in ("object", "probe"):
        scale = np.abs(one_run[name]).max()
        np.testing.assert_allclose(resumed[name], one_run[name], rtol=0, atol=1e-5 * scale)


def test_stream_resume_checks_the_data_file(stream_file, sixteen_frames, tmp_path, capsys):
    """`--stream --resume` on another existing data file than the result records is refused (one line,
    the result unchanged); on a moved data file it goes on, with a note, once its frame count matches."""
    import shutil

    path, _ = stream_file
    data = tmp_path / "a.cxi"
    shutil.copy(path, data)
    out = tmp_path / "r.h5"
    assert (
        run(capsys, data, "--stream", "--stream-batch", 16, "--engine", "rpie", "--iterations", 1, "--out", out)[0] == 0
    )
    before = out.read_bytes()
    code, _, err = run(capsys, path, "--stream", "--resume", out, "--iterations", 1)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"was refined against the data file {str(data.resolve())!r}, not {str(path)!r}" in err
    assert out.read_bytes() == before
    moved = tmp_path / "b.cxi"
    data.rename(moved)
    small, _ = sixteen_frames  # moved, and another scan: its frame count gives it away
    code, _, err = run(capsys, small, "--stream", "--resume", out, "--iterations", 1)
    assert code == 2 and "holds 64 scan positions but the data file" in err and "has 16 frames" in err
    assert out.read_bytes() == before
    code, _, err = run(capsys, moved, "--stream", "--resume", out, "--iterations", 1)
    assert code == 0 and "no longer exists: continuing on" in err
    saved = jio.read_result(out)
    assert saved["attrs"]["iteration"] == 2 and json.loads(saved["attrs"]["cli"])["data"] == str(moved.resolve())


def test_ctrl_c_keeps_the_last_completed_batch(stream_file, tmp_path, monkeypatch, capsys):
    """Ctrl-C (a real SIGINT to this process) after the second epoch: exit 130, no traceback, a complete
    result file saying `interrupted` after 2 epochs, with its verdict and figures (the patterns one too); no lock
    or partial file. The command it prints continues the run: with it the 2 + 2 epochs are the 4-epoch run."""
    import os
    import signal

    import janssen.cli._stream as stream

    lines = stream._EpochLines.__call__

    def interrupting(self, epoch, loss, microscope):
        lines(self, epoch, loss, microscope)
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the command's handler raises KeyboardInterrupt here

    monkeypatch.setattr(stream._EpochLines, "__call__", interrupting)
    path, _ = stream_file
    out = tmp_path / "c.h5"
    argv = ("--stream", "--stream-batch", 16, "--engine", "rpie", "--iterations", 4)
    code, stdout, stderr = run(capsys, path, *argv, "--out", out)
    assert code == 130 and "Traceback" not in stdout + stderr
    assert "interrupted (Ctrl-C) after 2 of 4 epochs" in stdout and "2 epochs in total (interrupted)" in stdout
    saved = jio.read_result(out)
    assert saved["attrs"]["result"] == "interrupted" and saved["attrs"]["iteration"] == 2
    assert saved["loss"].shape == (2,) and saved["verdict"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["c.h5", "c.html"] + [f"c_{kind}.png" for kind in ("object", "probe", "loss", "residual", "patterns")]
    )
    hint = f"janssen --compile-cache off reconstruct {path} --stream --resume {out} --iterations 2"
    assert f"continue with `{hint}`" in stdout
    assert main(shlex.split(hint)[1:]) == 0  # its epochs 3 and 4 are not interrupted
    monkeypatch.undo()
    one_run = tmp_path / "one.h5"
    assert run(capsys, path, *argv, "--out", one_run)[0] == 0
    resumed, whole = jio.read_result(out), jio.read_result(one_run)
    assert resumed["attrs"]["iteration"] == 4 and resumed["attrs"]["result"] == "max_iterations_reached"
    np.testing.assert_allclose(resumed["loss"], whole["loss"], rtol=1e-5)
    np.testing.assert_allclose(resumed["object"], whole["object"], rtol=0, atol=1e-5 * np.abs(whole["object"]).max())


def test_ctrl_c_in_the_default_stages_names_the_epochs_left(stream_file, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the second epoch of the default schedule streamed with `--iterations 5` (its first stage,
    rPIE, for all 5): the result holds the last completed batch, and the hint continues rPIE for the 3
    epochs left."""
    import os
    import signal

    import janssen.cli._stream as stream

    lines = stream._EpochLines.__call__

    def interrupting(self, epoch, loss, microscope):
        lines(self, epoch, loss, microscope)
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(stream._EpochLines, "__call__", interrupting)
    path, _ = stream_file
    out = tmp_path / "d.h5"
    code, stdout, stderr = run(capsys, path, "--stream", "--stream-batch", 16, "--iterations", 5, "--out", out)
    assert code == 130 and "Traceback" not in stdout + stderr
    assert "stages: RPIE 2 (interrupted)" in stderr and "PhaseFieldSearch" not in stderr.split("stages: ")[1]
    assert "interrupted (Ctrl-C) after 2 epochs" in stdout and "holds the last completed batch" in stdout
    assert "--iterations 3` (the RPIE stage; later stages are not run by --resume)" in stdout
    saved = jio.read_result(out)
    assert saved["attrs"]["result"] == "interrupted" and saved["attrs"]["iteration"] == 2


def test_the_streamed_mixed_state_start_keeps_one_pitch(two_mode_file):
    """`init_far_field_from_file(modes=2)`: the modes' powers sum to the single-mode guess's, pitch once."""
    import janssen.invert as jinv

    path, _ = two_mode_file
    with jio.CXIFrames(path) as frames:
        one = jinv.init_far_field_from_file(frames, sample_positions=32)
        two = jinv.init_far_field_from_file(frames, sample_positions=32, modes=2, mode_share=0.05)
    assert two.probe.dx is None and one.probe.dx is None
    power = lambda m: float(jnp.sum(jnp.abs(m.probe.fields()) ** 2))  # noqa: E731
    assert power(two) == pytest.approx(power(one), rel=1e-5)
    fields = two.probe.fields()
    assert fields.shape[0] == 2
    assert float(jnp.sum(jnp.abs(fields[1]) ** 2)) == pytest.approx(0.05 * power(one), rel=1e-3)
    assert np.allclose(np.asarray(two.sample_plane_probe().dx), np.asarray(two.sample.dx))
