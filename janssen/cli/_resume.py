"""`--resume`: the command's record in a result file, and the engine and solution rebuilt from it."""

import json
import pathlib
import shlex
from typing import Any

import numpy as np

import janssen.invert as jinv
import janssen.io as jio
from janssen.optics import SampleFunction, ScaledFraunhofer
from janssen.scopes import AbstractMicroscope, DetectorResponse, FarFieldMicroscope, NearFieldMicroscope, with_detector

from ._engines import make_engine
from ._errors import UsageError
from ._inputs import near_field_geometry, probe_module
from ._settings import ReconstructSettings


def cli_record(settings: ReconstructSettings, data: jio.MicroscopeData, start: AbstractMicroscope) -> dict[str, Any]:
    """How the starting microscope was built: what `--resume` needs to rebuild its structure."""
    record = {"engine": settings.engine, "modes": settings.modes, "near_field": bool(settings.near_field)}
    if settings.near_field:
        record.update(near_field_geometry(settings, data))
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


def read_saved(path: pathlib.Path) -> dict[str, Any]:
    """A result file (`janssen.io.read_result`) with its command record decoded as `"cli"`."""
    try:
        saved = jio.read_result(path)
    except ValueError as error:
        raise UsageError(f"--resume: {error}") from error
    cli = saved["attrs"].get("cli")
    # Files written without the CLI's record: a far-field run with a plain probe.
    saved["cli"] = json.loads(cli) if isinstance(cli, str) else {"modes": 1, "near_field": False}
    if saved["cli"].get("stream"):
        raise UsageError(
            f"--resume: {str(path)!r} was written by a streamed run (--stream), whose checkpoint is not resumable: "
            "run it again with --stream"
        )
    return saved


def _engine_name(saved: dict[str, Any], path: pathlib.Path) -> str:
    attrs = saved["attrs"]
    try:
        return jinv.engine_name(str(attrs.get("engine")), attrs.get("engine_parameters", {}))
    except ValueError:
        raise UsageError(
            f"{str(path)!r} was made by engine {attrs.get('engine')!r}, which the CLI cannot resume"
        ) from None


def _template(saved: dict[str, Any], data: jio.MicroscopeData) -> AbstractMicroscope:
    """A microscope of the saved one's structure; only that matters (the checkpoint replaces every leaf)."""
    cli = saved["cli"]
    dx = saved["object_pixel_size"]
    # The saved probe already holds all its modes: the template keeps their number.
    modes = saved["probe"].shape[0] if int(cli.get("modes", 1)) > 1 else 1
    probe = probe_module(saved["probe"], modes, saved["wavelength"], dx)
    sample = SampleFunction(saved["object"], dx)
    # Centred positions pass the construction checks even where refined ones have left the object.
    positions = np.zeros_like(saved["positions"])
    if cli.get("near_field"):
        options = {name: cli[name] for name in ("distance", "propagator", "focus_to_sample")}
        microscope = NearFieldMicroscope(probe, sample, positions, **options)
    else:
        propagator = None
        if cli.get("scaled_far_field"):
            propagator = ScaledFraunhofer(saved["distance"], data.camera_pixel_size, tuple(data.frame_shape))
        microscope = FarFieldMicroscope(probe, sample, positions, propagator)
    if cli.get("detector"):
        microscope = with_detector(microscope, _detector_like(cli["detector"]))
    return microscope


def resumed(path: pathlib.Path, saved: dict[str, Any], data: jio.MicroscopeData, settings: ReconstructSettings):
    """The engine, the solution saved in `path` and the records its checkpoints keep writing."""
    cli = saved["cli"]
    name = _engine_name(saved, path)
    try:
        microscope = _template(saved, data)
        engine, record = make_engine(name, saved["attrs"].get("engine_parameters", {}), settings, microscope)
        trainable = saved["attrs"].get("trainable", '["object", "probe"]')
        trainable = json.loads(trainable) if isinstance(trainable, str) else list(trainable)
        like = jinv.reconstruct(microscope, data, engine, trainable=trainable, num_iterations=0)
        return engine, jinv.load_solution(path, like), (record, {**cli, "engine": name})
    except ValueError as error:
        raise UsageError(f"cannot resume from {str(path)!r}: {error}") from error


def resume_command(settings: ReconstructSettings, out: pathlib.Path, remaining: int) -> str:
    """The command that continues this run where it stopped, for the iterations it had left."""
    words = ["janssen"]
    if settings.compile_cache:
        words += ["--compile-cache", settings.compile_cache]
    words += ["reconstruct", str(settings.data), "--resume", str(out), "--iterations", str(remaining)]
    if settings.seed:
        words += ["--seed", str(settings.seed)]
    if settings.uncertainty:
        words += ["--uncertainty"] + ([] if settings.noise_std is None else ["--noise-std", str(settings.noise_std)])
    return shlex.join(words)
