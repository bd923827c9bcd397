"""janssen: ptychography and phase retrieval as differentiable programs in JAX.

Importing janssen never changes JAX's global configuration: float32 stays the default
unless you enable x64 yourself (`jax.config.update("jax_enable_x64", True)`).

The subpackages (`janssen.invert`, `janssen.io`, `janssen.optics`, `janssen.scopes`,
`janssen.plots`) are imported on first use, so that `import janssen` (and the start of
the `janssen` command, which must answer Ctrl-C with a line, not a traceback) does not
wait for JAX.
"""

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from . import invert as invert, io as io, optics as optics, plots as plots, scopes as scopes

_SUBPACKAGES = ("invert", "io", "optics", "plots", "scopes")

try:
    __version__ = version("janssen")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
