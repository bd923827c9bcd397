"""`janssen reconstruct` and `janssen demo`: files written, errors reported, resume continues."""

import jax.random as jr
import numpy as np
import pytest

from janssen.cli import main
from janssen.io import read_result, simulate, write_cxi


@pytest.fixture(scope="module")
def cxi_file(tmp_path_factory):
    dataset = simulate(32, 16, key=jr.PRNGKey(2), photons=1e5)
    path = tmp_path_factory.mktemp("data") / "tiny.cxi"
    write_cxi(path, dataset.data, ground_truth=dataset)
    return path


def test_demo_writes_files_and_recovers_object(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iterations", "30"]) == 0
    for name in ("demo.h5", "demo_object.png", "demo_probe.png", "demo_loss.png"):
        assert (out / name).stat().st_size > 1000
    text = capsys.readouterr().out
    error = float(text.split("object error vs ground truth:")[1].split()[0])
    residual = float(text.split("data residual:")[1].split()[0])
    floor = float(text.split("noise floor (ground truth):")[1].split()[0])
    # Measured: object error 0.020, residual 0.575 against a noise floor of 0.534.
    assert error < 0.05
    assert floor < residual < 1.2 * floor
    assert read_result(out / "demo.h5")["attrs"]["iteration"] == 30


def test_reconstruct_cxi_then_resume(cxi_file, tmp_path, capsys):
    out = tmp_path / "run.h5"
    code = main(["reconstruct", str(cxi_file), "--iterations", "3", "--out", str(out), "--engine", "epie"])
    assert code == 0
    first = read_result(out)
    assert first["attrs"]["iteration"] == 3 and first["attrs"]["engine"] == "EPIE"
    assert first["loss"].shape == (3,)
    assert (tmp_path / "run_object.png").exists() and (tmp_path / "run_loss.png").exists()
    assert "3 iterations" in capsys.readouterr().out
    assert main(["reconstruct", str(cxi_file), "--resume", str(out), "--iterations", "2"]) == 0
    second = read_result(out)
    assert second["attrs"]["iteration"] == 5
    np.testing.assert_array_equal(second["loss"][:3], first["loss"])
    # EPIE keeps improving the fit on this problem: the resumed losses continue downwards.
    assert second["loss"][-1] < first["loss"][-1]


def test_config_file_and_unknown_key(cxi_file, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('iterations = 2\nbatched = true\n[engine]\nname = "rpie"\nalpha = 0.2\n')
    out = tmp_path / "c.h5"
    assert main(["reconstruct", str(cxi_file), "--config", str(config), "--out", str(out)]) == 0
    attrs = read_result(out)["attrs"]
    assert attrs["iteration"] == 2 and attrs["engine_parameters"]["alpha"] == 0.2
    assert attrs["engine_parameters"]["mode"] == "batched"
    capsys.readouterr()
    config.write_text("iterations = 2\nsed = 3\n")
    assert main(["reconstruct", str(cxi_file), "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'sed'" in err and len(err.strip().splitlines()) == 1
    config.write_text("[engine]\nbeta = 3\n")
    assert main(["reconstruct", str(cxi_file), "--config", str(config), "--out", str(out)]) == 2
    assert "'beta'" in capsys.readouterr().err


def test_missing_data_file(tmp_path, capsys):
    code = main(["reconstruct", str(tmp_path / "nope.cxi"), "--out", str(tmp_path / "r.h5")])
    assert code == 2
    captured = capsys.readouterr()
    assert "nope.cxi" in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    garbage = tmp_path / "bad.cxi"
    garbage.write_bytes(b"not hdf5")
    assert main(["reconstruct", str(garbage), "--out", str(tmp_path / "r.h5")]) == 2
    captured = capsys.readouterr()
    assert "bad.cxi" in captured.err and len(captured.err.strip().splitlines()) == 1
