"""Progress reporting for the `reconstruct` driver."""

import abc
import collections
import math
import sys
import time
from collections.abc import Callable

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


def _duration(seconds: float) -> str:
    """`m:ss` or `h:mm:ss`."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TextProgressMeter(AbstractProgressMeter):
    """A one-line bar on stderr: iteration, loss, iterations per second and time left.

    The first iteration compiles the step (unless an earlier call with the same shapes
    did), which can take seconds where an iteration takes milliseconds, so it is reported
    on lines of its own ("compiling" when the run starts, the seconds it took when it
    ends) and left out of the rate: it/s is measured over the last `window` iterations
    after the first, and the ETA is the iterations left at that rate.

    On a terminal the bar is redrawn after every iteration; when stderr is a file or a
    pipe (a log, CI) a plain line is written at every tenth of the run instead.

    **Arguments:**

    - `width`: characters of the bar itself.
    - `window`: number of recent iterations the rate is measured over.
    - `timer`: the clock, in seconds (`time.perf_counter`; a test passes its own).
    """

    width: int = 24
    window: int = 20
    timer: Callable[[], float] = eqx.field(default=time.perf_counter, static=True)
    _clock: dict = eqx.field(default_factory=dict, static=True)

    def __check_init__(self):
        if self.window < 1:
            raise ValueError(f"`window` must be >= 1, got {self.window}")

    def start(self, total: int) -> None:
        # Completion times of the recent iterations; the start time is not one of them,
        # so the compiling first iteration never enters the rate.
        self._clock.update(total=total, done=0, t0=self.timer(), times=collections.deque(maxlen=self.window + 1))
        if total > 0:
            self._write_line("compiling the first iteration ...")

    def rate(self) -> float:
        """Iterations per second over the recent window, after the first; NaN until known."""
        times = self._clock["times"]
        if len(times) < 2 or times[-1] <= times[0]:
            return float("nan")
        return (len(times) - 1) / (times[-1] - times[0])

    def eta(self) -> float:
        """Seconds left at the current rate; NaN until the rate is known."""
        return max(self._clock["total"] - self._clock["done"], 0) / self.rate()

    def update(self, iteration: int, loss: float) -> None:
        clock = self._clock
        now = self.timer()
        clock["done"] += 1
        clock["times"].append(now)
        if clock["done"] == 1:
            self._write_line(f"compiled and ran the first iteration in {now - clock['t0']:.2f} s")
        rate, eta = self.rate(), self.eta()
        filled = min(int(self.width * clock["done"] / max(clock["total"], 1)), self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        speed = "-- it/s  ETA --" if math.isnan(rate) else f"{rate:.2f} it/s  ETA {_duration(eta)}"
        line = f"[{bar}] {clock['done']}/{clock['total']}  iter {iteration}  loss {loss:.4g}  {speed}"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line)
        elif clock["done"] == clock["total"] or clock["done"] % max(clock["total"] // 10, 1) == 0:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _write_line(self, text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
