"""Saving a `Solution` to a result file and loading it back to resume the run."""

import dataclasses
import io
import pathlib
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._data import MicroscopeData
from ..io._results import read_result, write_result
from ._engines.base import AbstractEngine
from ._results import RESULTS
from ._solution import Solution
from ._trainable import _expand, _get, selected_paths
from ._verdict import Verdict


def engine_parameters(engine: AbstractEngine) -> dict[str, Any]:
    """An engine's fields as a JSON-ready dict (enough to rebuild it as `type(engine)(**params)`)."""
    params = {}
    for field in dataclasses.fields(engine):
        value = getattr(engine, field.name)
        if isinstance(value, bool | int | float | str):
            params[field.name] = value
        elif np.ndim(value) == 0 and isinstance(value, np.generic | jnp.ndarray):
            params[field.name] = np.asarray(value).item()
    return params


def result_name(result: Any) -> str:
    """The name of a `RESULTS` item (`"max_iterations_reached"`, `"interrupted"`, …)."""
    for name, item in RESULTS._name_to_item.items():
        if int(item._value) == int(result._value):
            return name
    return "unknown"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("janssen")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0+unknown"


def _resumable(solution: Solution) -> tuple:
    # Everything `reconstruct` needs to continue bit for bit, except the loss history
    # (stored as its own dataset) and the static iteration count (an attribute).
    return solution.microscope, solution.state, solution.key, solution.result


def save_solution(
    path: str | pathlib.Path,
    solution: Solution,
    data: MicroscopeData,
    engine: AbstractEngine,
    *,
    object_std: Any = None,
    verdict: Verdict | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write a `Solution` to a result file that `load_solution` can resume from.

    The file (see `janssen.io.write_result`) holds the object, probe, positions, loss
    history and geometry for any HDF5 reader, and a checkpoint: the microscope, engine
    state, key and result code serialised with `equinox.tree_serialise_leaves`. Use it
    as `reconstruct`'s checkpoint: `checkpoint=lambda s: save_solution(path, s, data, engine)`.

    **Arguments:**

    - `path`: the `.h5` file (overwritten).
    - `solution`: what `reconstruct` returned (or passed to its checkpoint).
    - `data`: the measurements it was refined against (for the geometry).
    - `engine`: the engine that ran (its class and parameters are recorded).
    - `object_std`: an optional `(Y, X)` standard-error map of the object (see
      `janssen.invert.object_std`), stored as `/object_std`.
    - `verdict`: an optional `Verdict` of the solution's microscope on `data` (see
      `janssen.invert.compute_verdict`; not computed here): R and its floor become the
      root attributes `r_factor` and `r_floor`, the residual per frame and per detector
      pixel the datasets `/verdict/per_frame` and `/verdict/per_pixel`.
    - `attrs`: further root attributes, written in the same atomic write (dicts as JSON;
      an `engine_parameters` dict adds to the engine's fields): e.g. what a caller needs
      to rebuild the engine on resuming (the command line stores the optimizer's name).
    """
    microscope = solution.microscope
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, _resumable(solution))
    extra_attrs = dict(attrs or {})
    root = {
        "engine": type(engine).__name__,
        "engine_parameters": {**engine_parameters(engine), **extra_attrs.pop("engine_parameters", {})},
        "janssen_version": _version(),
        "iteration": int(solution.iteration),
        "result": result_name(solution.result),
        "microscope": type(microscope).__name__,
        "trainable": selected_paths(microscope, solution.trainable),
        **extra_attrs,
    }
    extra = {"key": np.asarray(solution.key)}
    # Refined parameters besides object, probe and positions (distance, zoom, aperture…),
    # under their leaf paths.
    written = set(_expand(["object", "probe", "positions"], microscope))
    for leaf_path in selected_paths(microscope, solution.trainable):
        if leaf_path not in written:
            extra[f"refined/{leaf_path}"] = np.asarray(_get(microscope, leaf_path))
    write_result(
        path,
        object=microscope.sample.sample,
        probe=microscope.probe.fields(),
        positions=microscope.positions,
        loss=solution.losses,
        wavelength=float(data.wavelength),
        distance=_distance(microscope, data),
        object_pixel_size=microscope.sample.dx,
        attrs=root,
        extra=extra,
        state_bytes=buffer.getbuffer(),  # the buffer itself: getvalue() copied it (31 MB on the large preset)
        object_std=object_std,
        verdict=None if verdict is None else _verdict_fields(verdict),
    )


def _verdict_fields(verdict: Verdict) -> dict[str, Any]:
    return {"r": verdict.r, "floor": verdict.floor, "per_frame": verdict.per_frame, "per_pixel": verdict.per_pixel}


def _distance(microscope: Any, data: MicroscopeData) -> float:
    """The sample-to-camera distance: the microscope's own (refined) one where it models one, else the data's."""
    distance = microscope.camera_distance(float(data.wavelength), data.camera_pixel_size)
    return float(data.distance) if distance is None else distance


def load_solution(path: str | pathlib.Path, like: Solution) -> Solution:
    """Load a `Solution` saved by `save_solution`, ready to pass back to `reconstruct`.

    The checkpoint is deserialised into the structure of `like`, a template with the
    same microscope type, shapes, engine and trainable selection. The cheapest way to
    make one is a run of no iterations:
    `like = reconstruct(microscope, data, engine, num_iterations=0)`.

    **Arguments:**

    - `path`: a result file written by `save_solution`.
    - `like`: the template `Solution`.

    **Returns:**

    The saved `Solution` (its `snapshots` are not saved and come back empty).

    **Raises:**

    `ValueError` naming the file when it holds no checkpoint or one that does not fit `like`.
    """
    content = read_result(path)
    if content["state_bytes"] is None:
        raise ValueError(f"result file {str(path)!r} holds no checkpoint to resume from")
    try:
        microscope, state, key, result = eqx.tree_deserialise_leaves(
            io.BytesIO(content["state_bytes"]), _resumable(like)
        )
    except Exception as error:
        raise ValueError(
            f"the checkpoint in {str(path)!r} (written by janssen "
            f"{content['attrs'].get('janssen_version', 'of unknown version')}) does not fit the template solution "
            f"(different microscope, shapes or engine, or a checkpoint from an older janssen?): {error}"
        ) from error
    return Solution(
        microscope=microscope,
        state=state,
        losses=jnp.asarray(content["loss"], dtype=like.losses.dtype),
        iteration=int(content["attrs"]["iteration"]),
        result=result,
        key=key,
        trainable=like.trainable,
        snapshots=(),
    )
