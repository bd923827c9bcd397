"""benchmarks/run.py: names checked, peers skipped with a reason, rows and the docs table."""

import importlib.util
import json
import os
import pathlib
import sys

import jax.random as jr
import numpy as np
import pytest
from helpers import illumination_map, object_error, tiny_far_field_problem

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("benchmark_suite", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "argv, listed",
    [
        (["--sizes", "small,huge"], "unknown size ['huge']; valid sizes: small, medium, large"),
        (["--engines", "epie,lbfgs"], "unknown engine ['lbfgs']; valid engines: epie, epie-batched, rpie"),
    ],
)
def test_unknown_names_list_the_valid_ones(suite, argv, listed):
    with pytest.raises(SystemExit, match=listed.replace("[", r"\[").replace("]", r"\]")):
        suite.main([*argv, "--no-docs"])


def test_missing_or_broken_peers_are_skipped_with_the_reason(suite, tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "PEERS", tmp_path)
    data = tmp_path / "small.npz"
    reason = suite.run_peer("nolib", "epie", "small", data, 2, {}, timeout=60)
    assert reason == f"no runner {tmp_path / 'nolib_runner.py'}"
    # A runner whose library does not import: its error is the reason, the suite goes on.
    (tmp_path / "nolib_runner.py").write_text("import a_library_that_is_not_installed\n")
    monkeypatch.setenv("JANSSEN_PEER_PYTHON_NOLIB", str(tmp_path / "absent" / "python"))
    assert reason_startswith(suite.run_peer("nolib", "epie", "small", data, 2, {}, timeout=60), "no interpreter")
    monkeypatch.setenv("JANSSEN_PEER_PYTHON_NOLIB", sys.executable)
    reason = suite.run_peer("nolib", "epie", "small", data, 2, {}, timeout=60)
    assert reason.startswith("exit code 1: ModuleNotFoundError: No module named 'a_library_that_is_not_installed'")
    # A runner that declines an engine.
    declining = "import json, sys\nout = sys.argv[sys.argv.index('--out') + 1]\n"
    declining += "open(out, 'w').write(json.dumps({'skipped': 'no lsqml'}))\n"
    (tmp_path / "nolib_runner.py").write_text(declining)
    assert suite.run_peer("nolib", "lsqml", "small", data, 2, {}, timeout=60) == "no lsqml"


def reason_startswith(reason, prefix):
    return isinstance(reason, str) and reason.startswith(prefix)


def test_peer_row_from_the_runner_json(suite, tmp_path):
    result = {"per_iter_s": 0.1, "compile_s": 0.5, "obj_err_history": [0.3, 0.07, 0.05], "obj_err": 0.049,
              "time_to_0.066_s": 0.7, "iterations": 3, "version": "0.3.7"}  # fmt: skip
    result["per_iter_cpu_s"] = 0.05
    result.update({"iters_to_0.066_ramp_removed": 2, "time_to_0.066_ramp_removed_s": 0.6})
    row = suite.peer_row("ptylab", "epie", "small", tmp_path / "x.npz", result, jax_floor=(0.02, 0.01))
    assert row["engine"] == "ptylab:epie" and row["iters_to_0.066"] == 3 and row["time_to_0.066_s"] == 0.7
    assert row["ratio"] == 5.0 and row["ratio_cpu"] == 5.0
    assert row["obj_err"] == 0.049 and row["peer_version"] == "0.3.7"
    assert row["iters_to_0.066_ramp"] == 2 and row["time_to_0.066_ramp_s"] == 0.6


def _tiny_file(tmp_path):
    """A tiny problem in the exchange format; returns `(path, unit-object error)`."""
    data, true, start = tiny_far_field_problem(jr.PRNGKey(1), n=32, grid=5, step=5)
    truth = np.asarray(true.sample.sample)
    unit = object_error(truth, np.asarray(start.sample.sample), np.asarray(illumination_map(true)))
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        intensities=np.asarray(data.intensities),
        positions_m=np.asarray(data.positions, np.float64),
        probe=np.asarray(start.probe.fields()),
        object_shape=np.array(start.sample.shape),
        object_true=truth.astype(np.complex64),
        probe_true=np.asarray(true.probe.fields()),
        wavelength=np.float64(data.wavelength),
        dx=np.asarray(start.sample.dx, np.float64),
        distance=np.float64(data.distance),
        camera_pixel_size=np.asarray(data.camera_pixel_size, np.float64),
        size=np.array("tiny"),
    )
    return path, unit


def test_worker_row_on_a_tiny_file(suite, tmp_path):
    """One worker run in-process on a file in the exchange format (a tiny problem)."""
    path, unit = _tiny_file(tmp_path)
    row = suite.run_worker("mpie-batched", str(path), 8)
    assert row["engine"] == "mpie-batched" and row["size"] == "tiny" and row["iterations"] == 8
    assert row["fft_floor_s"] > 0 and row["per_iter_s"] > 0
    # The floor is the least of every way's wall time (listed to 4 digits), and the ratio uses it.
    walls = {way: wall for way, (wall, _) in row["fft_floor_ways"].items()}
    assert len(walls) == 6 and row["fft_floor_way"] == min(walls, key=walls.get)
    assert row["fft_floor_s"] == pytest.approx(min(walls.values()), rel=1e-3)
    assert row["ratio"] == pytest.approx(row["per_iter_s"] / row["fft_floor_s"], rel=2e-3)
    assert row["obj_err_ramp"] <= row["obj_err"] + 1e-4
    # Per iteration the ramp-free error is at most the plain one, so it reaches 0.066 no later.
    assert row["iters_to_0.066_ramp"] is not None and row["iters_to_0.066"] is not None
    assert row["iters_to_0.066_ramp"] <= row["iters_to_0.066"]
    assert row["dataset_mb"] == round(25 * 32 * 32 * 4 / 2**20, 2)
    assert row["cpus"] == len(os.sched_getaffinity(0)) <= row["cores"] == os.cpu_count()
    assert row["result"] == "max_iterations_reached"
    assert row["obj_err"] < 0.5 * unit  # measured: 0.15 -> 0.04 in 8 iterations
    json.dumps(row)  # one JSON line


def test_docs_table_is_replaced_between_the_markers(suite, tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nProse kept.\n\n{suite.BEGIN}\nold table\n{suite.END}\n\nMore prose.\n")
    rows = [{"size": "small", "engine": "epie", "per_iter_s": 0.01, "jax": "0.10.2", "device": "cpu"}]
    suite.write_docs(page, suite.docs_section(rows, ["optx-lm on small: not here"], "python benchmarks/run.py"))
    text = page.read_text()
    assert "Prose kept." in text and "More prose." in text and "old table" not in text
    assert text.count(suite.BEGIN) == 1 and "| small | epie | — | 0.01 |" in text
    assert "- optx-lm on small: not here" in text


def test_the_header_says_how_many_cpus_the_rows_ran_on(suite):
    """A suite run under `taskset -c 0` on a 2-core machine says so (its rows record `cpus`)."""
    row = {"size": "small", "engine": "epie", "per_iter_s": 0.01, "jax": "0.10.2", "device": "cpu", "cores": 2}

    def header(cpus):
        text = suite.docs_section([{**row, "cpus": cpus}], [], "python benchmarks/run.py")
        return next(line for line in text.splitlines() if line.startswith("Generated by"))

    assert "cpu, 2 cores (" in header(2) and "cpu, 2 cores, 1 in use (" in header(1)


def test_race_to_the_target_names_the_fastest_in_both_measures(suite):
    rows = [
        # 6 iterations at 0.01 s: 0.06 s compile apart, 0.7 s from the start.
        {"size": "small", "engine": "mpie", "iters_to_0.066": 6, "per_iter_s": 0.01, "time_to_0.066_s": 0.7},
        {"size": "small", "engine": "rpie", "iters_to_0.066": 9, "per_iter_s": 0.01, "time_to_0.066_s": 0.65},
        {"size": "small", "engine": "epie", "iters_to_0.066": None, "per_iter_s": 0.01, "time_to_0.066_s": None},
        {"size": "small", "engine": "ptylab:mpie", "iters_to_0.066": 18, "per_iter_s": 0.02, "time_to_0.066_s": 0.37},
        {"size": "medium", "engine": "mpie", "iters_to_0.066": 11, "per_iter_s": 0.1, "time_to_0.066_s": 3.0},
        {"size": "medium", "engine": "ptylab:mpie", "iters_to_0.066": None, "per_iter_s": 0.3},
    ]
    assert suite.run_to_target(18, 0.02) == 0.36 and suite.run_to_target(None, 0.02) is None
    lines = suite.race_to_target([{**row, "run_to_0.066_s": suite._run_to_0066(row)} for row in rows])
    assert lines == [
        "- small, fastest to error 0.066: janssen: mpie 0.06 s (compile apart), rpie 0.65 s (from the start); "
        "peers: ptylab:mpie 0.36 s (compile apart), ptylab:mpie 0.37 s (from the start)",
        "- medium, fastest to error 0.066: janssen: mpie 1.1 s (compile apart), mpie 3.0 s (from the start); "
        "peers: none reached it (compile apart), none reached it (from the start)",
    ]


# ---- the FFT floor (benchmarks/floor.py) ----------------------------------------------------------


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def floor():
    return _module("benchmark_floor", ROOT / "benchmarks" / "floor.py")


def test_the_floor_is_the_least_of_the_ways(floor):
    ways = {"batched": [0.13, 0.12], "blocks8": [0.05, 0.06], "chain": [0.042, 0.041], "chain-1t": [0.045, 0.039]}
    got = floor.floor_of(ways)
    assert got["fft_floor_s"] == 0.042 and got["fft_floor_way"] == "chain"
    assert got["fft_floor_cpu_s"] == 0.039  # the least CPU time, whichever way gave it
    assert got["fft_floor_ways"] == ways


def test_every_way_is_timed_and_the_floor_is_their_minimum(floor):
    """Three ways with all threads here, three with one thread in a subprocess (tiny frames)."""
    got = floor.fft_floor(10, (16, 16), repeats=3)
    names = {"batched", "blocks8", "chain"}
    assert set(got["fft_floor_ways"]) == names | {f"{name}-1t" for name in names}
    walls = {way: wall for way, (wall, _) in got["fft_floor_ways"].items()}
    assert got["fft_floor_way"] == min(walls, key=walls.get)
    # The ways are listed to 4 significant digits.
    assert got["fft_floor_s"] == pytest.approx(min(walls.values()), rel=1e-3)
    assert got["fft_floor_cpu_s"] == pytest.approx(min(cpu for _, cpu in got["fft_floor_ways"].values()), rel=1e-3)


def test_the_ways_compute_the_same_transform(floor):
    """Each way really runs forward and inverse FFTs: a chain of fft/ifft round trips sums the frames."""
    programs = floor._programs(5, (8, 8))
    function, stack = programs["chain"]
    np.testing.assert_allclose(np.asarray(function(stack)), np.asarray(stack).sum(0), atol=1e-4)
    function, blocks = programs["blocks8"]
    np.testing.assert_allclose(np.asarray(function(blocks)), np.asarray(blocks).sum(0), atol=1e-4)
    function, stack = programs["batched"]
    np.testing.assert_allclose(np.asarray(function(stack)), np.asarray(stack), atol=1e-4)


# ---- fair peers: the ramp-free error and the start ----------------------------------------------


@pytest.fixture(scope="module")
def common():
    sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
    return _module("benchmark_peers_common", ROOT / "benchmarks" / "peers" / "_common.py")


def _object_and_illumination(seed=0, shape=(60, 64)):
    rng = np.random.default_rng(seed)
    obj = np.exp(1j * rng.uniform(-1, 1, shape) + rng.uniform(-0.2, 0, shape))
    y, x = np.mgrid[: shape[0], : shape[1]]
    illum = np.exp(-(((y - shape[0] / 2) / 15) ** 2 + ((x - shape[1] / 2) / 15) ** 2))
    return obj, illum


def test_a_known_ramp_and_constant_phase_are_removed(common):
    truth, illum = _object_and_illumination()
    tilted = truth * common.ramp(truth.shape, (0.0123, -0.0371)) * np.exp(0.8j)
    assert common.object_error(truth, tilted, illum) > 0.5  # the raw error sees the ramp
    assert common.ramp_free_error(truth, tilted, illum) < 1e-6
    assert common.ramp_free_error(truth, tilted, illum, max_shift=2) < 1e-6


def test_the_ramp_free_error_is_invariant_to_a_ramp(common):
    truth, illum = _object_and_illumination()
    rng = np.random.default_rng(1)
    recon = truth + 0.1 * (rng.standard_normal(truth.shape) + 1j * rng.standard_normal(truth.shape))
    plain = common.ramp_free_error(truth, recon, illum, max_shift=2)
    tilted = recon * common.ramp(truth.shape, (-0.021, 0.0093)) * np.exp(-2.1j)
    assert plain == pytest.approx(common.ramp_free_error(truth, tilted, illum, max_shift=2), abs=1e-6)
    # Removing a ramp never scores worse than the raw error (k = 0 is among the candidates).
    assert plain <= common.object_error(truth, recon, illum, max_shift=2) + 1e-9
    # The noise: 0.1 per component, 0.1 * sqrt(2) in modulus, against the object's RMS modulus.
    assert plain == pytest.approx(0.1 * np.sqrt(2) / np.sqrt(np.mean(np.abs(truth) ** 2)), rel=0.1)


def test_a_peer_row_gets_both_errors_from_the_saved_object(suite, common, tmp_path):
    truth, illum = _object_and_illumination()
    data = tmp_path / "p.npz"
    np.savez(data, object_true=truth.astype(np.complex64), illumination=illum.astype(np.float32))
    tilted = (truth * common.ramp(truth.shape, (0.02, 0.01))).astype(np.complex64)
    np.save(tmp_path / "o.npy", tilted)
    result = {"per_iter_s": 0.1, "obj_err": 0.9, "object_npy": str(tmp_path / "o.npy"), "settings": {"beta": 0.25}}
    row = suite.peer_row("ptylab", "epie", "small", data, result, jax_floor=(0.05, 0.05))
    assert row["obj_err"] == pytest.approx(common.object_error(truth, tilted, illum), abs=1e-4) and row["obj_err"] > 0.5
    assert row["obj_err_ramp"] < 1e-4  # float32 object: the ramp removed to round-off
    assert row["ratio"] == 2.0


def test_the_fair_start_is_not_tuned_to_the_gauge():
    """The fair start's far-field intensity differs from the truth's; the old pupil start's does not."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    pie = _module("benchmark_pie", ROOT / "benchmarks" / "pie.py")
    import jax.numpy as jnp

    from janssen.optics import fft2c

    n = 64
    y, x = np.mgrid[:n, :n] - n // 2
    truth = (np.exp(-(x**2 + y**2) / (2 * 3.0**2)) * np.exp(0.01j * (x**2 + y**2))).astype(np.complex64)[None]

    def far(probe):
        return np.abs(np.asarray(fft2c(jnp.asarray(probe)))) ** 2

    def gap(probe):
        return np.linalg.norm(far(probe) - far(truth)) / np.linalg.norm(far(truth))

    assert gap(pie.start_probe(truth, kind="pupil")) < 1e-5
    fair = np.asarray(pie.start_probe(truth, kind="fair"))
    assert gap(fair) > 0.05  # measured 0.075: the 1 px blur tapers the far field
    # Its centre of mass moved by the offset (0.37, -0.29) px.
    weights = np.abs(fair[0]) ** 2
    centre = [np.sum(weights * x) / weights.sum(), np.sum(weights * y) / weights.sum()]
    np.testing.assert_allclose(centre, pie.START_OFFSET_PX, atol=1e-3)
    assert pie.probe_distance(fair, truth) == pytest.approx(0.115, abs=0.01)  # measured 0.1154
    with pytest.raises(ValueError, match="unknown start kind"):
        pie.start_probe(truth, kind="tuned")


def test_time_to_accuracy_counts_from_the_process_start(tmp_path):
    """A cold worker process: the time to 0.066 from its start is the part before `reconstruct` plus the rest."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    tta = _module("benchmark_tta", ROOT / "benchmarks" / "time_to_accuracy.py")
    path, _ = _tiny_file(tmp_path)
    row = tta.timed_worker("mpie-batched", path, 8, tmp_path / "cache")
    assert row["iters_to_0.066"] is not None  # measured: 0.04 after 8 iterations
    # Python's start and the imports come before `reconstruct`: at least 0.1 s anywhere.
    assert row["start_to_reconstruct_s"] > 0.1
    assert row["spawn_to_0.066_s"] == pytest.approx(row["start_to_reconstruct_s"] + row["time_to_0.066_s"], rel=1e-3)
    assert any((tmp_path / "cache").iterdir())  # the compilation cache was written
