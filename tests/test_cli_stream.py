"""`janssen reconstruct --stream`: frames left in the CXI file, read a batch of positions at a time."""

import json

import jax.random as jr
import numpy as np
import pytest
from helpers import illumination_map, object_error

import janssen.io as jio
from janssen.cli import main
from janssen.optics import Probe, SampleFunction
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


def test_stream_reaches_the_in_memory_error_and_writes_the_result(stream_file, tmp_path, monkeypatch, capsys):
    """Streamed rPIE in batches of 16 against rPIE on the frames in memory, both from the command line.

    Measured (8 epochs / iterations): streamed object error 0.0266, in memory 0.0268 (the
    unit object: 0.52); R 0.00110 streamed against 0.00116 in memory, Poisson floor 0.000618.
    """
    import janssen.cli._inputs as inputs
    import janssen.invert as jinv

    path, written = stream_file
    # No memory to spare: the in-memory path would refuse the file, the streamed one never asks.
    monkeypatch.setattr(inputs, "available_memory", lambda: 1.0)
    refused = run(capsys, path, "--out", tmp_path / "refused.h5")
    assert refused[0] == 2 and "add --stream" in refused[2] and "Traceback" not in refused[2]
    out = tmp_path / "s.h5"
    code, stdout, stderr = run(capsys, path, "--stream", "--stream-batch", 16, "--iterations", EPOCHS, "--out", out)
    assert code == 0, stderr
    monkeypatch.undo()
    memory = tmp_path / "m.h5"
    assert run(capsys, path, "--engine", "rpie", "--iterations", EPOCHS, "--out", memory)[0] == 0

    # Progress: one line per epoch on stderr; the summary counts epochs.
    assert [line.split()[1] for line in stderr.splitlines() if line.startswith("epoch ")] == [
        f"{epoch}/{EPOCHS}" for epoch in range(1, EPOCHS + 1)
    ]
    assert f"{EPOCHS} epochs in total (max_iterations_reached)" in stdout and "left in the file" in stderr

    truth = jio.read_ground_truth(path)
    weight = np.asarray(illumination_map(truth.microscope()))
    saved, in_memory = jio.read_result(out), jio.read_result(memory)
    streamed_error = object_error(written.object, saved["object"], weight)
    memory_error = object_error(written.object, in_memory["object"], weight)
    assert streamed_error < 0.035
    assert streamed_error < 1.15 * memory_error

    # The result file holds what the normal path's does, every position, one loss per epoch.
    attrs = saved["attrs"]
    assert attrs["iteration"] == EPOCHS and attrs["engine"] == "RPIE" and attrs["result"] == "max_iterations_reached"
    assert attrs["engine_parameters"]["adapt_alpha"] is False  # batch losses are not comparable
    assert saved["loss"].shape == (EPOCHS,) and saved["loss"][-1] < 0.3 * saved["loss"][0]
    assert saved["positions"].shape == (64, 2) and saved["object"].shape == in_memory["object"].shape
    assert saved["probe"].shape == in_memory["probe"].shape
    cli = json.loads(attrs["cli"])
    assert cli["stream"] == {"batch_size": 16, "epochs": EPOCHS} and cli["engine"] == "rpie"
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

    # The figures that need no frames, and the report, which does not read them either.
    for kind in ("object", "probe", "loss", "residual"):
        assert (tmp_path / f"s_{kind}.png").stat().st_size > 1000
    assert not (tmp_path / "s_patterns.png").exists()
    assert "streamed from the data file" in (tmp_path / "s.html").read_text()

    # A streamed result is not resumable: refused before the data are read.
    code, _, err = run(capsys, path, "--resume", out, "--iterations", 1)
    assert code == 2 and "written by a streamed run (--stream)" in err and len(err.strip().splitlines()) == 1


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
        (["--stream", "--modes", "2"], "--modes 2 cannot be combined with --stream"),
        (["--stream", "--resume", "r.h5"], "--stream cannot be combined with --resume"),
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
    config.write_text("stream = true\n[engine]\nalpha = 0.2\n")  # auto streams rPIE: name it to tune it
    code, _, err = run(capsys, path, "--config", config, "--out", tmp_path / "x.h5")
    assert code == 2 and "with --stream the default engine is rpie" in err and "Traceback" not in err
    siemens = tmp_path / "star.npz"
    siemens.write_bytes(b"")
    code, _, err = run(capsys, siemens, "--stream", "--out", tmp_path / "y.h5")
    assert code == 2 and "--stream reads CXI files" in err
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "y.h5").exists()


def test_ctrl_c_keeps_the_last_completed_batch(stream_file, tmp_path, monkeypatch, capsys):
    """Ctrl-C (a real SIGINT to this process) after the second epoch: exit 130, no traceback, a complete
    result file saying `interrupted` after 2 epochs, with its verdict and figures; no lock or partial file."""
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
    code, stdout, stderr = run(capsys, path, "--stream", "--stream-batch", 16, "--iterations", 50, "--out", out)
    assert code == 130 and "Traceback" not in stdout + stderr
    assert "interrupted (Ctrl-C) after 2 of 50 epochs" in stdout and "2 epochs in total (interrupted)" in stdout
    saved = jio.read_result(out)
    assert saved["attrs"]["result"] == "interrupted" and saved["attrs"]["iteration"] == 2
    assert saved["loss"].shape == (2,) and saved["verdict"] is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["c.h5", "c.html"] + [f"c_{kind}.png" for kind in ("object", "probe", "loss", "residual")]
    )
