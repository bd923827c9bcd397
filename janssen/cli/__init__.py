"""The `janssen` command line."""

import os
import signal
import sys
import threading


def _interrupted_while_loading(signum: int, frame: object) -> None:
    # Nothing has been written yet; some imported libraries swallow a KeyboardInterrupt
    # raised inside their imports, so the process ends here rather than raise one.
    sys.stderr.write("janssen: interrupted while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    """Run the `janssen` command; the exit code.

    The command's modules (and JAX) are imported here, with Ctrl-C answered by one line
    and exit 130 (not a traceback) until they are loaded and the command's own handling
    takes over.
    """
    handled = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading) if handled else None
    try:
        from ._main import main as run
    finally:
        if handled:
            signal.signal(signal.SIGINT, previous)
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("janssen: interrupted while starting; nothing was written", file=sys.stderr)
        return 130
