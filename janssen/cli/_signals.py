"""Signals and failures while a command runs: Ctrl-C and SIGTERM stop the run, every failure is one line."""

import _thread
import contextlib
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ._errors import (
    EXIT_BUSY,
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    EXIT_TERMINATED,
    EXIT_WRITE_FAILED,
    BusyError,
    UsageError,
    WriteError,
)

# Signals received while a command runs, and whether a save is in progress (they then wait for it).
received: list[int] = []
_deferring = [False]
# Whether a command's handlers are installed, and how soon a swallowed signal is delivered again.
_handling = [False]
_REDELIVER_S = 0.005
# Signals to deliver again (`_raise_again`), and whether the main thread is in the hook that
# queues them. A `SimpleQueue`'s `put` may be called from a signal handler or a finaliser.
_redeliver: "queue.SimpleQueue[int]" = queue.SimpleQueue()
_in_hook = [False]
_deliverer: list[threading.Thread] = []


def _on_signal(number: int, frame: Any) -> None:
    if _in_hook[0]:
        # Inside the hook that delivers a swallowed stop again: raised here, Python would
        # swallow it as well ("Exception ignored in sys.unraisablehook"). Queued instead.
        _redeliver.put(number)
        return
    received.append(number)
    if not _deferring[0]:
        raise KeyboardInterrupt


def _deliver_again() -> None:
    """The deliverer thread: each queued signal, a moment later, to the main thread."""
    while True:
        number = _redeliver.get()
        time.sleep(_REDELIVER_S)
        if _handling[0]:  # not once the command has ended
            _thread.interrupt_main(number)


def _raise_again(unraisable: Any, hook: Callable[[Any], None]) -> None:
    """`sys.unraisablehook` while a command runs: a stop that Python swallowed is raised again.

    A signal that arrives while a finaliser or a weak-reference callback runs raises
    `KeyboardInterrupt` there, and Python ignores it ("Exception ignored in ...", with a
    traceback) and carries on: the run would not stop. The signal is delivered again to
    the main thread a moment later, from the deliverer thread (`_thread.interrupt_main`):
    the handler then runs once the callback has returned (should it land in another, this
    happens again). Its first record is taken back, so it still counts once. The hook only
    queues the signal (it waits for nothing: starting a timer thread here waited for the
    thread to start, and under load the delivery came back inside this hook, where it was
    swallowed for good), and a delivery that lands in the hook is queued again.
    """
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        hook(unraisable)
        return
    _in_hook[0] = True
    try:
        _redeliver.put(received.pop() if received else signal.SIGINT)
    finally:
        _in_hook[0] = False


@contextlib.contextmanager
def _signals_handled() -> Iterator[None]:
    """For the time of a command: SIGTERM (a scheduler's stop) stops the run as Ctrl-C does."""
    received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _deliverer:
        _deliverer.append(threading.Thread(target=_deliver_again, name="janssen-signals", daemon=True))
        _deliverer[0].start()
    previous = {number: signal.signal(number, _on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: _raise_again(unraisable, hook)
    _handling[0] = True
    try:
        yield
    finally:
        _handling[0] = False
        sys.unraisablehook = hook
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def saving() -> Iterator[None]:
    """A save that a signal does not cut short: the signal is acted on once the file is complete."""
    before, _deferring[0] = _deferring[0], True
    try:
        yield
    finally:
        _deferring[0] = before


def signal_exit() -> int:
    """130 after Ctrl-C (SIGINT), 143 after SIGTERM: the shell's codes."""
    return EXIT_TERMINATED if received and received[0] == signal.SIGTERM else EXIT_INTERRUPTED


def signal_name() -> str:
    return "SIGTERM" if signal_exit() == EXIT_TERMINATED else "Ctrl-C"


def kept_text(kept: dict[str, Any]) -> str:
    """What a stopped run left: the checkpoint it wrote last, or nothing."""
    if kept.get("iteration") is None:
        return "no result file was written"
    return f"{kept['out']} holds the checkpoint of iteration {kept['iteration']}"


def command(name: str, body: Callable[[dict[str, Any]], int]) -> int:
    """Run `body(kept)` with signals handled; every failure is one line on stderr and an exit code."""
    kept: dict[str, Any] = {"iteration": None, "out": None}
    with _signals_handled():
        try:
            return body(kept)
        except BusyError as error:
            return _error(name, error, EXIT_BUSY)
        except WriteError as error:
            return _error(name, f"{error}; {kept_text(kept)}", EXIT_WRITE_FAILED)
        except (UsageError, OSError, ValueError) as error:
            return _error(name, error)
        except KeyboardInterrupt:
            print(f"janssen {name}: interrupted ({signal_name()}); {kept_text(kept)}", file=sys.stderr)
            return signal_exit()


def _error(command: str, error: BaseException | str, code: int = EXIT_REFUSED) -> int:
    print(f"janssen {command}: error: {' '.join(str(error).split())}", file=sys.stderr)
    return code
