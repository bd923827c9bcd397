"""The `janssen` command line."""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator


def _interrupted_while_loading(signum: int, frame: object) -> None:
    # Nothing has been written yet; some imported libraries swallow a KeyboardInterrupt
    # raised inside their imports, so the process ends here rather than raise one.
    sys.stderr.write("janssen: interrupted while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """While modules load (JAX among them), Ctrl-C ends the process with one line and exit 130.

    Only in the main thread (signal handlers can be set nowhere else); elsewhere a no-op.
    """
    handled = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading) if handled else None
    try:
        yield
    finally:
        if handled:
            signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the `janssen` command; the exit code.

    The parsers are loaded first (no JAX: `janssen --help` and a mistyped flag answer at
    once), the subcommand's modules (and JAX) once the command line is read; until they
    are loaded and the command's own handling takes over, Ctrl-C is answered by one line
    and exit 130, not a traceback.
    """
    with loading():
        from ._main import main as run
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("janssen: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
