"""The janssen benchmark suite: every engine on simulated data, one JSON line per (engine, size).

    python benchmarks/run.py [--sizes small,medium,large] [--engines epie,mpie-batched,...]
                             [--iterations N] [--out FILE.jsonl] [--docs docs/benchmarks.md | --no-docs]
                             [--peers ptylab,ptychi] [--peer-engines epie] [--data-dir DIR]
    python benchmarks/run.py --table-from FILE.jsonl

For each size the parent process simulates the preset dataset (`simulate_preset(size,
key=PRNGKey(0))`) and writes it to an `.npz` file (the exchange format of
benchmarks/README.md, which peer libraries read too). Each (engine, size) then runs in a
fresh subprocess, so that its peak memory is its own, and prints one JSON line:

- `per_iter_s`: the median wall time of an iteration after the first;
- `compile_s`: the first iteration (engine init, tracing, XLA compilation, one iteration),
  cold: nothing of the driver's or the engine's is compiled before it;
- `fft_floor_s`: the FFT floor of `benchmarks/floor.py`: the forward and inverse FFTs one
  iteration needs (one of each per position, unnormalised), timed every way janssen could
  run them (all frames batched, blocks of 8, a per-position chain in a `lax.scan`; with all
  threads and with one), median of 15 each, in the same process right after the
  iterations (the one-thread ways in a subprocess it starts), and the *least*;
  `fft_floor_way` names the way, `fft_floor_ways` gives every way's `[wall, cpu]`;
  `ratio` is `per_iter_s / fft_floor_s`; `per_iter_cpu_s`, `fft_floor_cpu_s` (the least
  CPU time over the ways) and `ratio_cpu` are the same in process CPU time (all threads),
  which other work on a shared machine inflates less than wall time;
- `obj_err`: DESIGN.md's object error after the last iteration; `obj_err_ramp`: the same
  with the best linear phase ramp also removed (`benchmarks/peers/_common.py`'s
  `ramp_free_error`, the one measure for janssen's rows and the peers');
  `iters_to_0.066_ramp` and `time_to_0.066_ramp_s`: when that error (zero shift, after
  every iteration, clock stopped) first fell to 0.066 or below; `iters_to_0.066` and
  `time_to_0.066_s` (wall time from the start of `reconstruct`, compilation included,
  the error evaluations excluded) the first iteration at which it fell to 0.066 or below;
  `run_to_0.066_s`: that many iterations at `per_iter_s`, the compilation apart (DESIGN.md's
  measure of time), for the peers' rows too;
- `residual`: the final RMS amplitude residual, next to `noise_floor` (the truth's);
- `peak_rss_mb`: the process's peak resident memory up to the end of the iterations
  (`resource.getrusage`; read before the FFT floor is timed), and `run_rss_mb`: the peak
  during the iterations after the first (compilation excluded) above the resident memory
  before the data was loaded, next to `dataset_mb`;
- `device`, `cpu`, `janssen`, `jax`: where and with what it ran.

The rows are also written to `--out` (JSON lines; an engine or peer that could not run
gets a line `{"engine", "size", "skipped": reason}` instead) and, as a table, between the
marker comments of `docs/benchmarks.md` (`--table-from FILE.jsonl` rewrites that table
from saved lines without running anything). Unknown sizes or engines stop the suite with
the list of valid names; an engine that fails, or a peer that is missing or fails, is
reported and skipped. Start (every code's, janssen's and the peers'): a unit object and
the true probe blurred by 1 px rms, with a smooth pupil-phase error of 0.3 rad amplitude
and moved by (0.37, -0.29) px (`benchmarks/pie.py`'s `start_probe`); the rows carry its
distance from the truth (`start_probe_error`). Peers run with the settings their own
documentation or examples recommend (`PEER_SETTINGS`), recorded under the table.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS = HERE / "peers"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- benchmarks:run.py:begin -->", "<!-- benchmarks:run.py:end -->"
SIZES = ("small", "medium", "large")
TARGET = 0.066
#: Environment variable holding the `time.time()` at which a parent started this worker
#: (`benchmarks/time_to_accuracy.py`); the row then carries `start_to_reconstruct_s`.
SPAWN_CLOCK = "JANSSEN_BENCH_SPAWNED_AT"
#: The engines run by default for each peer (its runner's `--engine` choices: ptylab epie,mpie;
#: ptychi epie,rpie,lsqml).
PEER_ENGINES = {"ptylab": ("epie", "mpie"), "ptychi": ("lsqml",)}
#: The settings each peer's own documentation or examples recommend, as runner flags, and where
#: they come from (recorded in the row's `settings_source`). pty-chi also gets `--threads`
#: (`$JANSSEN_PEER_THREADS`, default 1: see benchmarks/README.md, "Threads").
PEER_SETTINGS = {
    ("ptylab", "epie"): (
        ["--object-step", "0.25", "--probe-step", "0.25", "--order", "random"],
        "PtyLab example_scripts/exampleReconstruction.py: betaObject = betaProbe = 0.25, random order",
    ),
    ("ptylab", "mpie"): (
        ["--object-step", "0.25", "--probe-step", "0.25", "--order", "random"],
        "PtyLab example_scripts/exampleReconstruction.py (its mPIE): betaObject = betaProbe = 0.25, random order",
    ),
    ("ptychi", "lsqml"): (
        ["--batch-size", "44", "--noise-model", "gaussian", "--object-step", "1", "--probe-step", "1"],
        "pty-chi docs, Getting Started (LSQML): batch_size 44, Gaussian noise model, SGD step 1 for object and probe",
    ),
    ("ptychi", "rpie"): (["--batch-size", "10"], "pty-chi rPIE, batches of 10 (its default 100 diverges here)"),
    ("ptychi", "epie"): ([], "pty-chi's defaults"),
}

# Engine name -> (default iterations, description). Built in the worker (see `make_engine`).
ENGINES = {
    "epie": (50, "EPIE(mode='sequential')"),
    "epie-batched": (50, "EPIE(mode='batched')"),
    "rpie": (50, "RPIE(mode='sequential')"),
    "rpie-batched": (50, "RPIE(mode='batched')"),
    "mpie": (50, "MomentumPIE(mode='sequential')"),
    "mpie-batched": (50, "MomentumPIE(mode='batched')"),
    "adam": (
        300,
        "Gradient(optax.adam(0.02), learning_rates={'probe': RMS probe amplitude}, batch_size=20, sweep=True)",
    ),
    "gauss-newton": (20, "GaussNewton()"),
    "optx-lm": (20, "OptimistixLeastSquares() (optimistix Levenberg-Marquardt, matrix-free CG)"),
}


# ---- the dataset file (read by the workers and by peer runners) ------------------------------


def write_dataset(size: str, path: pathlib.Path, *, seed: int = 0) -> dict:
    """Simulate the `size` preset and write it in the peers' format; return its summary.

    The arrays are those of `benchmarks/peers/make_npz.py` (format: benchmarks/README.md,
    "The problem file"), so that janssen's workers and the peer runners read one file,
    plus `bad_pixels`, `illumination` (janssen's `illumination_map` of the truth),
    `noise_floor` (the truth's data residual) and `unit_object_error`.
    """
    import numpy as np

    from janssen.invert import data_residual, illumination_map, object_error
    from janssen.io import MicroscopeData
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    sys.path.insert(0, str(PEERS))
    from make_npz import problem

    arrays = problem(size, seed)
    data = MicroscopeData(
        arrays["intensities"], arrays["positions_m"], arrays["wavelength"], arrays["camera_pixel_size"],
        arrays["distance"],
    )  # fmt: skip
    dx = arrays["dx"]
    true = FarFieldMicroscope(
        Probe(arrays["probe_true"], data.wavelength, dx), SampleFunction(arrays["object_true"], dx), data.positions
    )
    illumination = np.asarray(illumination_map(true))
    unit = np.ones(tuple(arrays["object_shape"]), np.complex64)
    summary = {
        "noise_floor": data_residual(true, data),
        "unit_object_error": object_error(arrays["object_true"], unit, illumination),
        "dataset_mb": arrays["intensities"].nbytes / 2**20,
    }
    arrays.update(
        bad_pixels=np.asarray(data.bad_pixels),
        illumination=illumination.astype(np.float32),
        noise_floor=np.float64(summary["noise_floor"]),
        unit_object_error=np.float64(summary["unit_object_error"]),
    )
    np.savez(path, **arrays)
    return summary


# ---- one (engine, size) run, in its own process ------------------------------------------------


def ramp_free_error(truth, recon, illumination, *, max_shift=2):
    """`obj_err_ramp`: benchmarks/peers/_common.py's `ramp_free_error`, the one measure for every code's rows."""
    if str(PEERS) not in sys.path:
        sys.path.insert(0, str(PEERS))
    from _common import ramp_free_error as measure

    return measure(truth, recon, illumination, max_shift=max_shift)


def _rss_mb() -> float:
    """The current resident set size (Linux `/proc`), else the peak so far."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0), so later peaks exclude compilation."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_since_reset_mb() -> float | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def load_dataset(path: str):
    """The problem file as `(data, start, truth, illumination, meta)` for janssen."""
    import numpy as np

    from janssen.invert import illumination_map
    from janssen.io import MicroscopeData
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    with np.load(path) as npz:
        meta = {key: npz[key] for key in npz.files if not key.startswith("intensities")}
        # One copy of the frames: straight from the file into the (device) array.
        data = MicroscopeData(
            npz["intensities"], meta["positions_m"], meta["wavelength"], meta["camera_pixel_size"],
            meta["distance"], meta.get("bad_pixels"),
        )  # fmt: skip
    dx = meta["dx"]
    shape = tuple(int(side) for side in meta["object_shape"])
    start = FarFieldMicroscope(
        Probe(meta["probe"], data.wavelength, dx), SampleFunction(np.ones(shape, np.complex64), dx), data.positions
    )
    if "illumination" in meta:
        illumination = meta["illumination"]
    else:
        true = FarFieldMicroscope(Probe(meta["probe_true"], data.wavelength, dx), start.sample, data.positions)
        illumination = np.asarray(illumination_map(true))
    return data, start, meta["object_true"], illumination, meta


def fft_floor(num_positions: int, frame_shape: tuple[int, int], repeats: int = 7, *, one_thread: bool = True) -> dict:
    """The FFT floor of `benchmarks/floor.py`: every way janssen could run an iteration's FFTs, the fastest.

    Keys `fft_floor_s` (least wall time), `fft_floor_way` (the way that gave it),
    `fft_floor_cpu_s` (least process CPU time) and `fft_floor_ways` (`{way: [wall, cpu]}`:
    batched, blocks of 8 and a per-position chain, with all threads and with one thread).
    """
    return _floor().fft_floor(num_positions, frame_shape, repeats, one_thread=one_thread)


def _floor():
    """`benchmarks/floor.py` as a module (this file may be imported from elsewhere)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import floor

    return floor


def make_engine(name: str, start):
    """The engine called `name`, configured for the starting microscope `start`."""
    import jax.numpy as jnp

    import janssen.invert as jinv

    if name.endswith("-batched") or name in ("epie", "rpie", "mpie"):
        family = {"epie": jinv.EPIE, "rpie": jinv.RPIE, "mpie": jinv.MomentumPIE}[name.split("-")[0]]
        return family(mode="batched" if name.endswith("-batched") else "sequential")
    if name == "adam":
        import optax  # only here: the PIE rows' processes do not import it (time_to_accuracy.py)

        # Adam moves each part by about its rate: the probe's on the scale of its amplitude.
        rms = float(jnp.sqrt(jnp.mean(jnp.abs(start.probe.fields()) ** 2)))
        # An iteration is an epoch of minibatch steps (20 positions each), as in other
        # automatic-differentiation codes: full-batch Adam needs far more passes.
        return jinv.Gradient(optax.adam(0.02), learning_rates={"probe": rms}, batch_size=20, sweep=True)
    if name == "gauss-newton":
        return jinv.GaussNewton()
    if name == "optx-lm":
        if not hasattr(jinv, "OptimistixLeastSquares"):
            raise _Skip("janssen.invert.OptimistixLeastSquares does not exist in this janssen")
        return jinv.OptimistixLeastSquares()
    raise SystemExit(f"unknown engine {name!r}; valid engines: {', '.join(ENGINES)}")


class _Skip(Exception):
    """An engine that cannot run here (the reason is printed, the suite goes on)."""


def _sig(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (times from 1e-4 s to 1e3 s)."""
    return float(f"{value:.{digits}g}")


def run_to_target(iterations: int | None, per_iter: float | None) -> float | None:
    """Seconds to the target error with the compilation apart: `iterations` at `per_iter` each."""
    if iterations is None or not per_iter:
        return None
    return _sig(iterations * per_iter)


def _result_name(result) -> str:
    from janssen.invert import RESULTS

    names = ("max_iterations_reached", "converged", "nonfinite", "interrupted", "positions_off_object")
    return next((name for name in names if bool(result == getattr(RESULTS, name))), str(result))


def run_worker(name: str, data_path: str, iterations: int) -> dict:
    """Run one engine on one dataset file in this process; return its JSON row."""
    import jax
    import numpy as np

    import janssen
    from janssen.invert import object_error, reconstruct

    baseline = _rss_mb()
    data, start, truth, illumination, meta = load_dataset(data_path)
    engine = make_engine(name, start)
    times, cpu_times, errors, marks = [], [], [], {}
    snapshots = pathlib.Path(tempfile.mkdtemp(prefix="janssen-worker-"))

    def callback(iteration, loss, microscope):
        now, now_cpu = time.perf_counter(), time.process_time()
        times.append(now - marks["last"])
        cpu_times.append(now_cpu - marks["last_cpu"])
        if iteration == 1:
            marks["reset"] = _reset_peak()
        current = np.asarray(microscope.sample.sample)
        errors.append(object_error(truth, current, illumination, max_shift=0))
        # The ramp-free error after the run: its FFTs and BLAS calls between iterations
        # slowed the iterations (page cache, not resident memory, holds the copies).
        np.save(snapshots / f"{len(errors)}.npy", current)
        marks["last"], marks["last_cpu"] = time.perf_counter(), time.process_time()

    spawned = os.environ.get(SPAWN_CLOCK)
    start_to_reconstruct = time.time() - float(spawned) if spawned else None
    marks["last"], marks["last_cpu"] = time.perf_counter(), time.process_time()
    solution = reconstruct(start, data, engine, num_iterations=iterations, callback=callback)
    # The peaks first: the FFT floor below holds every frame's spectrum at once.
    run_peak = _peak_since_reset_mb() if marks.get("reset") else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if not times:
        raise RuntimeError(f"{name} stopped before its first iteration ({solution.result})")
    floors = fft_floor(data.num_positions, data.frame_shape, repeats=15)
    floor, floor_cpu = floors["fft_floor_s"], floors["fft_floor_cpu_s"]
    final_object = np.asarray(solution.microscope.sample.sample)
    final = object_error(truth, final_object, illumination)
    final_ramp = ramp_free_error(truth, final_object, illumination, max_shift=2)
    errors[-1] = final
    reached = next((i for i, e in enumerate(errors) if e <= TARGET), None)
    ramp_errors = []
    for i in range(1, len(errors) + 1):
        ramp_errors.append(ramp_free_error(truth, np.load(snapshots / f"{i}.npy"), illumination, max_shift=0))
        (snapshots / f"{i}.npy").unlink()
    snapshots.rmdir()
    reached_ramp = next((i for i, e in enumerate(ramp_errors) if e <= TARGET), None)
    per_iter = statistics.median(times[1:] or times)
    per_iter_cpu = statistics.median(cpu_times[1:] or cpu_times)
    dataset_mb = data.intensities.nbytes / 2**20
    return {
        "engine": name,
        "size": str(meta["size"]),
        "iterations": len(times),
        "per_iter_s": _sig(per_iter),
        "compile_s": _sig(times[0]),
        "fft_floor_s": _sig(floor),
        "fft_floor_way": floors["fft_floor_way"],
        "ratio": round(per_iter / floor, 2),
        "per_iter_cpu_s": _sig(per_iter_cpu),
        "fft_floor_cpu_s": _sig(floor_cpu),
        "ratio_cpu": round(per_iter_cpu / floor_cpu, 2),
        "fft_floor_ways": floors["fft_floor_ways"],
        "obj_err": round(final, 4),
        "obj_err_ramp": round(final_ramp, 4),
        "start_probe_error": round(float(meta["start_probe_error"]), 4) if "start_probe_error" in meta else None,
        "obj_err_at_10": round(errors[min(9, len(errors) - 1)], 4),
        "iters_to_0.066": None if reached is None else reached + 1,
        "time_to_0.066_s": None if reached is None else _sig(sum(times[: reached + 1])),
        "run_to_0.066_s": run_to_target(None if reached is None else reached + 1, per_iter),
        "iters_to_0.066_ramp": None if reached_ramp is None else reached_ramp + 1,
        "time_to_0.066_ramp_s": None if reached_ramp is None else _sig(sum(times[: reached_ramp + 1])),
        "residual": round(solution.final_loss, 4),
        **({} if start_to_reconstruct is None else {"start_to_reconstruct_s": _sig(start_to_reconstruct)}),
        "noise_floor": round(float(meta["noise_floor"]), 4) if "noise_floor" in meta else None,
        "result": _result_name(solution.result),
        "peak_rss_mb": round(peak, 1),
        "run_rss_mb": None if run_peak is None else round(run_peak - baseline, 1),
        "dataset_mb": round(dataset_mb, 2),
        "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind} x{jax.device_count()}",
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpus": _floor().usable_cpus(),  # fewer than `cores` under `taskset` or a scheduler's cpuset
        "janssen": janssen.__version__,
        "jax": jax.__version__,
    }


# ---- peers --------------------------------------------------------------------------------------


def peer_command(peer: str, data: pathlib.Path, engine: str, iterations: int, out: pathlib.Path):
    """The command that runs `peer` with its recommended settings, or a string saying why it cannot run."""
    arguments = ["--data", str(data), "--engine", engine, "--iterations", str(iterations), "--out", str(out)]
    arguments += ["--save-object", str(out.with_suffix(".npy")), "--ramp-history"]
    arguments += PEER_SETTINGS.get((peer, engine), ([], ""))[0]
    if peer == "ptychi":
        arguments += ["--threads", os.environ.get("JANSSEN_PEER_THREADS", "1")]
    hook = PEERS / "run_peer.py"
    if hook.is_file():
        return [sys.executable, str(hook), "--peer", peer, *arguments]
    runner = PEERS / f"{peer}_runner.py"
    if not runner.is_file():
        return f"no runner {runner}"
    variable = f"JANSSEN_PEER_PYTHON_{peer.upper()}"
    python = pathlib.Path(os.environ.get(variable) or PEERS / f".venv-{peer}" / "bin" / "python")
    if not python.is_file():
        return f"no interpreter {python} (run benchmarks/peers/install_{peer}.sh, or set {variable})"
    return [str(python), str(runner), *arguments]


def run_peer(peer: str, engine: str, size: str, data: pathlib.Path, iterations: int, floors: dict, timeout: float):
    """A row for `peer` running `engine`, or a string saying why it was skipped."""
    out = data.with_name(f"{peer}-{engine}-{size}.json")
    command = peer_command(peer, data, engine, iterations, out)
    if isinstance(command, str):
        return command
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    except OSError as error:
        return f"could not start: {error}"
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return f"exit code {done.returncode}: {lines[-1] if lines else 'no output'}"
    try:
        result = json.loads(out.read_text())
    except (OSError, ValueError) as error:
        return f"no readable result {out.name}: {error}"
    if result.get("skipped"):
        return str(result["skipped"])
    if out.with_suffix(".npy").is_file():
        result.setdefault("object_npy", str(out.with_suffix(".npy")))
    result.setdefault("settings_source", PEER_SETTINGS.get((peer, engine), (None, None))[1])
    return peer_row(peer, engine, size, data, result, floors.get(size))


def peer_row(peer: str, engine: str, size: str, data: pathlib.Path, result: dict, jax_floor: tuple | None) -> dict:
    """A suite row from a peer runner's JSON (keys: benchmarks/README.md, "Peers")."""
    import numpy as np

    history = result.get("obj_err_history") or []
    obj_err = result.get("obj_err", history[-1] if history else None)
    obj_err_ramp = result.get("obj_err_ramp_removed")
    final_object = result.get("object_npy")
    if final_object:  # recompute with janssen's own measure, and the ramp-free one as janssen's rows
        from janssen.invert import object_error

        with np.load(data) as npz:
            truth, illumination = npz["object_true"], npz["illumination"]
        recon = np.load(final_object)
        obj_err = object_error(truth, recon, illumination)
        obj_err_ramp = ramp_free_error(truth, recon, illumination, max_shift=2)
    reached = result.get("iters_to_0.066", next((i + 1 for i, e in enumerate(history) if e <= TARGET), None))
    # The peer's own FFT floor if it timed one, else JAX's (wall, CPU), timed by this run's janssen rows.
    floor = result.get("fft_floor_s") or (jax_floor[0] if jax_floor else None)
    floor_cpu = result.get("fft_floor_cpu_s") or (jax_floor[1] if jax_floor else None)
    per_iter, per_iter_cpu = result.get("per_iter_s"), result.get("per_iter_cpu_s")
    return {
        "engine": f"{peer}:{engine}",
        "size": size,
        "iterations": result.get("iterations", len(history)),
        "per_iter_s": per_iter,
        "per_iter_cpu_s": per_iter_cpu,
        "compile_s": result.get("compile_s"),
        "fft_floor_s": floor,
        "ratio": round(per_iter / floor, 2) if per_iter and floor else None,
        "ratio_cpu": round(per_iter_cpu / floor_cpu, 2) if per_iter_cpu and floor_cpu else None,
        "obj_err": None if obj_err is None else round(float(obj_err), 4),
        "obj_err_ramp": None if obj_err_ramp is None else round(float(obj_err_ramp), 4),
        "iters_to_0.066": reached,
        "time_to_0.066_s": result.get("time_to_0.066_s", result.get("wall_to_0.066_s")),
        "run_to_0.066_s": run_to_target(reached, per_iter),
        "iters_to_0.066_ramp": result.get("iters_to_0.066_ramp_removed"),
        "time_to_0.066_ramp_s": result.get("time_to_0.066_ramp_removed_s"),
        "residual": result.get("residual"),
        "peak_rss_mb": result.get("peak_rss_mb"),
        "device": result.get("device", "cpu"),
        "peer_version": result.get("version", result.get("peer_version")),
        "settings": result.get("settings"),
        "settings_source": result.get("settings_source"),
    }


# ---- the table ------------------------------------------------------------------------------------

COLUMNS = [
    ("size", "size"),
    ("engine", "engine"),
    ("iterations", "iterations"),
    ("per_iter_s", "s / iteration"),
    ("fft_floor_s", "FFT floor (s)"),
    ("fft_floor_way", "floor way"),
    ("ratio", "× floor"),
    ("ratio_cpu", "× floor (CPU time)"),
    ("compile_s", "first iteration (s)"),
    ("obj_err", "error"),
    ("obj_err_ramp", "error, ramp removed"),
    ("iters_to_0.066", "iterations to 0.066"),
    ("time_to_0.066_s", "s to 0.066"),
    ("run_to_0.066_s", "s to 0.066, compile apart"),
    ("iters_to_0.066_ramp", "iterations to 0.066, ramp removed"),
    ("time_to_0.066_ramp_s", "s to 0.066, ramp removed"),
    ("residual", "residual"),
    ("noise_floor", "noise floor"),
    ("run_rss_mb", "run memory (MB)"),
    ("peak_rss_mb", "peak RSS (MB)"),
]


def _run_to_0066(row: dict) -> float | None:
    """The row's `run_to_0.066_s`, derived for rows saved before the field existed."""
    if "run_to_0.066_s" in row:
        return row["run_to_0.066_s"]
    return run_to_target(row.get("iters_to_0.066"), row.get("per_iter_s"))


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        row = {**row, "run_to_0.066_s": _run_to_0066(row)}
        lines.append("| " + " | ".join("—" if row.get(key) is None else str(row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def race_to_target(rows: list[dict]) -> list[str]:
    """Per size, the fastest janssen engine and the fastest peer to error 0.066, in both measures.

    One line per size: with the compilation apart (`run_to_0.066_s`, DESIGN.md's measure)
    and from the start of the run (`time_to_0.066_s`, janssen's compilation included).
    """
    lines = []
    for size in dict.fromkeys(row["size"] for row in rows):
        entries = []
        for side, is_peer in (("janssen", False), ("peers", True)):
            mine = [row for row in rows if row["size"] == size and (":" in row["engine"]) == is_peer]
            fastest = []
            for key in ("run_to_0.066_s", "time_to_0.066_s"):
                timed = [row for row in mine if row.get(key) is not None]
                best = min(timed, key=lambda row: row[key], default=None)
                fastest.append("none reached it" if best is None else f"{best['engine']} {best[key]} s")
            if mine:
                entries.append(f"{side}: {fastest[0]} (compile apart), {fastest[1]} (from the start)")
        lines.append(f"- {size}, fastest to error {TARGET}: " + "; ".join(entries))
    return lines


def notes(rows: list[dict]) -> list[str]:
    """Lines under the table: per size the start's distance and the floor's ways; each peer's settings."""
    lines = []
    for size in dict.fromkeys(row["size"] for row in rows):
        fastest = []
        for side, is_peer in (("janssen", False), ("peers", True)):
            timed = [r for r in rows if r["size"] == size and (":" in r["engine"]) == is_peer]
            timed = [r for r in timed if r.get("time_to_0.066_ramp_s") is not None]
            best = min(timed, key=lambda r: r["time_to_0.066_ramp_s"], default=None)
            if best is not None:
                fastest.append(f"{side}: {best['engine']} {best['time_to_0.066_ramp_s']} s")
        if fastest:
            title = f"- {size}, fastest to error {TARGET} with the ramp removed (from the start): "
            lines.append(title + "; ".join(fastest))
    for size in dict.fromkeys(row["size"] for row in rows):
        mine = [row for row in rows if row["size"] == size and ":" not in row["engine"]]
        start = next((row["start_probe_error"] for row in mine if row.get("start_probe_error") is not None), None)
        if start is not None:
            lines.append(f"- {size}: start probe's distance from the truth (a global factor apart) {start}")
        for row in mine:
            ways = row.get("fft_floor_ways")
            if ways:
                listed = ", ".join(f"{way} {wall}" for way, (wall, _) in sorted(ways.items(), key=lambda kv: kv[1][0]))
                lines.append(f"- {size}, {row['engine']}: FFT floor ways (wall s, fastest first): {listed}")
    for row in rows:
        if ":" in row["engine"] and (row.get("settings_source") or row.get("settings")):
            settings = json.dumps(row.get("settings"), sort_keys=True) if row.get("settings") else ""
            lines.append(f"- {row['engine']} on {row['size']}: {row.get('settings_source') or ''} {settings}".rstrip())
    return lines


def docs_section(rows: list[dict], skipped: list[str], command: str) -> str:
    """The generated part of docs/benchmarks.md."""
    first = next((row for row in rows if "jax" in row), {})
    when = datetime.date.today().isoformat()
    cores = f"{first.get('cores', '?')} cores"
    if first.get("cpus") not in (None, first.get("cores")):
        cores += f", {first['cpus']} in use"
    lines = [
        BEGIN,
        "",
        f"Generated by `{command}` on {when}: {first.get('device', '?')}, {cores} "
        f"({first.get('cpu', '?')}), janssen {first.get('janssen', '?')}, JAX {first.get('jax', '?')}. "
        "Each row ran in its own process; its FFT floor was timed in that process.",
        "",
        markdown_table(rows),
        *race_to_target([{**row, "run_to_0.066_s": _run_to_0066(row)} for row in rows]),
        "",
        *notes(rows),
        "",
    ]
    if skipped:
        lines += ["Not run:", ""] + [f"- {reason}" for reason in skipped] + [""]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_docs(path: pathlib.Path, section: str) -> None:
    """Replace the text between the markers of `path` (or append the section)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


# ---- the parent -------------------------------------------------------------------------------------


def _names(text: str, valid, what: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise SystemExit(f"unknown {what} {unknown or [text]}; valid {what}s: {', '.join(valid)}")
    return names


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from {', '.join(ENGINES)}")
    parser.add_argument("--iterations", type=int, default=None, help="iterations of every engine (default: per engine)")
    parser.add_argument("--out", default=None, help="write one JSON line per (engine, size) to this file")
    parser.add_argument("--docs", default=str(DOCS), help="Markdown page whose generated table is replaced")
    parser.add_argument("--no-docs", action="store_true", help="do not touch the Markdown page")
    parser.add_argument("--peers", default="", help="peer libraries to run as well, e.g. ptylab,ptychi")
    offered = "; ".join(f"{peer}: {','.join(engines)}" for peer, engines in PEER_ENGINES.items())
    parser.add_argument("--peer-engines", default=None, help=f"engines asked of every peer (default: {offered})")
    parser.add_argument("--data-dir", default=None, help="keep the dataset files here (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds allowed to each run")
    parser.add_argument(
        "--table-from", default=None, metavar="FILE.jsonl", help="only rewrite the Markdown table from saved rows"
    )
    parser.add_argument("--worker", nargs=3, metavar=("ENGINE", "DATA", "ITERATIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations is not None and args.iterations < 1:
        raise SystemExit(f"--iterations must be >= 1, got {args.iterations}")
    return args


def run_engine(name: str, data: pathlib.Path, iterations: int, timeout: float) -> tuple[dict | None, str, bool]:
    """Run one (engine, size) in a subprocess: `(row, "", False)`, or `(None, why, failed)`.

    `failed` is False when the engine cannot run here (e.g. it does not exist in this
    janssen) and True when it broke.
    """
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", name, str(data), str(iterations)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s", True
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        errors = done.stderr.strip().splitlines()
        return None, f"failed (exit code {done.returncode}): {errors[-1] if errors else 'no output'}", True
    row = json.loads(lines[-1])
    if "skipped" in row:
        return None, row["skipped"], False
    return row, "", False


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        name, data, iterations = args.worker
        try:
            row = run_worker(name, data, int(iterations))
        except _Skip as reason:
            row = {"skipped": str(reason)}
        print(json.dumps(row), flush=True)
        return 0
    if args.table_from:
        lines = [json.loads(line) for line in pathlib.Path(args.table_from).read_text().splitlines() if line.strip()]
        rows = [line for line in lines if "skipped" not in line]
        skipped = [f"{line['engine']} on {line['size']}: {line['skipped']}" for line in lines if "skipped" in line]
        sizes = ",".join(dict.fromkeys(line["size"] for line in lines))
        mine = ",".join(dict.fromkeys(line["engine"] for line in lines if ":" not in line["engine"]))
        peers = ",".join(dict.fromkeys(line["engine"].split(":")[0] for line in lines if ":" in line["engine"]))
        command = f"python benchmarks/run.py --sizes {sizes} --engines {mine}" + (f" --peers {peers}" if peers else "")
        write_docs(pathlib.Path(args.docs), docs_section(rows, skipped, command))
        return 0
    sizes = _names(args.sizes, SIZES, "size")
    engines = _names(args.engines, ENGINES, "engine")
    peers = [name for name in args.peers.split(",") if name]
    chosen = [name for name in (args.peer_engines or "").split(",") if name]
    folder = pathlib.Path(args.data_dir or tempfile.mkdtemp(prefix="janssen-benchmarks-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, skipped, floors, failed = [], [], {}, False
    out = open(args.out, "w") if args.out else None
    try:
        for size in sizes:
            data = folder / f"{size}.npz"
            summary = write_dataset(size, data)
            print(
                f"# {size}: {summary['dataset_mb']:.1f} MB of frames, noise floor {summary['noise_floor']:.3f}, "
                f"unit-object error {summary['unit_object_error']:.3f} ({data})",
                flush=True,
            )
            for name in engines:
                row, reason, broke = run_engine(name, data, args.iterations or ENGINES[name][0], args.timeout)
                if row is None:
                    failed |= broke
                    skipped.append(f"{name} on {size}: {reason}")
                    print(f"# skipped {skipped[-1]}", flush=True)
                    if out:
                        out.write(json.dumps({"engine": name, "size": size, "skipped": reason}) + "\n")
                    continue
                floors.setdefault(size, (row["fft_floor_s"], row["fft_floor_cpu_s"]))
                rows.append(row)
                print(json.dumps(row), flush=True)
                if out:
                    out.write(json.dumps(row) + "\n")
                    out.flush()
            for peer in peers:
                for engine in chosen or PEER_ENGINES.get(peer, ("epie",)):
                    iterations = args.iterations or ENGINES.get(engine, (50,))[0]
                    row = run_peer(peer, engine, size, data, iterations, floors, args.timeout)
                    if isinstance(row, str):
                        skipped.append(f"{peer}:{engine} on {size}: {row}")
                        print(f"# skipped {skipped[-1]}", flush=True)
                        if out:
                            out.write(json.dumps({"engine": f"{peer}:{engine}", "size": size, "skipped": row}) + "\n")
                        continue
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if out:
                        out.write(json.dumps(row) + "\n")
    finally:
        if out:
            out.close()
    if not args.no_docs and rows:
        command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_docs(pathlib.Path(args.docs), docs_section(rows, skipped, command.strip()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
