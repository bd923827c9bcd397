"""`--resume`: the command's record in a result file, and the engine and solution rebuilt from it."""

import json
import pathlib
import shlex
import sys
from typing import Any

import jax.numpy as jnp
import numpy as np

import janssen.invert as jinv
import janssen.io as jio
from janssen.optics import SampleFunction, ScaledFraunhofer
from janssen.scopes import AbstractMicroscope, DetectorResponse, FarFieldMicroscope, NearFieldMicroscope, with_detector

from ._engines import make_engine
from ._errors import UsageError
from ._inputs import near_field_geometry, probe_module
from ._output import same_file
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


def read_saved(path: pathlib.Path, *, stream: bool, data: pathlib.Path) -> dict[str, Any]:
    """A result file (`janssen.io.read_result`) with its command record decoded as `"cli"`.

    `stream`: whether the run resuming it is streamed (`--stream`); a streamed run's
    result continues streamed, and only a streamed run's (`UsageError` otherwise).
    `data`: the data file the run is given, which must be the one the result records
    (`_check_data_file`).
    """
    try:
        saved = jio.read_result(path)
    except ValueError as error:
        raise UsageError(f"--resume: {error}") from error
    cli = saved["attrs"].get("cli")
    # Files written without the CLI's record: a far-field run with a plain probe.
    saved["cli"] = json.loads(cli) if isinstance(cli, str) else {"modes": 1, "near_field": False}
    streamed = bool(saved["cli"].get("stream"))
    if streamed and not stream:
        raise UsageError(
            f"--resume: {str(path)!r} was written by a streamed run (--stream): continue it with --stream "
            "(its epochs read the frames a batch at a time)"
        )
    if stream and not streamed:
        raise UsageError(
            f"--resume: {str(path)!r} was written by a run without --stream: continue it without --stream "
            "(--stream continues the epochs of a streamed run only)"
        )
    _check_data_file(saved, path, data)
    return saved


def _check_data_file(saved: dict[str, Any], result: pathlib.Path, data: pathlib.Path) -> None:
    """The data file must be the one the result records (`cli["data"]`, compared after resolving links).

    A result continues on the frames it was refined against: another file of the same
    size would resume silently into a poor fit. When the recorded file no longer exists
    (the data were moved), `data` is taken, with a note; the frames are then checked
    against the result's positions. Files written without the record are not checked.
    """
    recorded = saved["cli"].get("data")
    if recorded is None or same_file(pathlib.Path(recorded), data):
        return
    if pathlib.Path(recorded).exists():
        raise UsageError(
            f"--resume: {str(result)!r} was refined against the data file {recorded!r}, not {str(data)!r}: "
            "resume with the data file it records"
        )
    print(
        f"janssen: the data file {str(result)!r} records, {recorded!r}, no longer exists: continuing on "
        f"{str(data)!r}, whose frames must be the same",
        file=sys.stderr,
    )


def check_frame_count(saved: dict[str, Any], result: pathlib.Path, data: pathlib.Path, frames: int) -> None:
    """The data file has one frame per position of the saved result (`UsageError` otherwise)."""
    positions = int(np.shape(saved["positions"])[0])
    if positions != frames:
        raise UsageError(
            f"--resume: {str(result)!r} holds {positions} scan positions but the data file {str(data)!r} has "
            f"{frames} frames: resume with the data file it was refined against"
        )


def saved_engine_name(saved: dict[str, Any], path: pathlib.Path) -> str:
    attrs = saved["attrs"]
    try:
        return jinv.engine_name(str(attrs.get("engine")), attrs.get("engine_parameters", {}))
    except ValueError:
        raise UsageError(
            f"{str(path)!r} was made by engine {attrs.get('engine')!r}, which the CLI cannot resume"
        ) from None


def template(saved: dict[str, Any], data: jio.MicroscopeData, *, positions: bool = False) -> AbstractMicroscope:
    """A microscope of the saved one's structure; only that matters (the checkpoint replaces every leaf).

    `positions`: hold the saved positions rather than zeros (where they have not been
    refined, so stay on the object), for an engine whose `init` decides on them.
    """
    cli = saved["cli"]
    dx = saved["object_pixel_size"]
    # The saved probe already holds all its modes: the template keeps their number.
    modes = saved["probe"].shape[0] if int(cli.get("modes", 1)) > 1 else 1
    probe = probe_module(saved["probe"], modes, saved["wavelength"], dx)
    sample = SampleFunction(saved["object"], dx)
    # Centred positions pass the construction checks even where refined ones have left the object.
    positions = np.asarray(saved["positions"]) if positions else np.zeros_like(saved["positions"])
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


def resumed(
    path: pathlib.Path,
    saved: dict[str, Any],
    data: jio.MicroscopeData,
    settings: ReconstructSettings,
    *,
    stream: tuple[jio.CXIFrames, int] | None = None,
):
    """The engine, the solution saved in `path` and the records its checkpoints keep writing.

    `stream`: a streamed run's open data file (`data` is then its `geometry`) and
    positions per batch; the template the checkpoint is read into is
    made as the run made its start (`janssen.invert.reconstruct_from_file` with
    `epochs=0`, on the saved positions and with the saved key), so that the engine's
    state decides as it did (e.g. sub-pixel shifts).
    """
    cli = saved["cli"]
    name = saved_engine_name(saved, path)
    try:
        trainable = saved["attrs"].get("trainable", '["object", "probe"]')
        trainable = json.loads(trainable) if isinstance(trainable, str) else list(trainable)
        # Unrefined positions are the run's own: an engine's `init` may decide on them (the PIE
        # engines' sub-pixel shifts; with zeros a resumed run would shift by whole pixels).
        microscope = template(saved, data, positions=stream is not None or "positions" not in trainable)
        engine, record = make_engine(name, saved["attrs"].get("engine_parameters", {}), settings, microscope)
        if stream is None:
            like = jinv.reconstruct(microscope, data, engine, trainable=trainable, num_iterations=0)
        else:
            key = saved["extra"].get("key")
            key = None if key is None else jnp.asarray(key)
            frames, batch = stream
            like = jinv.reconstruct_from_file(
                microscope,
                frames,
                engine,
                epochs=0,
                batch_size=batch,
                trainable=trainable,
                key=key,
                whole_scan=engine.sums_over_positions,
            )
        records = (record, {**cli, "engine": name, "data": str(settings.data.resolve())})
        return engine, jinv.load_solution(path, like), records
    except ValueError as error:
        raise UsageError(f"cannot resume from {str(path)!r}: {error}") from error


def resume_command(settings: ReconstructSettings, out: pathlib.Path, remaining: int) -> str:
    """The command that continues this run where it stopped, for the iterations it had left."""
    words = ["janssen"]
    if settings.compile_cache:
        words += ["--compile-cache", settings.compile_cache]
    words += ["reconstruct", str(settings.data)] + (["--stream"] if settings.stream else [])
    words += ["--resume", str(out), "--iterations", str(remaining)]
    if settings.seed:
        words += ["--seed", str(settings.seed)]
    if settings.uncertainty:
        words += ["--uncertainty"] + ([] if settings.noise_std is None else ["--noise-std", str(settings.noise_std)])
    return shlex.join(words)
