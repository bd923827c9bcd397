"""The `janssen` command line: `janssen simulate`, and the compilation cache of the command."""

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

import janssen.io as jio
from janssen.cli import main


def test_simulate_small_writes_cxi_with_ground_truth(tmp_path, capsys):
    out = tmp_path / "small.cxi"
    code = main(["simulate", "--size", "small", "--photons", "1e5", "--seed", "3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "100 frames of 64x64" in printed[0] and str(out) in printed[0]
    with h5py.File(out, "r") as handle:
        assert int(handle["cxi_version"][()]) == 160
        frames = handle["entry_1/instrument_1/detector_1/data"][()]
        assert frames.shape == (100, 64, 64)
        assert np.array_equal(handle["entry_1/data_1/data"][()], frames)
        translation = handle["entry_1/sample_1/geometry_1/translation"][()]
        assert translation.shape == (100, 3)
        assert handle["ground_truth/probe"].shape == (1, 64, 64)
        truth_positions = handle["ground_truth/positions"][()]
        object_shape = handle["ground_truth/object"].shape
        wavelength = handle["entry_1/instrument_1/source_1/wavelength"][()]
        distance = handle["entry_1/instrument_1/detector_1/distance"][()]
        pixel = handle["entry_1/instrument_1/detector_1/x_pixel_size"][()]
    # The data's positions are the truth's, and CXI stores their negative.
    np.testing.assert_array_equal(translation[:, :2], -truth_positions)
    # 100 frames of Poisson counts with mean 1e5 each: the total's relative sd is 3e-4.
    assert abs(frames.sum() / 1e7 - 1) < 2e-3
    # Object pixel lambda z / (N dx) = 1e-10 * 0.96 / (64 * 75e-6) = 20 nm.
    np.testing.assert_allclose(wavelength * distance / (64 * pixel), 2e-8, rtol=1e-6)
    assert min(object_shape) > 64
    # 70 % linear overlap of a 24-pixel probe: median nearest-neighbour step 7.2 object
    # pixels (whole-pixel snapping moves each position by less than a pixel).
    pixels = truth_positions / 2e-8
    distances = np.hypot(*(pixels[:, None, :] - pixels[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distances, np.inf)
    assert abs(np.median(distances.min(axis=1)) - 7.2) < 1.0
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
    truth = jio.read_ground_truth(out)
    assert truth is not None and truth.object.shape == object_shape


def test_same_seed_same_file_content(tmp_path):
    for name in ("a.cxi", "b.cxi"):
        assert main(["simulate", "--size", "small", "--photons", "1e4", "--out", str(tmp_path / name)]) == 0
    a, b = jio.read_cxi(tmp_path / "a.cxi"), jio.read_cxi(tmp_path / "b.cxi")
    assert np.array_equal(np.asarray(a.intensities), np.asarray(b.intensities))
    # An existing file is replaced only when asked (the refusal: tests/test_refusals.py).
    args = ["simulate", "--size", "small", "--photons", "1e4", "--seed", "1", "--out", str(tmp_path / "a.cxi")]
    assert main([*args, "--overwrite"]) == 0
    a = jio.read_cxi(tmp_path / "a.cxi")
    assert not np.array_equal(np.asarray(a.intensities), np.asarray(b.intensities))


def test_unwritable_path_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["simulate", "--size", "small", "--out", str(tmp_path / "missing" / "x.cxi")])
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("janssen simulate: error:") and "does not exist" in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_invalid_photons_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["simulate", "--size", "small", "--photons", "-5", "--out", str(tmp_path / "x.cxi")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`photons` must be finite and positive" in err[0]
    assert not (tmp_path / "x.cxi").exists()


def test_unknown_size_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["simulate", "--size", "huge", "--out", str(tmp_path / "x.cxi")])
    assert info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def _run_command(args, env):
    code = "import sys; from janssen.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)


def _entries(folder):
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


def test_compile_cache_is_written_once_and_read_back(tmp_path):
    """A second run with the same shapes adds no entry to the cache: every compilation is read back."""
    cache = tmp_path / "cache"
    env = {key: value for key, value in os.environ.items() if not key.startswith("JAX_COMPILATION_CACHE")}
    env["JANSSEN_COMPILE_CACHE"] = str(cache)
    args = ["simulate", "--size", "small", "--photons", "1e4", "--out", str(tmp_path / "a.cxi")]
    first = _run_command(args, env)
    assert first.returncode == 0, first.stderr
    written = _entries(cache)
    assert len(written) >= 3  # the simulation compiles several functions
    second = _run_command(["--compile-cache", str(cache), *args[:-1], str(tmp_path / "b.cxi")], env)
    assert second.returncode == 0, second.stderr
    assert _entries(cache) == written


def test_compile_cache_off_and_unusable(tmp_path, capsys, monkeypatch):
    import jax

    from janssen.cli._main import default_compile_cache, host_tag, use_compile_cache

    previous = jax.config.jax_compilation_cache_dir  # a developer's own JAX cache, if any
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        assert use_compile_cache("off") is None and jax.config.jax_compilation_cache_dir is None
        blocker = tmp_path / "file"
        blocker.write_text("")
        assert use_compile_cache(str(blocker / "cache")) is None
        assert "compile cache" in capsys.readouterr().err and jax.config.jax_compilation_cache_dir is None
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
    monkeypatch.delenv("JANSSEN_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_compile_cache() == str(tmp_path / "xdg" / "janssen" / "jax" / host_tag())
    assert host_tag() == host_tag() and len(host_tag().rsplit("-", 1)[1]) == 12


def test_simulate_progress_lines_at_each_tenth_of_a_large_scan(capsys):
    """`janssen simulate` reports each tenth written for scans over 1000 positions (xlarge: 4000), none below."""
    from janssen.cli._simulate import _progress_lines

    progress = _progress_lines()
    for done in [*range(256, 4000, 256), 4000]:
        progress(done, 4000)
    lines = capsys.readouterr().err.splitlines()
    # Batches of 256 cross a tenth (400 frames) at 512, 1024, 1280, 1792, 2048, 2560, 2816, 3328, 3840, 4000.
    assert [int(line.split()[2].split("/")[0]) for line in lines] == [
        512,
        1024,
        1280,
        1792,
        2048,
        2560,
        2816,
        3328,
        3840,
        4000,
    ]
    small = _progress_lines()
    for done in (256, 512, 1000):
        small(done, 1000)
    assert capsys.readouterr().err == ""
