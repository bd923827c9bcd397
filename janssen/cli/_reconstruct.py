"""`janssen reconstruct` and `janssen demo`: run an engine on a dataset, save the result and figures."""

import argparse
import pathlib
import sys
import time
import tomllib
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import janssen.invert as jinv
import janssen.io as jio
from janssen.optics import Probe, SampleFunction
from janssen.scopes import FarFieldMicroscope

_ENGINES = {"epie": jinv.EPIE, "rpie": jinv.RPIE, "mpie": jinv.MomentumPIE}
_DEFAULTS = {"engine": "rpie", "iterations": 50, "batched": False, "seed": 0, "probe": None, "out": None}
_CHECKPOINT_EVERY = 10
_INTERRUPTED = 130  # the shell's code for a run stopped by SIGINT


class UsageError(Exception):
    """A bad argument, config or input file: reported in one line, exit code 2."""


def add_reconstruct_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `reconstruct` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct object and probe from a CXI file or the Siemens-star .npz.bz2",
        description=(
            "Reconstruct object and probe with a PIE engine. Writes RESULT.h5 (checkpointed every "
            f"{_CHECKPOINT_EVERY} iterations; resumable with --resume) and RESULT_object.png, "
            "RESULT_probe.png, RESULT_loss.png beside it. Flags override the config file."
        ),
    )
    parser.add_argument("data", type=pathlib.Path, help="a CXI file (.cxi/.h5) or the Siemens-star .npz(.bz2)")
    parser.add_argument("--config", type=pathlib.Path, help="TOML file with the same keys as the flags")
    parser.add_argument("--engine", choices=sorted(_ENGINES), help="engine (default rpie)")
    parser.add_argument("--iterations", type=int, help="iterations to run (default 50)")
    parser.add_argument("--probe", type=pathlib.Path, help="starting probe, a .npy of (y, x) or (modes, y, x)")
    parser.add_argument("--batched", action="store_true", default=None, help="batched instead of sequential PIE")
    parser.add_argument("--out", type=pathlib.Path, help="result file (default: DATA's name + _result.h5)")
    parser.add_argument("--resume", type=pathlib.Path, help="continue from this result file's checkpoint")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.set_defaults(handler=run_reconstruct)


def add_demo_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `demo` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="simulate a small dataset, reconstruct it and compare with the ground truth",
        description="Simulate the small preset, reconstruct it with rPIE, write the result and figures to DIR.",
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("janssen-demo"), help="output folder")
    parser.add_argument("--iterations", type=int, default=30, help="rPIE iterations (default 30)")
    parser.set_defaults(handler=run_demo)


# ---- settings --------------------------------------------------------------------------


def _read_config(path: pathlib.Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-level settings and engine parameters from a TOML file."""
    if path is None:
        return {}, {}
    try:
        config = tomllib.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read config {str(path)!r}: {error.strerror or error}") from error
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"config {str(path)!r} is not valid TOML: {error}") from error
    params: dict[str, Any] = {}
    if isinstance(config.get("engine"), dict):
        params = dict(config.pop("engine"))
        if "name" in params:
            config["engine"] = params.pop("name")
    unknown = sorted(set(config) - set(_DEFAULTS))
    if unknown:
        raise UsageError(
            f"unknown key {unknown[0]!r} in config {str(path)!r} (allowed: {', '.join(_DEFAULTS)}, [engine])"
        )
    return config, params


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    config, params = _read_config(args.config)
    settings = {**_DEFAULTS, **config}
    for name in _DEFAULTS:
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    if settings["engine"] not in _ENGINES:
        raise UsageError(f"unknown engine {settings['engine']!r} (choose from {', '.join(sorted(_ENGINES))})")
    if not isinstance(settings["iterations"], int) or settings["iterations"] < 0:
        raise UsageError(f"iterations must be an integer >= 0, got {settings['iterations']!r}")
    return settings, params


def _make_engine(cls: type, params: dict[str, Any], batched: bool) -> jinv.AbstractEngine:
    allowed = {name for name in cls.__dataclass_fields__ if not name.startswith("_")}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} parameter {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    params = dict(params)
    params.setdefault("mode", "batched" if batched else "sequential")
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"bad {cls.__name__} parameters: {error}") from error


# ---- inputs ------------------------------------------------------------------------------


def _load_data(path: pathlib.Path) -> tuple[jio.MicroscopeData, Any]:
    """The data and, for the Siemens star, the probe that comes with it."""
    if not path.is_file():
        raise UsageError(f"data file {str(path)!r} does not exist")
    try:
        if path.name.endswith((".npz.bz2", ".npz")):
            measured = jio.load_siemens_star(path)
            return measured.data, measured.probe
        return jio.read_cxi(path), None
    except (OSError, ValueError, KeyError) as error:
        raise UsageError(f"cannot read data file {str(path)!r}: {error}") from error


def _load_probe(path: pathlib.Path, data: jio.MicroscopeData) -> np.ndarray:
    try:
        probe = np.load(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read probe {str(path)!r}: {error}") from error
    if probe.shape[-2:] != tuple(data.frame_shape) or probe.ndim not in (2, 3):
        raise UsageError(
            f"probe {str(path)!r} must be (y, x) or (modes, y, x) with frames {data.frame_shape}, got {probe.shape}"
        )
    # Scale to the measured counts: with a unit object the model then predicts the data's power.
    counts = float(np.mean(np.sum(np.asarray(data.intensities), axis=(1, 2))))
    return probe * np.sqrt(counts / np.sum(np.abs(probe) ** 2))


def _start_microscope(settings: dict[str, Any], data: jio.MicroscopeData, bundled: Any) -> FarFieldMicroscope:
    # A model probe (from a file or bundled with the data) is centred on the measured
    # far field first: the engines pin the probe's far-field centroid (phase-ramp ambiguity).
    if settings["probe"] is not None:
        model = _load_probe(pathlib.Path(settings["probe"]), data)
        return jinv.init_far_field_microscope(data, jinv.align_probe_to_data(jnp.asarray(model), data))
    if bundled is not None:
        bundled = jinv.align_probe_to_data(jnp.asarray(bundled), data)
    return jinv.init_far_field_microscope(data, bundled)


def _resumed(path: pathlib.Path, data: jio.MicroscopeData, engine: jinv.AbstractEngine) -> jinv.Solution:
    """The solution saved in `path`, rebuilt on a template of the same shapes."""
    try:
        saved = jio.read_result(path)
    except ValueError as error:
        raise UsageError(str(error)) from error
    dx = saved["object_pixel_size"]
    probe = Probe(saved["probe"], saved["wavelength"], dx)
    microscope = FarFieldMicroscope(probe, SampleFunction(saved["object"], dx), saved["positions"])
    try:
        like = jinv.reconstruct(microscope, data, engine, num_iterations=0)
        return jinv.load_solution(path, like)
    except ValueError as error:
        raise UsageError(f"cannot resume from {str(path)!r}: {error}") from error


def _engine_from_result(path: pathlib.Path, batched: bool) -> jinv.AbstractEngine:
    try:
        attrs = jio.read_result(path)["attrs"]
    except ValueError as error:
        raise UsageError(str(error)) from error
    classes = {cls.__name__: cls for cls in _ENGINES.values()}
    if attrs.get("engine") not in classes:
        raise UsageError(f"{str(path)!r} was made by engine {attrs.get('engine')!r}, which the CLI cannot resume")
    return _make_engine(classes[attrs["engine"]], attrs.get("engine_parameters", {}), batched)


# ---- running -----------------------------------------------------------------------------


def _default_out(data_path: pathlib.Path) -> pathlib.Path:
    name = data_path.name.split(".")[0] or "janssen"
    return pathlib.Path(f"{name}_result.h5")


def _figures(solution: jinv.Solution, out: pathlib.Path) -> list[pathlib.Path]:
    try:
        from janssen.plots import save_figures
    except ImportError:  # pragma: no cover - matplotlib is optional
        return []
    try:
        return list(save_figures(solution, out.parent, out.stem).values())
    except ImportError:  # pragma: no cover
        print("janssen: matplotlib is not installed; no figures written", file=sys.stderr)
        return []


def _run(microscope_or_solution, data, engine, settings, out: pathlib.Path, *, meter) -> tuple[jinv.Solution, float]:
    def checkpoint(solution: jinv.Solution) -> None:
        jinv.save_solution(out, solution, data, engine)

    started = time.perf_counter()
    solution = jinv.reconstruct(
        microscope_or_solution,
        data,
        engine,
        num_iterations=settings["iterations"],
        key=jr.PRNGKey(settings["seed"]),
        progress_meter=meter,
        checkpoint=checkpoint,
        checkpoint_every=_CHECKPOINT_EVERY,
    )
    return solution, time.perf_counter() - started


def _error(command: str, error: BaseException) -> int:
    print(f"janssen {command}: error: {' '.join(str(error).split())}", file=sys.stderr)
    return 2


def run_reconstruct(args: argparse.Namespace) -> int:
    """Load, reconstruct, save and summarise; bad input gives one line on stderr and exit 2."""
    try:
        settings, params = _settings(args)
        data, bundled = _load_data(args.data)
        if args.resume is not None:
            engine = _engine_from_result(args.resume, bool(settings["batched"]))
            start = _resumed(args.resume, data, engine)
            out = args.out or args.resume
        else:
            engine = _make_engine(_ENGINES[settings["engine"]], params, bool(settings["batched"]))
            start = _start_microscope(settings, data, bundled)
            out = pathlib.Path(settings["out"]) if settings["out"] else _default_out(args.data)
        if not out.parent.is_dir():
            raise UsageError(f"cannot write {str(out)!r}: folder {str(out.parent)!r} does not exist")
        solution, seconds = _run(start, data, engine, settings, out, meter=jinv.TextProgressMeter())
    except UsageError as error:
        return _error("reconstruct", error)
    except (OSError, ValueError) as error:
        return _error("reconstruct", error)
    figures = _figures(solution, out)
    print(_summary(solution, seconds, out, figures))
    if solution.result == jinv.RESULTS.interrupted:
        print(f"interrupted: checkpoint saved; continue with `janssen reconstruct {args.data} --resume {out}`")
        return _INTERRUPTED
    return 0


def _summary(solution: jinv.Solution, seconds: float, out: pathlib.Path, figures: list[pathlib.Path]) -> str:
    from janssen.invert._checkpoint import result_name

    lines = [
        f"{solution.iteration} iterations in total ({result_name(solution.result)}), "
        f"final loss {solution.final_loss:.4g}, {seconds:.1f} s",
        f"wrote {out}",
    ]
    lines += [f"wrote {path}" for path in figures]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    """Simulate the small preset, reconstruct with rPIE and report errors against the truth."""
    out_dir: pathlib.Path = args.out
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return _error("demo", error)
    if args.iterations < 0:
        return _error("demo", ValueError(f"--iterations must be >= 0, got {args.iterations}"))
    truth = jio.simulate_preset("small", key=jr.PRNGKey(0))
    data = truth.data
    engine = jinv.RPIE()
    settings = {"iterations": args.iterations, "seed": 0}
    out = out_dir / "demo.h5"
    solution, seconds = _run(
        jinv.init_far_field_microscope(data), data, engine, settings, out, meter=jinv.TextProgressMeter()
    )
    figures = _figures(solution, out)
    illumination = jinv.illumination_map(truth.microscope())
    error = jinv.object_error(truth.object, solution.microscope.sample.sample, illumination)
    residual = jinv.data_residual(solution.microscope, data)
    floor = jinv.data_residual(truth.microscope(), data)
    print(_summary(solution, seconds, out, figures))
    print(f"object error vs ground truth: {error:.4f} (a unit object scores about 0.5)")
    print(f"data residual: {residual:.4f} sqrt(counts); noise floor (ground truth): {floor:.4f}")
    return 0
