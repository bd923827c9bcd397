"""The `janssen` command line."""

from ._main import main as main
