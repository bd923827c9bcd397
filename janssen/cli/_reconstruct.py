"""`janssen reconstruct` and `janssen demo`: run an engine on a dataset, save the result and figures."""

import argparse
import contextlib
import fcntl
import json
import operator
import os
import pathlib
import shlex
import signal
import socket
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import janssen.invert as jinv
import janssen.io as jio
from janssen.invert._geometry import SCALE_RANGE
from janssen.invert._init import _default_padding
from janssen.invert._reconstruct import DIVERGENCE_FACTOR
from janssen.invert._trainable import selected_paths
from janssen.io._results import temporary_path
from janssen.optics import (
    CoherentModeSet,
    MixedStateProbe,
    Probe,
    SampleFunction,
    ScaledFraunhofer,
    extend_modes,
)
from janssen.scopes import DetectorResponse, FarFieldMicroscope, NearFieldMicroscope, with_detector

from ._args import MAX_ITERATIONS, MAX_MODES, path_argument

_PIE_ENGINES = {"epie": jinv.EPIE, "rpie": jinv.RPIE, "mpie": jinv.MomentumPIE}
_OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}
# Adam moves a parameter by about its rate per iteration, so 0.02 suits a unit object; plain
# gradient descent moves it by rate x gradient, and 1.0 lowers the amplitude loss steadily on
# simulated far-field data (measured on 32 x 32 frames, 1e5 counts: 2.35 -> 1.95 in 2 steps;
# at 10 the object alone diverges).
_DEFAULT_LEARNING_RATES = {"adam": 0.02, "sgd": 1.0}
_GAUSS_NEWTON = "gauss-newton"
# `GaussNewton` is Levenberg-Marquardt; "gauss-newton" starts it with almost no damping.
_LEAST_SQUARES = {_GAUSS_NEWTON: {"initial_damping": 1e-6}, "lm": {}}
_OPTIMISTIX = {"optx-gn": "gauss-newton", "optx-lm": "levenberg-marquardt", "optx-dogleg": "dogleg"}
# "auto": `janssen.invert.default_schedule` (rPIE, ePIE with small steps, batched mPIE; each until converged).
_AUTO = "auto"
_ENGINE_NAMES = sorted([_AUTO, *_PIE_ENGINES, *_OPTIMIZERS, *_LEAST_SQUARES, *_OPTIMISTIX])
_DEFAULT_ITERATIONS = 50

_LOSSES = ("amplitude", "poisson", "intensity")
_PROPAGATORS = ("fresnel", "angular_spectrum")
_PIE_REFINABLE = ("object", "sample", "probe")
# Extra probe modes start with this fraction of the total power each (capped so that the
# first mode keeps at least half of it).
_EXTRA_MODE_POWER = 0.05
_DEFAULTS = {
    "engine": _AUTO,
    "iterations": None,
    "batched": False,
    "seed": 0,
    "probe": None,
    "out": None,
    "loss": None,
    "learning_rate": None,
    "refine": None,
    "modes": 1,
    "near_field": False,
    "distance": None,
    "focus_to_sample": None,
    "propagator": None,
    "uncertainty": False,
    "noise_std": None,
    "geometry": False,
}
# The type each config key must have, and its description in an error message.
_CONFIG_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "engine": ((str,), "a string"),
    "iterations": ((int,), "an integer"),
    "batched": ((bool,), "true or false"),
    "seed": ((int,), "an integer"),
    "probe": ((str,), "a file name (string)"),
    "out": ((str,), "a file name (string)"),
    "loss": ((str,), "a string"),
    "learning_rate": ((int, float), "a number"),
    "refine": ((str, list), "a string or a list of strings"),
    "modes": ((int,), "an integer"),
    "near_field": ((bool,), "true or false"),
    "distance": ((int, float), "a number of metres"),
    "focus_to_sample": ((int, float), "a number of metres"),
    "propagator": ((str,), "a string"),
    "uncertainty": ((bool,), "true or false"),
    "noise_std": ((int, float), "a number"),
    "geometry": ((bool,), "true or false"),
}
_CHECKPOINT_EVERY = 10
# Seeds become 32-bit PRNG keys: a larger one would silently repeat a smaller one's run.
_MAX_SEED = 2**32 - 1
_MAX_MODES = MAX_MODES
# Amplitude noise in sqrt(counts): 1e6 would be the noise of 1e12 counts in one pixel.
_MAX_NOISE_STD = 1e6
# Distances over this many metres are millimetres (as `janssen.io.check_geometry` reads them).
_MAX_DISTANCE = 100.0
_FIGURES = ("object", "probe", "loss", "residual", "patterns", "truth")

#: Exit codes of `janssen reconstruct` and `janssen demo` (docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_NONFINITE = 3
EXIT_DIVERGED = 4
EXIT_POSITIONS_OFF_OBJECT = 5
EXIT_WRITE_FAILED = 6
EXIT_BUSY = 7
EXIT_INTERRUPTED = 130  # the shell's codes for a run stopped by SIGINT and by SIGTERM
EXIT_TERMINATED = 143
_STOP_CODES = {
    "nonfinite": EXIT_NONFINITE,
    "diverged": EXIT_DIVERGED,
    "positions_off_object": EXIT_POSITIONS_OFF_OBJECT,
}


class UsageError(Exception):
    """A bad argument, config or input file: reported in one line, exit code 2."""


class BusyError(UsageError):
    """Another run holds the output's lock: exit code 7."""


class WriteError(Exception):
    """A result file could not be written (disk full, permissions): exit code 6."""


def add_reconstruct_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `reconstruct` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct object and probe from a CXI file or the Siemens-star .npz.bz2",
        description=(
            "Reconstruct object and probe with a PIE, gradient (adam, sgd) or Gauss-Newton engine. Writes "
            f"RESULT.h5 (checkpointed every {_CHECKPOINT_EVERY} iterations; resumable with --resume) and "
            "RESULT_object.png, RESULT_probe.png, RESULT_loss.png, RESULT_residual.png beside it; prints R beside its "
            "Poisson floor. Flags override the config file."
        ),
    )
    parser.add_argument(
        "data", metavar="DATA", type=path_argument, help="a CXI file (.cxi/.h5) or the Siemens-star .npz(.bz2)"
    )
    parser.add_argument("--config", type=path_argument, help="TOML file with the same keys as the flags")
    parser.add_argument(
        "--engine",
        choices=_ENGINE_NAMES,
        help="engine (default auto: rPIE, ePIE with small steps, then batched mPIE, each until converged)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        help=f"iterations to run (default 50, at most {MAX_ITERATIONS}; with auto: the most, it stops on convergence)",
    )
    parser.add_argument("--probe", type=path_argument, help="starting probe, a .npy of (y, x) or (modes, y, x)")
    parser.add_argument("--batched", action="store_true", default=None, help="batched instead of sequential PIE")
    parser.add_argument("--loss", choices=_LOSSES, help="loss minimised by adam/sgd (default amplitude)")
    parser.add_argument(
        "--learning-rate", dest="learning_rate", type=float, help="adam/sgd learning rate (default 0.02 / 1.0)"
    )
    parser.add_argument(
        "--refine",
        help=(
            "comma-separated parts to refine besides the object, e.g. probe,positions,distance (default probe); "
            "in the far field, distance refines the object pixel wavelength * distance / (N * camera pixel)"
        ),
    )
    parser.add_argument(
        "--modes", type=int, help=f"probe modes of a mixed-state probe (default 1; at most {MAX_MODES} and the frames)"
    )
    parser.add_argument(
        "--near-field", dest="near_field", action="store_true", default=None, help="near-field data (CXI only)"
    )
    parser.add_argument("--distance", type=float, help="near field: sample-to-detector distance, m (default: file's)")
    parser.add_argument(
        "--focus-to-sample", dest="focus_to_sample", type=float, help="near field: focus-to-sample distance, m"
    )
    parser.add_argument("--propagator", choices=_PROPAGATORS, help="near field: propagator (default fresnel)")
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        default=None,
        help="after the run, write object_std: the per-pixel standard error of the object from the Gauss-Newton "
        "curvature (64 CG solves; meaningful at a converged solution)",
    )
    parser.add_argument(
        "--noise-std",
        dest="noise_std",
        type=float,
        help="with --uncertainty: amplitude noise in sqrt(counts) (0.5 for Poisson counts; default: from the residual)",
    )
    parser.add_argument(
        "--geometry",
        action="store_true",
        default=None,
        help="far field: first refine the scan positions and the distance (off by up to 7 %% and a few pixels) "
        "with janssen.invert.refine_geometry, then run the engine from there",
    )
    parser.add_argument(
        "--out", type=path_argument, help="result file (default: DATA's name + _result.h5, in DATA's folder)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing result file at --out and its figures (default: refuse)",
    )
    parser.add_argument("--resume", type=path_argument, help="continue from this result file's checkpoint")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.set_defaults(handler=run_reconstruct)


def add_demo_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `demo` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="simulate a small dataset, reconstruct it and compare with the ground truth",
        description="Simulate the small preset, reconstruct it with rPIE, write the result and figures to DIR.",
    )
    parser.add_argument("--out", type=path_argument, default=pathlib.Path("janssen-demo"), help="output folder")
    parser.add_argument(
        "--iterations", type=int, default=30, help=f"rPIE iterations (default 30, at most {MAX_ITERATIONS})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo's files in the folder")
    parser.set_defaults(handler=run_demo)


# ---- settings --------------------------------------------------------------------------


def _read_config(path: pathlib.Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-level settings and engine parameters from a TOML file."""
    if path is None:
        return {}, {}
    try:
        config = tomllib.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"cannot read --config {str(path)!r}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"--config {str(path)!r} is not a text file: expected TOML, got binary data") from error
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"config {str(path)!r} is not valid TOML: {error}") from error
    params: dict[str, Any] = {}
    if isinstance(config.get("engine"), dict):
        params = dict(config.pop("engine"))
        if "name" in params:
            if not isinstance(params["name"], str):
                raise UsageError(
                    f"config {str(path)!r}: [engine] key 'name' must be a string (an engine name), "
                    f"got {params['name']!r} ({type(params['name']).__name__})"
                )
            config["engine"] = params.pop("name")
    unknown = sorted(set(config) - set(_DEFAULTS))
    if unknown:
        raise UsageError(
            f"unknown key {unknown[0]!r} in config {str(path)!r} (allowed: {', '.join(_DEFAULTS)}, [engine])"
        )
    for name, value in config.items():
        types, expected = _CONFIG_TYPES[name]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise UsageError(
                f"config {str(path)!r}: key {name!r} must be {expected}, got {value!r} ({type(value).__name__})"
            )
        if expected.startswith("a file name") and not value.strip():
            raise UsageError(f"config {str(path)!r}: key {name!r} must be {expected}, got {value!r}")
    return config, params


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    config, params = _read_config(args.config)
    settings = {**_DEFAULTS, **config}
    for name in _DEFAULTS:
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    _check_settings(settings)
    return settings, params


def _is_pie(engine: str) -> bool:
    """PIE engines, and the default schedule, which runs them."""
    return engine in _PIE_ENGINES or engine == _AUTO


def _refine_names(value: Any) -> list[str]:
    """`refine` (a comma-separated string or a list) as names, with the object always first."""
    if value is None:
        return ["object", "probe"]
    names = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(name, str) for name in names):
        raise UsageError(f"--refine must be comma-separated names (a config list of strings), got {value!r}")
    if not names or not all(name.strip() for name in names):
        raise UsageError(
            f"--refine must name the parts to refine besides the object, comma-separated (e.g. probe,positions), "
            f"with no empty name, got {value!r}"
        )
    names = [name.strip() for name in names]
    return ["object", *[name for name in names if name not in ("object", "sample")]]


def _check_settings(settings: dict[str, Any]) -> None:
    engine = settings["engine"]
    if engine not in _ENGINE_NAMES:
        raise UsageError(f"unknown engine {engine!r} (choose from {', '.join(_ENGINE_NAMES)})")
    if settings["iterations"] is None and engine != _AUTO:
        settings["iterations"] = _DEFAULT_ITERATIONS
    if settings["iterations"] is not None:
        _check_count("iterations", settings["iterations"], 0, MAX_ITERATIONS, _ITERATIONS_WHY)
    if settings["batched"] and engine == _AUTO:
        raise UsageError("--batched needs a named PIE engine (--engine epie, rpie or mpie); auto sets its own")
    if settings["batched"] and not _is_pie(engine):
        raise UsageError(f"--batched applies to the PIE engines (epie, rpie, mpie) only, not {engine!r}")
    loss = settings["loss"]
    if loss is not None:
        if loss not in _LOSSES:
            raise UsageError(f"unknown loss {loss!r} (choose from {', '.join(_LOSSES)})")
        if _is_pie(engine):
            raise UsageError(f"--loss applies to the gradient engines (adam, sgd) only, not {engine!r}")
        if engine not in _OPTIMIZERS and loss != "amplitude":
            raise UsageError(f"{engine} minimises the amplitude loss only, got --loss {loss!r}")
    rate = settings["learning_rate"]
    if rate is not None:
        if engine not in _OPTIMIZERS:
            raise UsageError(f"--learning-rate applies to the gradient engines (adam, sgd) only, not {engine!r}")
        # No upper bound: too large a rate is stopped at run time (exit 3 nonfinite, 4 diverged).
        _check_number("learning_rate", rate, float("inf"), "")
    names = _refine_names(settings["refine"])
    unsupported = [name for name in names if name not in _PIE_REFINABLE]
    if _is_pie(engine) and unsupported:
        raise UsageError(
            f"--refine {unsupported[0]!r} is not supported by {engine!r}: PIE engines refine the object and "
            "probe only (use adam, sgd, lm, gauss-newton or an optx engine)"
        )
    settings["refine"] = names
    noise = settings["noise_std"]
    if noise is not None:
        if not settings["uncertainty"]:
            raise UsageError("--noise-std needs --uncertainty")
        _check_number("noise_std", noise, _MAX_NOISE_STD, "the amplitude noise of 1e12 counts in a pixel")
    if settings["geometry"] and settings["near_field"]:
        raise UsageError("--geometry applies to far-field data only (it refines the FFT far field's distance)")
    if settings["geometry"] and "distance" in names:
        raise UsageError("--geometry refines the distance itself: leave distance out of --refine")
    modes = settings["modes"]
    _check_count("modes", modes, 1, _MAX_MODES, _MODES_WHY)
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise UsageError(f"--seed must be an integer from 0 to {_MAX_SEED} (2**32 - 1), got {seed!r}")
    _check_near_field(settings)


_ITERATIONS_WHY = (
    "each is a full pass over the frames; the default schedule converges within a few hundred and "
    f"{MAX_ITERATIONS} passes take days"
)
_MODES_WHY = "each mode is a whole probe to refine; a few carry all but a percent of a real beam's power"


def _option(name: str) -> str:
    """A setting's flag, with its config key where the two differ (`--learning-rate`, `learning_rate`)."""
    flag = "--" + name.replace("_", "-")
    return flag if "_" not in name else f"{flag} (config key {name!r})"


def _check_count(name: str, value: Any, low: int, high: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{_option(name)} must be an integer from {low} to {high} ({why}), got {value!r}")


def _check_number(name: str, value: Any, high: float, why: str, unit: str = "") -> None:
    """A finite number in (0, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (np.isfinite(value) and 0 < value):
        raise UsageError(f"{_option(name)} must be a finite number{' of ' + unit if unit else ''} > 0, got {value!r}")
    if value > high:
        raise UsageError(f"{_option(name)} must be at most {high:g}{' ' + unit if unit else ''} ({why}), got {value!r}")


def _check_near_field(settings: dict[str, Any]) -> None:
    for name in ("distance", "focus_to_sample"):
        value = settings[name]
        if value is None:
            continue
        if not settings["near_field"]:
            raise UsageError(f"--{name.replace('_', '-')} needs --near-field")
        _check_number(name, value, _MAX_DISTANCE, "a distance over 100 m is millimetres, not metres", unit="m")
    if settings["propagator"] is not None:
        if not settings["near_field"]:
            raise UsageError("--propagator needs --near-field")
        if settings["propagator"] not in _PROPAGATORS:
            raise UsageError(f"unknown propagator {settings['propagator']!r} (choose from {', '.join(_PROPAGATORS)})")
    if settings["near_field"] and settings["propagator"] is None:
        settings["propagator"] = "fresnel"


# ---- engines -----------------------------------------------------------------------------


def _fields_of(cls: type) -> set[str]:
    return {name for name in cls.__dataclass_fields__ if not name.startswith("_")}


def _construct(cls: type, params: dict[str, Any]) -> jinv.AbstractEngine:
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise UsageError(f"bad {cls.__name__} parameters: {error}") from error


def _check_params(cls: type, params: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} parameter {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, value in params.items():
        kind = _PARAM_TYPES.get(name) or (fields[name].type if name in fields else None)
        default = getattr(fields.get(name), "default", None)
        _check_param(cls.__name__, name, value, kind, default)


# [engine] parameters whose type the engine's annotation does not give (or gives as a union).
_PARAM_TYPES: dict[str, Any] = {
    "batch_size": int,
    "sweep": bool,
    "learning_rates": dict,
    "optimizer": str,
    "learning_rate": float,
    "loss": str,
    "momentum": float,
    "rtol": float,
    "atol": float,
    "eps": float,
    "cg_max_steps": int,
    "solver": str,
}


def _check_param(engine: str, name: str, value: Any, kind: Any, default: Any) -> None:
    """An [engine] value of the type its engine expects; integer counts within `MAX_ITERATIONS`."""
    where = f"[engine] parameter {name!r} of {engine}"
    if kind is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, got {value!r} ({type(value).__name__})")
    elif kind is int:
        low = -1 if isinstance(default, int) and default < 0 else 0
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_ITERATIONS:
            raise UsageError(f"{where} must be an integer from {low} to {MAX_ITERATIONS}, got {value!r}")
    elif kind is float:
        if value is None and name == "momentum":
            return
        if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            raise UsageError(f"{where} must be a finite number, got {value!r} ({type(value).__name__})")
    elif kind is str:
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string, got {value!r} ({type(value).__name__})")
    elif kind is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{where} must be a table of name = factor, got {value!r} ({type(value).__name__})")
        for key, factor in value.items():
            if (
                isinstance(factor, bool)
                or not isinstance(factor, int | float)
                or not (np.isfinite(factor) and factor > 0)
            ):
                raise UsageError(f"{where}: factor {key!r} must be a finite number > 0, got {factor!r}")


def _make_engine(
    name: str, params: dict[str, Any], settings: dict[str, Any], microscope
) -> tuple[jinv.AbstractEngine | tuple[jinv.Stage, ...], dict[str, Any]]:
    """The engine `name` with `params` (from the config's [engine] table or a result file),
    and what the result file must record beyond `save_solution`'s engine parameters.
    `auto` gives `janssen.invert.default_schedule`'s stages instead of one engine."""
    if name == _AUTO:
        if params:
            raise UsageError(f"the default schedule takes no [engine] parameters, got {sorted(params)}; name an engine")
        return jinv.default_schedule(microscope), {}
    if _is_pie(name):
        cls = _PIE_ENGINES[name]
        _check_params(cls, params, _fields_of(cls))
        params = dict(params)
        params.setdefault("mode", "batched" if settings["batched"] else "sequential")
        return _construct(cls, params), {}
    if name in _LEAST_SQUARES:
        _check_params(jinv.GaussNewton, params, _fields_of(jinv.GaussNewton))
        return _construct(jinv.GaussNewton, {**_LEAST_SQUARES[name], **params}), {}
    if name in _OPTIMISTIX:
        allowed = {"rtol", "atol", "cg_max_steps", "eps", "solver"}
        _check_params(jinv.OptimistixLeastSquares, params, allowed)
        params = {key: value for key, value in params.items() if key != "solver"}
        try:
            engine = jinv.optimistix_engine(_OPTIMISTIX[name], **params)
        except (TypeError, ValueError) as error:
            raise UsageError(f"bad {name} parameters: {error}") from error
        return engine, {"solver": _OPTIMISTIX[name], **params}
    return _gradient_engine(name, params, settings, microscope)


def _gradient_engine(
    name: str, params: dict[str, Any], settings: dict[str, Any], microscope
) -> tuple[jinv.Gradient, dict[str, Any]]:
    # An optax optimizer is not storable as a parameter: the result file records its name
    # and rate (and the loss and part factors), from which `--resume` rebuilds it.
    allowed = {"batch_size", "sweep", "learning_rates", "optimizer", "learning_rate", "loss"}
    _check_params(jinv.Gradient, params, allowed)
    params = dict(params)
    optimizer = params.pop("optimizer", name)
    rate = params.pop("learning_rate", settings["learning_rate"])
    rate = _DEFAULT_LEARNING_RATES[optimizer] if rate is None else float(rate)
    loss = params.pop("loss", settings["loss"]) or "amplitude"
    if optimizer not in _OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r} (choose from {', '.join(sorted(_OPTIMIZERS))})")
    if not isinstance(params.get("learning_rates", {}), dict):
        raise UsageError(f"learning_rates must be a table of name = factor, got {params['learning_rates']!r}")
    rates = params.pop("learning_rates", None)
    if rates is None:  # a fresh start: per-part factors from the parts' scales
        rates = _default_rate_factors(optimizer, microscope, settings["refine_paths"])
    rates = {str(key): float(value) for key, value in rates.items()}
    engine = _construct(
        jinv.Gradient, {"optimizer": _OPTIMIZERS[optimizer](rate), "loss": loss, "learning_rates": rates, **params}
    )
    return engine, {"optimizer": optimizer, "learning_rate": rate, "loss": loss, "learning_rates": rates}


def _default_rate_factors(optimizer: str, microscope, paths: list[str]) -> dict[str, float]:
    """A factor per refined part so that each moves by about the learning rate times its typical size.

    The object (amplitude ~1) keeps factor 1; positions move on the scale of an object
    pixel; any other part on the scale of its RMS magnitude. For SGD the step is also
    proportional to the gradient, which scales as 1 / size: the factor is squared.
    """
    factors = {}
    for path in paths:
        if path == "sample.sample":
            continue
        if path == "positions":
            scale = float(np.mean(np.asarray(microscope.sample.dx)))
        else:
            leaf = np.asarray(operator.attrgetter(path)(microscope))
            scale = float(np.sqrt(np.mean(np.abs(leaf) ** 2)))
        if not (np.isfinite(scale) and scale > 0):
            scale = 1.0
        factors[path] = scale**2 if optimizer == "sgd" else scale
    return factors


def _trainable_names(settings: dict[str, Any], microscope) -> list[str]:
    """`refine` as `reconstruct`'s trainable names; a mixed-state probe's weights go with its modes."""
    names = list(settings["refine"])
    if "probe" in names and isinstance(microscope.probe, MixedStateProbe) and not _is_pie(settings["engine"]):
        names += ["probe.weights"]
    return names


# ---- inputs ------------------------------------------------------------------------------


def _load_data(path: pathlib.Path) -> tuple[jio.MicroscopeData, Any]:
    """The data and, for the Siemens star, the probe that comes with it."""
    if path.is_dir():
        raise UsageError(f"data file {str(path)!r} is a folder: expected a CXI file or the Siemens-star .npz.bz2")
    if not path.is_file():
        raise UsageError(f"data file {str(path)!r} does not exist")
    try:
        if path.name.endswith((".npz.bz2", ".npz")):
            measured = jio.load_siemens_star(path)
            data, probe = measured.data, measured.probe
        else:
            data, probe = jio.read_cxi(path), None
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise UsageError(f"cannot read data file {str(path)!r}: {error}") from error
    if not np.any(np.asarray(data.intensities)):
        raise UsageError(
            f"data file {str(path)!r}: the frames ('/entry_1/data_1/data') must hold counts, got zero in every pixel "
            "of every frame"
        )
    return data, probe


def _mean_counts(data: jio.MicroscopeData) -> float:
    return float(np.mean(np.sum(np.asarray(data.intensities), axis=(1, 2))))


def _load_probe(path: pathlib.Path, data: jio.MicroscopeData) -> np.ndarray:
    try:
        probe = np.load(path)
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else " ".join(str(error).split())
        raise UsageError(f"cannot read --probe {str(path)!r}: expected a NumPy .npy file, {reason}") from error
    if not isinstance(probe, np.ndarray) or probe.dtype.kind not in "iufc":
        kind = type(probe).__name__ if not isinstance(probe, np.ndarray) else f"dtype {probe.dtype}"
        raise UsageError(f"--probe {str(path)!r} must hold complex or real numbers, got {kind}")
    if probe.shape[-2:] != tuple(data.frame_shape) or probe.ndim not in (2, 3):
        raise UsageError(
            f"probe {str(path)!r} must be (y, x) or (modes, y, x) with frames {data.frame_shape}, got {probe.shape}"
        )
    if not np.all(np.isfinite(probe)):
        raise UsageError(
            f"--probe {str(path)!r} must be finite, got {int(np.sum(~np.isfinite(probe)))} NaN or infinite values"
        )
    if not np.any(probe):
        raise UsageError(f"--probe {str(path)!r} must have some power, got a probe that is zero everywhere")
    # Scale to the measured counts: with a unit object the model then predicts the data's power.
    return probe * np.sqrt(_mean_counts(data) / np.sum(np.abs(probe) ** 2))


def _extra_modes(fields: np.ndarray, modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal modes and powers: `fields`' modes plus new ones, the total power unchanged.

    `janssen.optics.extend_modes`: the new modes are the strongest mode times low-order
    polynomials of the position, each with `_EXTRA_MODE_POWER` of the total power.
    """
    if fields.shape[0] > modes:
        raise UsageError(f"the starting probe has {fields.shape[0]} modes, more than --modes {modes}")
    basis, weights = extend_modes(fields, modes, share=_EXTRA_MODE_POWER)
    return np.asarray(basis), np.asarray(weights)


def _probe_module(fields: Any, modes: int, wavelength: Any, dx: Any):
    """A `Probe` of `fields`, or for `modes > 1` a `MixedStateProbe` with extra modes added."""
    fields = np.asarray(fields)
    fields = fields[None] if fields.ndim == 2 else fields
    if modes == 1:
        return Probe(fields, wavelength, dx)
    basis, weights = _extra_modes(fields, modes)
    dtype = jnp.result_type(fields.dtype, jnp.complex64)
    mode_set = CoherentModeSet(jnp.asarray(basis, dtype=dtype), jnp.asarray(weights), wavelength, dx)
    return MixedStateProbe(mode_set)


def _near_field_geometry(settings: dict[str, Any], data: jio.MicroscopeData) -> dict[str, Any]:
    distance = float(data.distance) if settings["distance"] is None else float(settings["distance"])
    return {"distance": distance, "focus_to_sample": settings["focus_to_sample"], "propagator": settings["propagator"]}


def _near_field_pixel(geometry: dict[str, Any], data: jio.MicroscopeData) -> Any:
    """The sample pixel: the detector pixel, over the cone-beam magnification (z1 + z2) / z1."""
    z1, z2 = geometry["focus_to_sample"], geometry["distance"]
    magnification = 1.0 if z1 is None else (z1 + z2) / z1
    return data.camera_pixel_size / magnification


def _near_field_microscope(probe, sample: SampleFunction, positions: Any, geometry: dict[str, Any]):
    return NearFieldMicroscope(
        probe,
        sample,
        positions,
        distance=geometry["distance"],
        propagator=geometry["propagator"],
        focus_to_sample=geometry["focus_to_sample"],
    )


def _start_microscope(settings: dict[str, Any], data: jio.MicroscopeData, bundled: Any):
    if settings["near_field"]:
        return _start_near_field(settings, data)
    # A model probe (from a file or bundled with the data) is centred on the measured
    # far field first: the engines pin the probe's far-field centroid (phase-ramp ambiguity).
    if settings["probe"] is not None:
        fields = jinv.align_probe_to_data(jnp.asarray(_load_probe(pathlib.Path(settings["probe"]), data)), data)
    elif bundled is not None:
        fields = jinv.align_probe_to_data(jnp.asarray(bundled), data)
    else:
        search = jinv.search_probe(data, key=jr.PRNGKey(settings["seed"]))
        # Reported with the summary (an error found after the start must stay a single line).
        settings["probe_guess"] = (
            f"probe guess: sample {'downstream' if search.defocus_sign > 0 else 'upstream'} of the focus, "
            f"illuminated disc {search.diameter_px:.1f} px across (janssen.invert.search_probe)"
        )
        fields = search.fields
    probe = _probe_module(fields, settings["modes"], data.wavelength, data.object_pixel_size)
    padding = _geometry_padding(data) if settings["geometry"] else None
    start = jinv.init_far_field_microscope(data, probe, padding=padding, align=False)  # aligned above
    if start.detector is not None:
        settings["background_note"] = (
            f"detector background: {float(start.detector.background):.3g} counts per pixel, modelled "
            "(janssen.invert.background_start)"
        )
    return start


def _geometry_padding(data: jio.MicroscopeData) -> int:
    """Object margin for `--geometry`: room for the scan to grow by refine_geometry's first search and a few pixels."""
    pixels = np.asarray(jinv.positions_in_object_frame(data)) / np.asarray(data.object_pixel_size)
    radius = float(np.max(np.linalg.norm(pixels, axis=1)))
    return _default_padding(tuple(data.frame_shape)) + int(np.ceil(SCALE_RANGE * radius)) + 4


def _start_near_field(settings: dict[str, Any], data: jio.MicroscopeData) -> NearFieldMicroscope:
    geometry = _near_field_geometry(settings, data)
    options = {name: geometry[name] for name in ("distance", "focus_to_sample", "propagator")}
    # Default probe: the mean pattern's amplitude propagated back to the sample plane
    # (`init_near_field_microscope`; a flat probe stalled at object error 0.57-1.0 where this
    # start reaches 0.06). `--probe` replaces it; `--modes` adds modes to either.
    start = jinv.init_near_field_microscope(data, **options)
    if settings["probe"] is None and settings["modes"] == 1:
        return start
    fields = start.probe.fields() if settings["probe"] is None else _load_probe(pathlib.Path(settings["probe"]), data)
    probe = _probe_module(fields, settings["modes"], data.wavelength, start.sample.dx)
    return jinv.init_near_field_microscope(data, probe=probe, **options)


# ---- result files and resuming -------------------------------------------------------------


def _cli_record(settings: dict[str, Any], data: jio.MicroscopeData, start) -> dict[str, Any]:
    """How the starting microscope was built: what `--resume` needs to rebuild its structure."""
    record = {"engine": settings["engine"], "modes": settings["modes"], "near_field": bool(settings["near_field"])}
    if settings["near_field"]:
        record.update(_near_field_geometry(settings, data))
    detector = getattr(start, "detector", None)
    if detector is not None:  # the shapes of its terms (`None`: not modelled)
        record["detector"] = {
            name: None if getattr(detector, name) is None else list(np.shape(getattr(detector, name)))
            for name in ("background", "frame_scale")
        }
    return record


def _detector_like(record: dict[str, Any]) -> DetectorResponse:
    """A detector of the recorded shapes, for a template (the checkpoint replaces its values)."""
    shapes = {name: record.get(name) for name in ("background", "frame_scale")}
    return DetectorResponse(**{name: None if shape is None else np.ones(shape) for name, shape in shapes.items()})


def _save(out: pathlib.Path, solution: jinv.Solution, data, engine, records, **extra: Any) -> None:
    """`save_solution` with the command's records in the same atomic write; signals wait for it.

    `records` (the engine record and the `cli` record, or `None`) are what `--resume`
    needs beyond `save_solution`'s own attributes.
    """
    attrs = None if records is None else {"engine_parameters": records[0], "cli": records[1]}
    try:
        with _saving():
            jinv.save_solution(out, solution, data, engine, attrs=attrs, **extra)
    except OSError as error:
        raise WriteError(str(error)) from error


def _read_saved(path: pathlib.Path) -> dict[str, Any]:
    try:
        saved = jio.read_result(path)
    except ValueError as error:
        raise UsageError(f"--resume: {error}") from error
    cli = saved["attrs"].get("cli")
    # Files written without the CLI's record: a far-field run with a plain probe.
    saved["cli"] = json.loads(cli) if isinstance(cli, str) else {"modes": 1, "near_field": False}
    return saved


def _engine_name(saved: dict[str, Any], path: pathlib.Path) -> str:
    attrs = saved["attrs"]
    names = {cls.__name__: name for name, cls in _PIE_ENGINES.items()} | {"GaussNewton": _GAUSS_NEWTON}
    if attrs.get("engine") in names:
        return names[attrs["engine"]]
    solver = attrs.get("engine_parameters", {}).get("solver")
    if attrs.get("engine") == "OptimistixLeastSquares" and solver in _OPTIMISTIX.values():
        return {value: key for key, value in _OPTIMISTIX.items()}[solver]
    optimizer = attrs.get("engine_parameters", {}).get("optimizer")
    if attrs.get("engine") == "Gradient" and optimizer in _OPTIMIZERS:
        return optimizer
    raise UsageError(f"{str(path)!r} was made by engine {attrs.get('engine')!r}, which the CLI cannot resume")


def _resumed(path: pathlib.Path, saved: dict[str, Any], data: jio.MicroscopeData, settings: dict[str, Any]):
    """The engine and the solution saved in `path`, rebuilt on a template of the same structure."""
    cli = saved["cli"]
    name = _engine_name(saved, path)
    settings = {**settings, "engine": name, "modes": int(cli.get("modes", 1))}
    dx = saved["object_pixel_size"]
    # The saved probe already holds all its modes: the template keeps their number.
    modes = saved["probe"].shape[0] if settings["modes"] > 1 else 1
    probe = _probe_module(saved["probe"], modes, saved["wavelength"], dx)
    sample = SampleFunction(saved["object"], dx)
    # Only the template's structure matters (the checkpoint replaces every leaf): centred
    # positions pass the construction checks even where refined ones have left the object.
    positions = np.zeros_like(saved["positions"])
    try:
        if cli.get("near_field"):
            microscope = _near_field_microscope(probe, sample, positions, cli)
        else:
            propagator = None
            if cli.get("scaled_far_field"):
                propagator = ScaledFraunhofer(saved["distance"], data.camera_pixel_size, tuple(data.frame_shape))
            microscope = FarFieldMicroscope(probe, sample, positions, propagator)
        if cli.get("detector"):
            microscope = with_detector(microscope, _detector_like(cli["detector"]))
        engine, record = _make_engine(name, saved["attrs"].get("engine_parameters", {}), settings, microscope)
        trainable = saved["attrs"].get("trainable", '["object", "probe"]')
        trainable = json.loads(trainable) if isinstance(trainable, str) else list(trainable)
        like = jinv.reconstruct(microscope, data, engine, trainable=trainable, num_iterations=0)
        return engine, jinv.load_solution(path, like), (record, {**cli, "engine": name})
    except ValueError as error:
        raise UsageError(f"cannot resume from {str(path)!r}: {error}") from error


# ---- outputs: never overwrite silently, one run per file, signals ----------------------------


def _default_out(data_path: pathlib.Path) -> pathlib.Path:
    """`<DATA's folder>/<DATA's name without its extension>_result.h5`.

    Beside the input, so that inputs of one name in different folders never share a result.
    """
    name = data_path.name
    for suffix in (".npz.bz2", *data_path.suffixes[-1:]):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return data_path.parent / f"{name}_result.h5"


def _figure_paths(out: pathlib.Path) -> list[pathlib.Path]:
    """The figures and the report written beside a result."""
    return [out.parent / f"{out.stem}_{kind}.png" for kind in _FIGURES] + [out.with_suffix(".html")]


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_output(
    out: pathlib.Path, inputs: dict[str, Any], *, overwrite: bool, own: pathlib.Path | None = None
) -> None:
    """Refuse an output that would replace an input, or an existing file without `--overwrite`.

    `inputs`: the files the run reads, by the name of their argument; `own`: a result file
    the run continues (`--resume`), which it may update with its figures.
    """
    folder = out.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write --out {str(out)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write --out {str(out)!r}: folder {str(folder)!r} is not writable")
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder: expected the name of a result file (.h5)")
    for label, path in inputs.items():
        if path is not None and _same_file(out, pathlib.Path(path)):
            raise UsageError(
                f"--out {str(out)!r} is the {label} {str(path)!r}: a result never replaces its input; "
                "choose another --out"
            )
    if overwrite or (own is not None and _same_file(out, own)):
        return
    for path in (out, *_figure_paths(out)):
        if path.exists() or path.is_symlink():
            raise UsageError(
                f"--out: {str(path)!r} already exists; pass --overwrite to replace it (and the result's figures) "
                "or choose another --out"
            )


@contextlib.contextmanager
def _output_lock(out: pathlib.Path) -> Iterator[None]:
    """Hold `<out>.lock` while the run writes `out`: a second run on it is refused (`BusyError`).

    The lock is an advisory `flock` on that file, which the system releases when its holder
    dies: a lock file left by a killed run is taken over. It names its holder for the
    refusal message and is removed at the end.
    """
    lock = out.with_name(out.name + ".lock")
    descriptor = _acquire(lock, out)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(descriptor)


def _acquire(lock: pathlib.Path, out: pathlib.Path) -> int:
    """A descriptor of `lock` holding its exclusive `flock`."""
    while True:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as error:
            raise UsageError(f"cannot create the lock file {str(lock)!r}: {error.strerror or error}") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise BusyError(
                f"{str(out)!r} is being written by another janssen run ({holder}; lock file {str(lock)!r}): "
                "wait for it to end or choose another --out"
            ) from None
        try:  # the holder may have removed the file between our open and our lock: lock the new one
            if os.stat(lock, follow_symlinks=False).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _remove_stale_temporary(out: pathlib.Path) -> None:
    """Remove `<out>.partial`, left by a run killed while writing (the lock says none is running)."""
    partial = temporary_path(out)
    if partial.exists() or partial.is_symlink():
        partial.unlink()
        print(f"janssen: removed {partial}, left by an earlier run that was stopped while saving", file=sys.stderr)


# Signals received while a command runs, and whether a save is in progress (they then wait for it).
_received: list[int] = []
_deferring = [False]


def _on_signal(number: int, frame: Any) -> None:
    _received.append(number)
    if not _deferring[0]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_handled() -> Iterator[None]:
    """For the time of a command: SIGTERM (a scheduler's stop) stops the run as Ctrl-C does."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, _on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _saving() -> Iterator[None]:
    """A save that a signal does not cut short: the signal is acted on once the file is complete."""
    before, _deferring[0] = _deferring[0], True
    try:
        yield
    finally:
        _deferring[0] = before


def _signal_exit() -> int:
    """130 after Ctrl-C (SIGINT), 143 after SIGTERM: the shell's codes."""
    return EXIT_TERMINATED if _received and _received[0] == signal.SIGTERM else EXIT_INTERRUPTED


def _signal_name() -> str:
    return "SIGTERM" if _signal_exit() == EXIT_TERMINATED else "Ctrl-C"


def _kept(kept: dict[str, Any]) -> str:
    if kept.get("iteration") is None:
        return "no result file was written"
    return f"{kept['out']} holds the checkpoint of iteration {kept['iteration']}"


def _command(name: str, body: Callable[[dict[str, Any]], int]) -> int:
    """Run `body(kept)` with signals handled; every failure is one line on stderr and an exit code."""
    kept: dict[str, Any] = {"iteration": None, "out": None}
    with _signals_handled():
        try:
            return body(kept)
        except BusyError as error:
            return _error(name, error, EXIT_BUSY)
        except WriteError as error:
            return _error(name, f"{error}; {_kept(kept)}", EXIT_WRITE_FAILED)
        except (UsageError, OSError, ValueError) as error:
            return _error(name, error)
        except KeyboardInterrupt:
            print(f"janssen {name}: interrupted ({_signal_name()}); {_kept(kept)}", file=sys.stderr)
            return _signal_exit()


def _error(command: str, error: BaseException | str, code: int = EXIT_REFUSED) -> int:
    print(f"janssen {command}: error: {' '.join(str(error).split())}", file=sys.stderr)
    return code


# ---- running -----------------------------------------------------------------------------


def _figures(
    solution: jinv.Solution,
    out: pathlib.Path,
    verdict: jinv.Verdict | None = None,
    data: jio.MicroscopeData | None = None,
    truth: Any = None,
    data_path: pathlib.Path | None = None,
) -> list[pathlib.Path]:
    """The figures and the HTML report beside the result (`out`'s stem, `_FIGURES` and `.html`)."""
    try:
        from janssen.plots import ReportError, save_figures, write_report
    except ImportError:  # pragma: no cover - matplotlib is optional
        return []
    try:
        paths = list(save_figures(solution, out.parent, out.stem, verdict=verdict, data=data, truth=truth).values())
        try:
            paths.append(write_report(out, data_path=data_path, data=None if data_path else data, truth=truth))
        except (ReportError, OSError) as error:  # a view of the saved result: never fail the run for it
            print(f"janssen: warning: no report: {' '.join(str(error).split())}", file=sys.stderr)
        return paths
    except ImportError:  # pragma: no cover
        print("janssen: matplotlib is not installed; no figures written", file=sys.stderr)
        return []
    except KeyboardInterrupt:
        print("janssen: figures not written (interrupted)", file=sys.stderr)
        return []


def _run(
    microscope_or_solution, data, engine, settings, out: pathlib.Path, kept, *, meter, trainable=None, records=None
) -> tuple[jinv.Solution, float, jinv.AbstractEngine]:
    """Run one engine, or a schedule's stages (a tuple), checkpointing into `out`; the solution,
    the seconds it took and the engine that made the solution (a schedule's last stage)."""

    def checkpoint(solution: jinv.Solution, stage_engine: jinv.AbstractEngine = engine) -> None:
        signals = len(_received)
        _save(out, solution, data, stage_engine, records)
        kept.update(iteration=solution.iteration, out=out)
        if len(_received) > signals and solution.result == jinv.RESULTS.running:
            raise KeyboardInterrupt  # the signal that came during the save stops the run now

    started = time.perf_counter()
    key = jr.PRNGKey(settings["seed"])
    if isinstance(engine, tuple):
        run = jinv.run_schedule(
            microscope_or_solution,
            data,
            engine,
            max_iterations=settings["iterations"],
            key=key,
            progress_meter=meter,
            checkpoint=checkpoint,
            checkpoint_every=_CHECKPOINT_EVERY,
        )
        kept["stages"] = run.stages
        stages = ", ".join(f"{name} {count} ({result.replace('_', ' ')})" for name, count, result in run.stages)
        print(f"schedule: {stages}", file=sys.stderr)
        return run.solution, time.perf_counter() - started, run.engine
    solution = jinv.reconstruct(
        microscope_or_solution,
        data,
        engine,
        trainable=trainable,
        num_iterations=settings["iterations"],
        key=key,
        progress_meter=meter,
        checkpoint=checkpoint,
        checkpoint_every=_CHECKPOINT_EVERY,
    )
    return solution, time.perf_counter() - started, engine


def _output(args: argparse.Namespace, settings: dict[str, Any]) -> pathlib.Path:
    """The result file, checked before anything is loaded (see `_check_output`)."""
    if args.resume is not None:
        out = args.out or args.resume
    else:
        out = pathlib.Path(settings["out"]) if settings["out"] else _default_out(args.data)
    inputs = {"data file": args.data, "config": args.config, "probe": settings["probe"]}
    _check_output(out, inputs, overwrite=args.overwrite, own=args.resume)
    return out


def _prepare(args: argparse.Namespace, settings: dict[str, Any], params: dict[str, Any]):
    """The data, engine, starting point, trainable names and file records of a run."""
    data, bundled = _load_data(args.data)
    if settings["modes"] > data.num_positions:
        raise UsageError(
            f"--modes {settings['modes']} exceeds the {data.num_positions} frames of {str(args.data)!r}: each mode "
            "has as many unknowns as a frame has pixels, so the data cannot support more modes than frames"
        )
    try:  # unit sanity before anything large is allocated (near field: the sample pixel, not the far-field one)
        near_pixel = _near_field_pixel(_near_field_geometry(settings, data), data) if settings["near_field"] else None
        grid = jio.check_geometry(data, object_pixel_size=near_pixel)
    except jio.GeometryError as error:
        raise UsageError(f"data file {str(args.data)!r}: {error}") from error
    frame = max(data.frame_shape)
    if grid.median_step_px > frame:
        raise UsageError(
            f"data file {str(args.data)!r}: neighbouring scan positions (the translations, "
            "'/entry_1/sample_1/geometry_1/translation' in a CXI file) are "
            f"{grid.median_step_px:.3g} object pixels apart (median), expected less than the {frame}-pixel frame so "
            "that neighbouring frames overlap: translations not in metres (mm?), or a wrong distance, wavelength or "
            "pixel size"
        )
    print(_data_line(data, grid, settings), file=sys.stderr, flush=True)
    if settings["near_field"] and bundled is not None:
        raise UsageError("--near-field needs a CXI file: the Siemens-star data are far field")
    if args.resume is not None:
        if settings["geometry"]:
            raise UsageError("--geometry cannot be combined with --resume (the saved run already has its geometry)")
        engine, start, records = _resumed(args.resume, _read_saved(args.resume), data, settings)
        if settings["iterations"] is None:  # the saved run's engine goes on for the usual count
            settings["iterations"] = _DEFAULT_ITERATIONS
        return data, engine, start, None, records
    start = _start_microscope(settings, data, bundled)
    trainable = _trainable_names(settings, start)
    try:
        paths = selected_paths(start, jinv.trainable_spec(start, trainable))
    except ValueError as error:
        raise UsageError(f"--refine: {error}") from error
    engine, record = _make_engine(settings["engine"], params, {**settings, "refine_paths": paths}, start)
    cli = {**_cli_record(settings, data, start), "data": str(args.data.resolve())}  # `janssen report` reads it back
    return data, engine, start, trainable, (record, cli)


def _data_line(data: jio.MicroscopeData, grid: jio.ObjectGrid, settings: dict[str, Any]) -> str:
    """The first line a run prints, as soon as the data are read: frames, geometry, memory."""
    height, width = data.frame_shape
    frames_mb = data.num_positions * height * width * np.dtype(data.intensities.dtype).itemsize / 1e6
    field = "near field" if settings["near_field"] else "far field"
    pixel = " x ".join(f"{size * 1e9:.3g}" for size in grid.pixel_size)
    return (
        f"data: {data.num_positions} frames of {height} x {width} ({frames_mb:.0f} MB), {field}, wavelength "
        f"{float(data.wavelength) * 1e9:.4g} nm, distance {float(data.distance):.4g} m; object grid "
        f"{grid.shape[0]} x {grid.shape[1]} of {pixel} nm pixels ({grid.nbytes / 1e6:.1f} MB), "
        f"median step {grid.median_step_px:.3g} px"
    )


def run_reconstruct(args: argparse.Namespace) -> int:
    """Load, reconstruct, save and summarise; the exit code says how the run ended (`EXIT_*`).

    Bad input gives one line on stderr and exit 2, before anything is written.
    """

    def body(kept: dict[str, Any]) -> int:
        settings, params = _settings(args)
        out = _output(args, settings)
        with _output_lock(out):
            _remove_stale_temporary(out)
            return _reconstruct(args, settings, params, out, kept)

    return _command("reconstruct", body)


def _reconstruct(args, settings: dict[str, Any], params: dict[str, Any], out: pathlib.Path, kept) -> int:
    data, engine, start, trainable, records = _prepare(args, settings, params)
    first = start.iteration if isinstance(start, jinv.Solution) else 0
    wanted = settings["iterations"]
    if wanted is None:  # the default schedule: the sum of its stages' caps
        wanted = sum(stage.max_iterations for stage in engine)
    planned = engine if isinstance(engine, tuple) else None
    interrupted = False
    if settings["geometry"]:
        start, interrupted = _refine_geometry(start, data, settings)
        if interrupted:
            # Keep what the geometry stage reached: a result file with no engine iterations.
            settings = {**settings, "iterations": 0}
    solution, seconds, engine = _run(
        start, data, engine, settings, out, kept, meter=jinv.TextProgressMeter(), trainable=trainable, records=records
    )
    interrupted = interrupted or solution.result == jinv.RESULTS.interrupted or bool(_received)
    verdict, figures = None, []
    # After SIGTERM the scheduler's kill follows, and a second Ctrl-C (or one during the final
    # save) asks to end now: no verdict, no figures.
    stopped_by_signal = solution.result == jinv.RESULTS.interrupted
    hurry = _signal_exit() == EXIT_TERMINATED or len(_received) > int(stopped_by_signal)
    if not (_received and hurry):
        verdict = _verdict(solution, data)
        if settings["uncertainty"] and not interrupted:
            _write_uncertainty(solution, data, engine, settings, out, records, verdict)
        elif verdict is not None:
            _save_verdict(solution, data, engine, out, records, verdict)
        figures = _figures(solution, out, verdict, data, data_path=args.data)
    for note in ("probe_guess", "background_note"):
        if note in settings:
            print(settings[note])
    total = sum(count for _, count, _ in kept["stages"]) if kept.get("stages") else None
    print(_summary(solution, seconds, out, figures, verdict, iterations=total))
    if interrupted:
        note, remaining = "", max(wanted - (solution.iteration - first), 0)
        if planned is not None and kept.get("stages"):
            # `--resume` continues the interrupted stage's engine, for what that stage had left.
            stages = kept["stages"]
            left = planned[len(stages) - 1].max_iterations - stages[-1][1]
            remaining = max(min(left, wanted - sum(count for _, count, _ in stages)), 0)
            note = f" (the {stages[-1][0]} stage; later stages of the schedule are not run by --resume)"
        if remaining == 0 or not (stopped_by_signal or settings["iterations"] == 0):
            print(f"interrupted ({_signal_name()}) after the run had ended: {out} holds its result")
            return _signal_exit()
        hint = _resume_command(args, settings, out, remaining)
        print(f"interrupted ({_signal_name()}): checkpoint saved; continue with `{hint}`{note}")
        return _signal_exit()
    return _stopped("reconstruct", solution, out)


def _stopped(command: str, solution: jinv.Solution, out: pathlib.Path) -> int:
    """The exit code of a run that ended on its own; for an abnormal end, the reason on stderr."""
    from janssen.invert._checkpoint import result_name

    name = result_name(solution.result)
    if name not in _STOP_CODES:
        return EXIT_OK
    reasons = {
        "nonfinite": "a NaN or inf appeared in the loss or the refined parameters; lower the step sizes "
        "(--learning-rate, the [engine] steps) or check the data for bad pixels",
        "diverged": f"the loss rose above {DIVERGENCE_FACTOR:g} times its lowest value; lower the step sizes "
        "(--learning-rate, the [engine] steps)",
        "positions_off_object": "a refined scan position moved a probe window off the object; lower the positions' "
        "learning rate",
    }
    kept = "the start" if solution.iteration == 0 else f"iteration {solution.iteration}"
    which = "the last state with every window inside" if name == "positions_off_object" else "the lowest loss"
    print(
        f"janssen {command}: stopped ({name.replace('_', ' ')}): {reasons[name]}. "
        f"Kept the state with {which}, {kept}, in {out}",
        file=sys.stderr,
    )
    return _STOP_CODES[name]


def _resume_command(args: argparse.Namespace, settings: dict[str, Any], out: pathlib.Path, remaining: int) -> str:
    """The command that continues this run where it stopped, for the iterations it had left."""
    words = ["janssen"]
    if getattr(args, "compile_cache", None):
        words += ["--compile-cache", args.compile_cache]
    words += ["reconstruct", str(args.data), "--resume", str(out), "--iterations", str(remaining)]
    if settings["seed"]:
        words += ["--seed", str(settings["seed"])]
    if settings["uncertainty"]:
        words += ["--uncertainty"] + (
            [] if settings["noise_std"] is None else ["--noise-std", str(settings["noise_std"])]
        )
    return shlex.join(words)


def _refine_geometry(start, data: jio.MicroscopeData, settings: dict[str, Any]):
    """`refine_geometry` on the start (progress on stderr); `(microscope, interrupted)`."""
    from janssen.invert._checkpoint import result_name

    if not (isinstance(start, FarFieldMicroscope) and start.propagator is None):
        raise UsageError("--geometry needs the FFT far field (it refines the distance through the object pixel)")
    print("janssen: refining the scan geometry (positions and distance) first", file=sys.stderr)
    started = time.perf_counter()
    result = jinv.refine_geometry(
        start, data, key=jr.PRNGKey(settings["seed"]), progress_meter=jinv.TextProgressMeter()
    )
    refined = result.microscope
    ratio = float(np.asarray(start.sample.dx)[0] / np.asarray(refined.sample.dx)[0])
    moved = (np.asarray(refined.positions) - np.asarray(start.positions)) / np.asarray(refined.sample.dx)
    moved -= moved.mean(0)
    print(
        f"geometry: distance x {1 / ratio:.5f} "
        f"(file {float(data.distance):.6g} m -> {float(data.distance) / ratio:.6g} m), "
        f"positions moved {float(np.sqrt(np.mean(np.sum(moved**2, 1)))):.3f} px RMS, "
        f"{time.perf_counter() - started:.1f} s ({result_name(result.result)})"
    )
    return refined, result.result == jinv.RESULTS.interrupted


def _write_uncertainty(
    solution, data, engine, settings: dict[str, Any], out: pathlib.Path, records, verdict=None
) -> None:
    """Rewrite the result file with the object's standard-error map (after the last checkpoint)."""
    std = jinv.object_std(solution.microscope, data, noise_std=settings["noise_std"], key=jr.PRNGKey(settings["seed"]))
    _save(out, solution, data, engine, records, object_std=std, verdict=verdict)
    covered = np.asarray(std)[np.isfinite(np.asarray(std))]
    print(f"object_std: median {float(np.median(covered)):.3g} over the {covered.size} covered object pixels")


def _verdict(solution: jinv.Solution, data: jio.MicroscopeData) -> jinv.Verdict | None:
    """The final microscope's verdict; `None` (with a warning) when it cannot be computed.

    Runs after the last checkpoint: whatever goes wrong here, the result file is already saved.
    """
    try:
        return jinv.compute_verdict(solution.microscope, data)
    except (Exception, KeyboardInterrupt) as error:  # a report, not the result: never fail the run for it
        reason = " ".join(str(error).split()) or type(error).__name__
        print(f"janssen: warning: no verdict (R and its Poisson floor): {reason}", file=sys.stderr)
        return None


def _save_verdict(solution, data, engine, out: pathlib.Path, records, verdict: jinv.Verdict) -> None:
    """Rewrite the result file with the verdict (atomically: on failure the saved result stays)."""
    try:
        _save(out, solution, data, engine, records, verdict=verdict)
    except (WriteError, ValueError) as error:
        print(f"janssen: warning: the verdict was not stored in {out}: {' '.join(str(error).split())}", file=sys.stderr)


def _summary(
    solution: jinv.Solution,
    seconds: float,
    out: pathlib.Path,
    figures: list[pathlib.Path],
    verdict: jinv.Verdict | None = None,
    *,
    iterations: int | None = None,
) -> str:
    """What the run did and wrote; `iterations`: the total when it is not the solution's own (a schedule's stages)."""
    from janssen.invert._checkpoint import result_name

    total = solution.iteration if iterations is None else iterations
    lines = [
        f"{total} iterations in total ({result_name(solution.result)}), "
        f"final loss {solution.final_loss:.4g}, {seconds:.1f} s"
        if solution.losses.size
        else f"0 iterations kept ({result_name(solution.result)}: the start), {seconds:.1f} s",
        verdict.verdict_line() if verdict is not None else "R: not computed (see the warning above)",
        f"wrote {out}",
    ]
    lines += [f"wrote {path}" for path in figures]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> int:
    """Simulate the small preset, reconstruct with rPIE and report errors against the truth."""
    out_dir: pathlib.Path = args.out
    out = out_dir / "demo.h5"

    def body(kept: dict[str, Any]) -> int:
        _check_count("iterations", args.iterations, 0, MAX_ITERATIONS, _ITERATIONS_WHY)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {str(out_dir)!r} is a file: expected a folder for the demo's files")
        parent = out_dir
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--out {str(out_dir)!r} lies under the file {str(parent)!r}: expected a folder")
        if out_dir.is_dir():
            _check_output(out, {}, overwrite=args.overwrite)
        out_dir.mkdir(parents=True, exist_ok=True)
        with _output_lock(out):
            _remove_stale_temporary(out)
            return _demo(args, out, kept)

    return _command("demo", body)


def _demo(args: argparse.Namespace, out: pathlib.Path, kept: dict[str, Any]) -> int:
    truth = jio.simulate_preset("small", key=jr.PRNGKey(0))
    data = truth.data
    settings = {"iterations": args.iterations, "seed": 0}
    start = jinv.init_far_field_microscope(data)
    solution, seconds, engine = _run(start, data, jinv.RPIE(), settings, out, kept, meter=jinv.TextProgressMeter())
    if solution.result == jinv.RESULTS.interrupted or _received:
        print(_summary(solution, seconds, out, [], None))
        print(f"interrupted ({_signal_name()}): {_kept(kept)}")
        return _signal_exit()
    verdict = _verdict(solution, data)
    if verdict is not None:
        _save_verdict(solution, data, engine, out, None, verdict)
    figures = _figures(solution, out, verdict, data, truth)
    illumination = jinv.illumination_map(truth.microscope())
    error = jinv.object_error(truth.object, solution.microscope.sample.sample, illumination)
    residual = jinv.data_residual(solution.microscope, data)
    floor = jinv.data_residual(truth.microscope(), data)
    print(_summary(solution, seconds, out, figures, verdict))
    print(f"object error vs ground truth: {error:.4f} (a unit object scores about 0.5)")
    print(f"data residual: {residual:.4f} sqrt(counts); noise floor (ground truth): {floor:.4f}")
    return _stopped("demo", solution, out)
