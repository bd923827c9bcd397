"""The text progress meter: compilation reported apart, it/s without it, an ETA."""

import jax
import numpy as np
import pytest
from helpers import tiny_far_field_problem

from janssen.invert import RPIE, TextProgressMeter, reconstruct
from janssen.invert._progress import _duration


class _Clock:
    """A timer that returns the given timestamps in turn."""

    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def _bar_lines(err):
    return [line for line in err.splitlines() if line.startswith("[")]


def _field(line, name):
    return line.split(name)[0].split()[-1] if name == "it/s" else line.split(name + " ")[1].split()[0]


def test_rate_excludes_compilation_and_eta_follows(capsys):
    # Start at 0 s, first iteration done at 10 s (compiling), then one every 0.5 s.
    times = [0.0] + [10.0 + 0.5 * k for k in range(10)]
    meter = TextProgressMeter(timer=_Clock(times))
    meter.start(20)
    meter.update(1, 3.0)
    assert np.isnan(meter.rate()) and np.isnan(meter.eta())
    for i in range(2, 6):
        meter.update(i, 3.0 / i)
    # 4 intervals of 0.5 s after the first iteration: 2 it/s, not the 5 / 12 s = 0.42 it/s
    # of an average that counts the compilation.
    assert meter.rate() == pytest.approx(2.0)
    assert meter.eta() == pytest.approx(15 / 2.0)
    for i in range(6, 11):
        meter.update(i, 3.0 / i)
    meter.close()
    assert meter.rate() == pytest.approx(2.0)
    assert meter.eta() == pytest.approx(10 / 2.0)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0] == "compiling the first iteration ..."
    assert lines[1] == "compiled and ran the first iteration in 10.00 s"
    # Not a terminal: a line every tenth of the run (every 2nd iteration of 20).
    bars = _bar_lines(err)
    assert [int(_field(line, "iter")) for line in bars] == [2, 4, 6, 8, 10]
    assert [float(_field(line, "it/s")) for line in bars] == [2.0] * 5
    assert [_field(line, "ETA") for line in bars] == ["0:09", "0:08", "0:07", "0:06", "0:05"]


def test_rate_follows_the_recent_window():
    # Ten iterations at 1 s each, then ten at 0.1 s: a 5-iteration window sees only the fast ones.
    times = [0.0, 30.0] + [30.0 + k for k in range(1, 10)] + [39.0 + 0.1 * k for k in range(1, 11)]
    meter = TextProgressMeter(window=5, timer=_Clock(times))
    meter.start(100)
    for i in range(1, 21):
        meter.update(i, 1.0)
    assert meter.rate() == pytest.approx(10.0)
    assert meter.eta() == pytest.approx(80 / 10.0)
    with pytest.raises(ValueError, match="window"):
        TextProgressMeter(window=0)


def test_hours_in_the_eta():
    # 0.01 it/s with 999 iterations to go: 99,900 s.
    meter = TextProgressMeter(timer=_Clock([0.0, 1.0, 101.0]))
    meter.start(1001)
    meter.update(1, 1.0)
    meter.update(2, 1.0)
    assert meter.eta() == pytest.approx(99_900.0)
    assert _duration(meter.eta()) == "27:45:00"
    assert _duration(65.4) == "1:05"


def test_more_updates_than_announced_leave_no_time(capsys):
    # refine_geometry's last tick may exceed its estimate: the ETA is 0, not negative.
    meter = TextProgressMeter(timer=_Clock([0.0, 1.0, 2.0, 3.0]))
    meter.start(2)
    for i in range(1, 4):
        meter.update(i, 1.0)
    assert meter.rate() == pytest.approx(1.0)
    assert meter.eta() == 0.0
    assert _bar_lines(capsys.readouterr().err)[-1] == "[" + "#" * 24 + "] 3/2  iter 3  loss 1  1.00 it/s  ETA 0:00"


def test_driver_reports_compilation_once_per_run(capsys):
    data, _, start = tiny_far_field_problem(jax.random.PRNGKey(5), n=32, grid=4)
    reconstruct(start, data, RPIE(), num_iterations=10, progress_meter=TextProgressMeter())
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "compiling the first iteration ..."
    assert lines[1].startswith("compiled and ran the first iteration in ")
    bars = _bar_lines("\n".join(lines))
    assert len(bars) == 10 and "-- it/s  ETA --" in bars[0]
    rates = [float(_field(line, "it/s")) for line in bars[1:]]
    assert all(rate > 0 for rate in rates)
    assert _field(bars[-1], "ETA") == "0:00"
