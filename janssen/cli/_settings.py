"""The settings of `janssen reconstruct`: flags over the config file, checked once into a frozen record."""

import argparse
import dataclasses
import pathlib
import tomllib
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

import janssen.invert as jinv

from ._args import (
    AUTO,
    DEFAULT_ITERATIONS,
    ENGINE_CHOICES,
    LOSSES,
    MAX_ITERATIONS,
    MAX_MODES,
    PIE_ENGINES,
    PROPAGATORS,
)
from ._errors import UsageError

OPTIMIZERS = tuple(sorted(jinv.DEFAULT_LEARNING_RATES))  # the gradient engines, by optimizer
_PIE_REFINABLE = ("object", "sample", "probe")
# Seeds become 32-bit PRNG keys: a larger one would silently repeat a smaller one's run.
MAX_SEED = 2**32 - 1
# Amplitude noise in sqrt(counts): 1e6 would be the noise of 1e12 counts in one pixel.
_MAX_NOISE_STD = 1e6
# Distances over this many metres are millimetres (as `janssen.io.check_geometry` reads them).
_MAX_DISTANCE = 100.0
ITERATIONS_WHY = (
    "each is a full pass over the frames; the default schedule converges within a few hundred and "
    f"{MAX_ITERATIONS} passes take days"
)
_MODES_WHY = "each mode is a whole probe to refine; a few carry all but a percent of a real beam's power"
#: `--stream`'s positions per batch when not given (`janssen.invert.reconstruct_from_file`'s default).
DEFAULT_STREAM_BATCH = 256
# Two batches of frames are held at once (the one refined and the next one read).
_STREAM_BATCH_WHY = "two batches of frames are held in memory at once; 100000 is no longer streaming"
_MAX_STREAM_BATCH = 100_000

# Each config key: its default and the types it must have, with their description in an error message.
_CONFIG_KEYS: dict[str, tuple[Any, tuple[type, ...], str]] = {
    "engine": (AUTO, (str,), "a string"),
    "iterations": (None, (int,), "an integer"),
    "batched": (False, (bool,), "true or false"),
    "seed": (0, (int,), "an integer"),
    "probe": (None, (str,), "a file name (string)"),
    "out": (None, (str,), "a file name (string)"),
    "loss": (None, (str,), "a string"),
    "learning_rate": (None, (int, float), "a number"),
    "refine": (None, (str, list), "a string or a list of strings"),
    "modes": (1, (int,), "an integer"),
    "near_field": (False, (bool,), "true or false"),
    "distance": (None, (int, float), "a number of metres"),
    "focus_to_sample": (None, (int, float), "a number of metres"),
    "propagator": (None, (str,), "a string"),
    "uncertainty": (False, (bool,), "true or false"),
    "noise_std": (None, (int, float), "a number"),
    "geometry": (False, (bool,), "true or false"),
    "stream": (False, (bool,), "true or false"),
    "stream_batch": (None, (int,), "an integer"),
}


@dataclasses.dataclass(frozen=True)
class ReconstructSettings:
    """Everything `janssen reconstruct` was asked to do, checked (`read_settings`).

    The config keys, with flags taking precedence; file names as paths; `refine` as the
    parts to refine, the object first; `engine_parameters` the config's `[engine]` table.
    """

    data: pathlib.Path
    config: pathlib.Path | None = None
    resume: pathlib.Path | None = None
    overwrite: bool = False
    compile_cache: str | None = None
    engine: str = AUTO
    iterations: int | None = None  # None: the default schedule's own caps
    batched: bool = False
    seed: int = 0
    probe: pathlib.Path | None = None
    out: pathlib.Path | None = None
    loss: str | None = None
    learning_rate: float | None = None
    refine: tuple[str, ...] = ("object", "probe")
    modes: int = 1
    near_field: bool = False
    distance: float | None = None
    focus_to_sample: float | None = None
    propagator: str | None = None  # "fresnel" in the near field unless given
    uncertainty: bool = False
    noise_std: float | None = None
    geometry: bool = False
    stream: bool = False
    # Positions per batch with `stream`: DEFAULT_STREAM_BATCH unless given (resuming: the result file's).
    stream_batch: int | None = None
    engine_parameters: Mapping[str, Any] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))


def is_pie(engine: str) -> bool:
    """PIE engines, and the default schedule, which runs them."""
    return engine in PIE_ENGINES or engine == AUTO


def read_settings(args: argparse.Namespace) -> ReconstructSettings:
    """The settings of `args` (flags) over those of its `--config`; `UsageError` for any bad value."""
    config, params = read_config(args.config)
    values = {name: default for name, (default, _, _) in _CONFIG_KEYS.items()} | config
    for name in _CONFIG_KEYS:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    _check(values, resuming=getattr(args, "resume", None) is not None)
    for name in ("probe", "out"):
        values[name] = pathlib.Path(values[name]) if values[name] else None
    for name in ("learning_rate", "distance", "focus_to_sample", "noise_std"):
        values[name] = None if values[name] is None else float(values[name])
    return ReconstructSettings(
        data=args.data,
        config=args.config,
        resume=getattr(args, "resume", None),
        overwrite=bool(getattr(args, "overwrite", False)),
        compile_cache=getattr(args, "compile_cache", None),
        engine_parameters=types.MappingProxyType(params),
        **values,
    )


def read_config(path: pathlib.Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Top-level settings and engine parameters from a TOML file, each of its key's type."""
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
    unknown = sorted(set(config) - set(_CONFIG_KEYS))
    if unknown:
        raise UsageError(
            f"unknown key {unknown[0]!r} in config {str(path)!r} (allowed: {', '.join(_CONFIG_KEYS)}, [engine])"
        )
    for name, value in config.items():
        _, kinds, expected = _CONFIG_KEYS[name]
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise UsageError(
                f"config {str(path)!r}: key {name!r} must be {expected}, got {value!r} ({type(value).__name__})"
            )
        if expected.startswith("a file name") and not value.strip():
            raise UsageError(f"config {str(path)!r}: key {name!r} must be {expected}, got {value!r}")
    return config, params


def refine_names(value: Any) -> list[str]:
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


def _check(settings: dict[str, Any], *, resuming: bool = False) -> None:
    """Check (and complete) the merged settings in place: defaults that depend on others, `refine` as names."""
    engine = settings["engine"]
    if engine not in ENGINE_CHOICES:
        raise UsageError(f"unknown engine {engine!r} (choose from {', '.join(ENGINE_CHOICES)})")
    # A streamed `auto` run has the default schedule's caps, as in memory; resuming, its last stage's engine.
    if settings["iterations"] is None and (engine != AUTO or (settings["stream"] and resuming)):
        settings["iterations"] = DEFAULT_ITERATIONS
    if settings["iterations"] is not None:
        check_count("iterations", settings["iterations"], 0, MAX_ITERATIONS, ITERATIONS_WHY)
    if settings["batched"] and engine == AUTO:
        raise UsageError("--batched needs a named PIE engine (--engine epie, rpie or mpie); auto sets its own")
    if settings["batched"] and not is_pie(engine):
        raise UsageError(f"--batched applies to the PIE engines (epie, rpie, mpie) only, not {engine!r}")
    _check_loss(settings)
    names = refine_names(settings["refine"])
    unsupported = [name for name in names if name not in _PIE_REFINABLE]
    if is_pie(engine) and unsupported:
        raise UsageError(
            f"--refine {unsupported[0]!r} is not supported by {engine!r}: PIE engines refine the object and "
            "probe only (use adam, sgd, lm, gauss-newton or an optx engine)"
        )
    settings["refine"] = tuple(names)
    noise = settings["noise_std"]
    if noise is not None:
        if not settings["uncertainty"]:
            raise UsageError("--noise-std needs --uncertainty")
        _check_number("noise_std", noise, _MAX_NOISE_STD, "the amplitude noise of 1e12 counts in a pixel")
    if settings["geometry"] and settings["near_field"]:
        raise UsageError("--geometry applies to far-field data only (it refines the FFT far field's distance)")
    if settings["geometry"] and "distance" in names:
        raise UsageError("--geometry refines the distance itself: leave distance out of --refine")
    check_count("modes", settings["modes"], 1, MAX_MODES, _MODES_WHY)
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be an integer from 0 to {MAX_SEED} (2**32 - 1), got {seed!r}")
    _check_near_field(settings)
    _check_stream(settings, resuming)


def _check_stream(settings: dict[str, Any], resuming: bool) -> None:
    """`--stream` (and `--stream-batch`): the options a run from the file's frames can honour.

    `resuming` (`--resume`): `stream_batch` stays `None` unless given (the result file records it).
    """
    if not settings["stream"]:
        if settings["stream_batch"] is not None:
            raise UsageError("--stream-batch needs --stream")
        return
    why_all = "needs every frame in memory at once"
    refused = {
        "near_field": "--near-field cannot be combined with --stream: the streamed start is the far-field one "
        "(janssen.invert.init_far_field_from_file)",
        "geometry": f"--geometry cannot be combined with --stream: refining the scan geometry {why_all}",
        "uncertainty": f"--uncertainty cannot be combined with --stream: the object's standard error {why_all}",
    }
    for name, message in refused.items():
        if settings[name]:
            raise UsageError(message)
    if not is_pie(settings["engine"]):
        raise UsageError(
            "--stream runs the PIE engines only (auto, which streams the default schedule's PIE stages and "
            "phase-field searches, or epie, rpie, "
            f"mpie), not {settings['engine']!r}: their closed-form updates need no step size tuned to the whole scan"
        )
    if settings["iterations"] is not None:
        why = "with --stream, epochs (and search steps): " + ITERATIONS_WHY
        check_count("iterations", settings["iterations"], 1, MAX_ITERATIONS, why)
    if settings["stream_batch"] is None:
        if resuming:
            return
        settings["stream_batch"] = DEFAULT_STREAM_BATCH
    check_count("stream_batch", settings["stream_batch"], 1, _MAX_STREAM_BATCH, _STREAM_BATCH_WHY)


def _check_loss(settings: dict[str, Any]) -> None:
    engine, loss, rate = settings["engine"], settings["loss"], settings["learning_rate"]
    if loss is not None:
        if loss not in LOSSES:
            raise UsageError(f"unknown loss {loss!r} (choose from {', '.join(LOSSES)})")
        if is_pie(engine):
            raise UsageError(f"--loss applies to the gradient engines (adam, sgd) only, not {engine!r}")
        if engine not in OPTIMIZERS and loss != "amplitude":
            raise UsageError(f"{engine} minimises the amplitude loss only, got --loss {loss!r}")
    if rate is not None:
        if engine not in OPTIMIZERS:
            raise UsageError(f"--learning-rate applies to the gradient engines (adam, sgd) only, not {engine!r}")
        # No upper bound: too large a rate is stopped at run time (exit 3 nonfinite, 4 diverged).
        _check_number("learning_rate", rate, float("inf"), "")


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
        if settings["propagator"] not in PROPAGATORS:
            raise UsageError(f"unknown propagator {settings['propagator']!r} (choose from {', '.join(PROPAGATORS)})")
    if settings["near_field"] and settings["propagator"] is None:
        settings["propagator"] = "fresnel"


def _option(name: str) -> str:
    """A setting's flag, with its config key where the two differ (`--learning-rate`, `learning_rate`)."""
    flag = "--" + name.replace("_", "-")
    return flag if "_" not in name else f"{flag} (config key {name!r})"


def check_count(name: str, value: Any, low: int, high: int, why: str) -> None:
    """An integer in `[low, high]`, else `UsageError` naming the setting and `why` the bound."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{_option(name)} must be an integer from {low} to {high} ({why}), got {value!r}")


def _check_number(name: str, value: Any, high: float, why: str, unit: str = "") -> None:
    """A finite number in (0, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (np.isfinite(value) and 0 < value):
        raise UsageError(f"{_option(name)} must be a finite number{' of ' + unit if unit else ''} > 0, got {value!r}")
    if value > high:
        raise UsageError(f"{_option(name)} must be at most {high:g}{' ' + unit if unit else ''} ({why}), got {value!r}")
