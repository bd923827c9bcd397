"""janssen: ptychography and phase retrieval as differentiable programs in JAX.

Importing janssen never changes JAX's global configuration: float32 stays the default
unless you enable x64 yourself (`jax.config.update("jax_enable_x64", True)`).
"""

from importlib.metadata import PackageNotFoundError, version

from . import invert as invert, io as io, optics as optics, scopes as scopes

try:
    __version__ = version("janssen")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"
