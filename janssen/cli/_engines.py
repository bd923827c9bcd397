"""The engine a run uses: `janssen.invert.engine_from_name` with the `[engine]` table, checked first."""

from collections.abc import Mapping
from typing import Any

import numpy as np

import janssen.invert as jinv
from janssen.optics import MixedStateProbe
from janssen.scopes import AbstractMicroscope

from ._args import MAX_ITERATIONS
from ._errors import UsageError
from ._settings import AUTO, OPTIMIZERS, ReconstructSettings, is_pie

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


def make_engine(
    name: str,
    params: Mapping[str, Any],
    settings: ReconstructSettings,
    microscope: AbstractMicroscope,
    refine_paths: list[str] | None = None,
) -> tuple[jinv.AbstractEngine | tuple[jinv.Stage, ...], dict[str, Any]]:
    """The engine `name` with `params` (the config's [engine] table or a result file's record),
    and what the result file must record beyond `save_solution`'s engine parameters
    (`janssen.invert.engine_record`). `auto` gives `janssen.invert.default_schedule`'s stages.

    `refine_paths`: the refined leaves of a fresh start, whose sizes set a gradient engine's
    per-part rates (`janssen.invert.default_rate_factors`); a resumed run has its own.
    """
    if name == AUTO:
        if params:
            raise UsageError(f"the default schedule takes no [engine] parameters, got {sorted(params)}; name an engine")
        return jinv.default_schedule(microscope), {}
    params = dict(params)
    cls = jinv.engine_class(name)
    _check_params(cls, params, set(jinv.engine_parameter_names(name)))
    if name in OPTIMIZERS:
        name, params = _gradient_parameters(name, params, settings, microscope, refine_paths)
    if is_pie(name):
        params.setdefault("mode", "batched" if settings.batched else "sequential")
    try:
        engine = jinv.engine_from_name(name, **params)
    except (TypeError, ValueError) as error:
        label = name if name.startswith("optx-") else cls.__name__  # the class is the same for three solvers
        raise UsageError(f"bad {label} parameters: {error}") from error
    params = {key: value for key, value in params.items() if key not in ("solver", "optimizer")}
    return engine, jinv.engine_record(name, **params)


def _gradient_parameters(
    name: str,
    params: dict[str, Any],
    settings: ReconstructSettings,
    microscope: AbstractMicroscope,
    refine_paths: list[str] | None,
) -> tuple[str, dict[str, Any]]:
    """The optimizer's name and the `Gradient` parameters: flags filled in, per-part rates measured.

    An optax optimizer is not storable as a parameter: the result file records its name
    and rate (and the loss and part factors), from which `--resume` rebuilds it.
    """
    optimizer = params.pop("optimizer", name)
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r} (choose from {', '.join(sorted(OPTIMIZERS))})")
    params.setdefault("learning_rate", settings.learning_rate)
    params["loss"] = params.get("loss", settings.loss) or "amplitude"
    rates = params.pop("learning_rates", None)
    if rates is None:  # a fresh start: per-part factors from the parts' scales
        rates = jinv.default_rate_factors(microscope, refine_paths or [], optimizer=optimizer)
    params["learning_rates"] = {str(key): float(value) for key, value in rates.items()}
    return optimizer, params


def _check_params(cls: type, params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} parameter {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    fields = getattr(cls, "__dataclass_fields__", {})
    for name, value in params.items():
        kind = _PARAM_TYPES.get(name) or (fields[name].type if name in fields else None)
        default = getattr(fields.get(name), "default", None)
        _check_param(cls.__name__, name, value, kind, default)


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


def trainable_names(settings: ReconstructSettings, engine: str, microscope: AbstractMicroscope) -> list[str]:
    """`refine` as `reconstruct`'s trainable names; a mixed-state probe's weights go with its modes."""
    names = list(settings.refine)
    if "probe" in names and isinstance(microscope.probe, MixedStateProbe) and not is_pie(engine):
        names += ["probe.weights"]
    return names
