"""Engines by name: what `janssen reconstruct --engine NAME` builds, and the name of a saved engine.

A result file records its engine's class (`save_solution`'s `engine` attribute) and
scalar fields (`engine_parameters`); for the two families whose name the class does not
give (the `optax` optimizer of `Gradient`, the optimistix solver of
`OptimistixLeastSquares`) `engine_record` is what to store beside them, so that
`engine_name` reads the name back and `engine_from_name` rebuilds the engine.
"""

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._engines.base import AbstractEngine
from ._engines.curvature import CurvatureSearch
from ._engines.phase_field import PhaseFieldSearch
from ._engines.pie import EPIE, RPIE, MomentumPIE

if TYPE_CHECKING:  # pragma: no cover
    import optax

# Gauss-Newton, the gradient engines and optimistix's solvers are imported when first built
# (lineax, optax and optimistix take about 0.4 s to import; `janssen.invert`'s docstring).
_GAUSS_NEWTON, _GRADIENT, _OPTIMISTIX_ENGINE = "GaussNewton", "Gradient", "OptimistixLeastSquares"
_PIE = {"epie": EPIE, "rpie": RPIE, "mpie": MomentumPIE}
_OPTIMIZERS = ("adam", "sgd")  # optax's functions of the same names
# `GaussNewton` is Levenberg-Marquardt; "gauss-newton" starts it with almost no damping.
_LEAST_SQUARES = {"gauss-newton": {"initial_damping": 1e-6}, "lm": {}}
_OPTIMISTIX = {"optx-gn": "gauss-newton", "optx-lm": "levenberg-marquardt", "optx-dogleg": "dogleg"}

# A stage of the default schedule, by name so that a run stopped in it resumes.
_OTHERS = {"curvature": CurvatureSearch, "phase-field": PhaseFieldSearch}

#: Every engine name `engine_from_name` builds, sorted.
ENGINE_NAMES: tuple[str, ...] = tuple(sorted([*_PIE, *_OPTIMIZERS, *_LEAST_SQUARES, *_OPTIMISTIX, *_OTHERS]))
#: The learning rate of the gradient engines when none is given. Adam moves a parameter by
#: about its rate per iteration, so 0.02 suits a unit object; plain gradient descent moves it
#: by rate x gradient, and 1.0 lowers the amplitude loss steadily on simulated far-field data
#: (at 10 the object alone diverges).
DEFAULT_LEARNING_RATES: Mapping[str, float] = {"adam": 0.02, "sgd": 1.0}
# The keyword arguments each family takes besides its class's own fields.
_OPTIMISTIX_PARAMETERS = ("rtol", "atol", "cg_max_steps", "eps")
_GRADIENT_PARAMETERS = ("learning_rate", "loss", "learning_rates", "batch_size", "sweep")


def engine_class(name: str) -> type[AbstractEngine]:
    """The engine class `engine_from_name(name)` builds (`"rpie"` -> `RPIE`, `"adam"` -> `Gradient`).

    **Raises:** `ValueError` for a name not in `ENGINE_NAMES`.
    """
    _check_name(name)
    if name in _PIE:
        return _PIE[name]
    if name in _OTHERS:
        return _OTHERS[name]
    if name in _LEAST_SQUARES:
        from ._engines.gauss_newton import GaussNewton

        return GaussNewton
    if name in _OPTIMISTIX:
        from ._engines.optimistix import OptimistixLeastSquares

        return OptimistixLeastSquares
    from ._engines.gradient import Gradient

    return Gradient


def engine_parameter_names(name: str) -> frozenset[str]:
    """The keyword arguments `engine_from_name(name, ...)` accepts (the `engine_record` keys among them)."""
    cls = engine_class(name)
    if name in _OPTIMISTIX:
        return frozenset((*_OPTIMISTIX_PARAMETERS, "solver"))
    if name in _OPTIMIZERS:
        return frozenset((*_GRADIENT_PARAMETERS, "optimizer"))
    return frozenset(field for field in cls.__dataclass_fields__ if not field.startswith("_"))


def engine_from_name(name: str, **parameters: Any) -> AbstractEngine:
    """The engine called `name` (one of `ENGINE_NAMES`), built with `parameters`.

    - `"epie"`, `"rpie"`, `"mpie"`: `EPIE`, `RPIE`, `MomentumPIE` with `parameters` as fields;
      `"curvature"`, `"phase-field"`: `CurvatureSearch`, `PhaseFieldSearch` likewise.
    - `"lm"`: `GaussNewton(**parameters)`; `"gauss-newton"`: the same with
      `initial_damping=1e-6` unless given (almost undamped).
    - `"optx-gn"`, `"optx-lm"`, `"optx-dogleg"`: `optimistix_engine` with the solver
      `"gauss-newton"`, `"levenberg-marquardt"` or `"dogleg"` (`rtol`, `atol`,
      `cg_max_steps`, `eps`).
    - `"adam"`, `"sgd"`: `Gradient(optax.adam(learning_rate), loss, learning_rates,
      batch_size, sweep)`; `learning_rate` defaults to `DEFAULT_LEARNING_RATES[name]`.

    A `parameters` dict read back from a result file (`engine_parameters`) may hold the
    `engine_record` keys too (`solver`, `optimizer`): they must agree with `name`.

    **Raises:** `ValueError` for an unknown name or parameter, `TypeError` or `ValueError`
    from the engine for a bad value.
    """
    unknown = sorted(set(parameters) - engine_parameter_names(name))
    if unknown:
        raise ValueError(
            f"unknown {engine_class(name).__name__} parameter {unknown[0]!r} "
            f"(allowed: {', '.join(sorted(engine_parameter_names(name)))})"
        )
    parameters = _without_record(name, parameters)
    if name in _PIE:
        return _PIE[name](**parameters)
    if name in _OTHERS:
        return _OTHERS[name](**parameters)
    if name in _LEAST_SQUARES:
        return engine_class(name)(**{**_LEAST_SQUARES[name], **parameters})
    if name in _OPTIMISTIX:
        from ._engines.optimistix import optimistix_engine

        return optimistix_engine(_OPTIMISTIX[name], **parameters)
    rate = parameters.pop("learning_rate", None)
    rate = DEFAULT_LEARNING_RATES[name] if rate is None else float(rate)
    # No factors and an empty table are the same engine: one form, so that a rebuilt engine equals it.
    parameters["learning_rates"] = parameters.get("learning_rates") or None
    return engine_class(name)(_optimizer(name, rate), **parameters)


@functools.lru_cache(maxsize=16)
def _optimizer(name: str, rate: float) -> "optax.GradientTransformation":
    # The same transformation for the same name and rate: a new one holds new functions,
    # and the jitted step would compile again for each engine built.
    import optax

    return getattr(optax, name)(rate)


def _without_record(name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    parameters = dict(parameters)
    for key, expected in (("solver", _OPTIMISTIX.get(name)), ("optimizer", name if name in _OPTIMIZERS else None)):
        if key in parameters:
            given = parameters.pop(key)
            if given != expected:
                raise ValueError(f"engine {name!r} has no {key} {given!r}")
    return parameters


def engine_record(name: str, **parameters: Any) -> dict[str, Any]:
    """What a result file records, beside the engine's scalar fields, to rebuild `engine_from_name(name, **parameters)`.

    For `"optx-*"` the solver's name and `parameters`; for `"adam"` and `"sgd"` the
    optimizer's name, its learning rate (the default filled in), the loss's name
    (default `"amplitude"`) and the per-part factors (default none); for the other
    names, whose class and fields say everything, nothing.
    """
    _check_name(name)
    if name in _OPTIMISTIX:
        return {"solver": _OPTIMISTIX[name], **parameters}
    if name not in _OPTIMIZERS:
        return {}
    rate = parameters.get("learning_rate")
    rates = parameters.get("learning_rates") or {}
    return {
        "optimizer": name,
        "learning_rate": DEFAULT_LEARNING_RATES[name] if rate is None else float(rate),
        "loss": parameters.get("loss") or "amplitude",
        "learning_rates": {str(key): float(value) for key, value in rates.items()},
    }


def engine_name(class_name: str, parameters: Mapping[str, Any] | None = None) -> str:
    """The name (one of `ENGINE_NAMES`) of an engine saved as `class_name` with `parameters`.

    `class_name` and `parameters` are a result file's `engine` and `engine_parameters`
    attributes (`janssen.io.read_result(path)["attrs"]`). `GaussNewton` reads as
    `"gauss-newton"` (its saved `initial_damping` keeps the run's own damping);
    `Gradient` and `OptimistixLeastSquares` need the `engine_record` keys.

    **Raises:** `ValueError` when no name builds that engine.
    """
    parameters = parameters or {}
    names = {cls.__name__: name for name, cls in (_PIE | _OTHERS).items()} | {_GAUSS_NEWTON: "gauss-newton"}
    if class_name in names:
        return names[class_name]
    solver = parameters.get("solver")
    if class_name == _OPTIMISTIX_ENGINE and solver in _OPTIMISTIX.values():
        return {value: key for key, value in _OPTIMISTIX.items()}[solver]
    optimizer = parameters.get("optimizer")
    if class_name == _GRADIENT and optimizer in _OPTIMIZERS:
        return optimizer
    raise ValueError(f"no engine name builds the engine {class_name!r} with parameters {dict(parameters)}")


def _check_name(name: str) -> None:
    if name not in ENGINE_NAMES:
        raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINE_NAMES)})")
