"""Progress reporting for the `reconstruct` driver."""

import abc
import sys
import time

import equinox as eqx


class AbstractProgressMeter(eqx.Module):
    """Reports iterations as the driver completes them (host-side, never traced)."""

    @abc.abstractmethod
    def start(self, total: int) -> None:
        """Called once before the first iteration with the number of iterations to run."""

    @abc.abstractmethod
    def update(self, iteration: int, loss: float) -> None:
        """Called after each completed iteration."""

    @abc.abstractmethod
    def close(self) -> None:
        """Called once when the run ends, however it ends."""


class NoProgressMeter(AbstractProgressMeter):
    """Reports nothing."""

    def start(self, total: int) -> None:
        del total

    def update(self, iteration: int, loss: float) -> None:
        del iteration, loss

    def close(self) -> None:
        pass


class TextProgressMeter(AbstractProgressMeter):
    """A one-line bar on stderr: iteration, loss and iterations per second.

    On a terminal the line is redrawn after every iteration; when stderr is a file or a
    pipe (a log, CI) a plain line is written at every tenth of the run instead.

    **Arguments:**

    - `width`: characters of the bar itself.
    """

    width: int = 24
    _clock: dict = eqx.field(default_factory=dict, static=True)

    def start(self, total: int) -> None:
        self._clock.update(total=total, done=0, t0=time.perf_counter())

    def update(self, iteration: int, loss: float) -> None:
        clock = self._clock
        clock["done"] += 1
        elapsed = time.perf_counter() - clock["t0"]
        rate = clock["done"] / elapsed if elapsed > 0 else float("nan")
        filled = int(self.width * clock["done"] / max(clock["total"], 1))
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {clock['done']}/{clock['total']}  iter {iteration}  loss {loss:.4g}  {rate:.2f} it/s"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line)
        elif clock["done"] == clock["total"] or clock["done"] % max(clock["total"] // 10, 1) == 0:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
            sys.stderr.flush()
