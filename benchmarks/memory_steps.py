"""Resident memory of the default path's steps on a CXI file, one after another in one process.

    python benchmarks/memory_steps.py FILE.cxi

Prints, after each step, the seconds so far, the current resident memory and its peak so far
(Linux `/proc/self/status`): `read_cxi`, the mean pattern, the scan spacing, the background
estimate, the 512 central positions, a probe search of one size on both sides of focus
(one iteration each), the start from that probe, and two rPIE iterations over every
position (the first compiles). Compare with the frames' size as float32. On the xlarge
preset (4000 MB of frames) the peak was 5998 MB (docs/benchmarks-large.md).
"""

import sys
import time

import jax
import numpy as np

import janssen.invert as jinv
import janssen.io as jio
from janssen.invert._init import _central_positions, _scan_spacing_px
from janssen.invert._patterns import mean_pattern


def _memory() -> str:
    with open("/proc/self/status") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return f"rss {int(fields['VmRSS'].split()[0]) / 1024:.0f} MB, peak {int(fields['VmHWM'].split()[0]) / 1024:.0f} MB"


def main(path: str) -> int:
    clock = time.perf_counter()

    def say(what: str) -> None:
        print(f"{time.perf_counter() - clock:7.1f} s  {what}: {_memory()}", flush=True)

    say("start")
    data = jio.read_cxi(path)
    say(f"read_cxi ({data.intensities.nbytes / 2**20:.0f} MB of frames)")
    mean_pattern(data)
    say("mean pattern")
    _scan_spacing_px(data)
    say("scan spacing")
    jinv.background_start(data)
    say("background estimate")
    _central_positions(data, jinv.SEARCH_POSITIONS)
    say("central positions")
    probe = np.asarray(jinv.search_probe(data, iterations=1, factors=(1.0,)).fields)
    say("probe search (one size, both sides of focus, one iteration)")
    start = jinv.init_far_field_microscope(data, probe)
    say("start")
    solution = jinv.reconstruct(start, data, jinv.RPIE(), num_iterations=1)
    jax.block_until_ready(solution.microscope.sample.sample)
    say("rPIE, first iteration (compiles)")
    solution = jinv.reconstruct(solution, data, jinv.RPIE(), num_iterations=1)
    jax.block_until_ready(solution.microscope.sample.sample)
    say("rPIE, second iteration")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
