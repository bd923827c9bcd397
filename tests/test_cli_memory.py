"""`janssen.cli._memory.release_memory`: what the command gives back between the phases of a run."""

import gc
import pathlib
import subprocess
import sys

import jax
import pytest

from janssen.cli import _memory
from janssen.cli._memory import _libc, release_memory


def test_release_drops_the_compiled_programs_only_when_asked(monkeypatch):
    """Run from Python (the process not the command's own) the release does nothing; owned, a jitted
    function's compiled program survives `programs=False` and is gone after a full release."""
    add = jax.jit(lambda x: x + 1)
    assert float(add(1.0)) == 2.0
    assert add._cache_size() == 1
    monkeypatch.setitem(_memory._PROCESS, "owned", False)
    release_memory()
    assert add._cache_size() == 1
    monkeypatch.setitem(_memory._PROCESS, "owned", True)
    release_memory(programs=False)
    assert add._cache_size() == 1
    release_memory()
    assert add._cache_size() == 0
    assert float(add(2.0)) == 3.0  # compiled again on the next call


def _resident_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line in /proc/self/status")


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux's /proc for resident memory")
@pytest.mark.skipif(_libc("malloc_trim") is None, reason="the C library has no malloc_trim (not glibc)")
def test_release_returns_freed_heap_pages_to_the_system(monkeypatch):
    """100 MB of 4000-byte blocks (malloc's heap, below its mmap threshold) freed under one live block
    stay resident (the heap's top cannot shrink past the live block); the release returns at least
    80 % of them (measured: 97 of 98 MB)."""
    monkeypatch.setitem(_memory._PROCESS, "owned", True)
    before = _resident_mb()
    blocks = [bytearray(4000) for _ in range(25_000)]
    top = bytearray(4000)  # keeps the heap's top where it is
    grown = _resident_mb() - before
    assert grown > 80, f"the blocks took {grown:.0f} MB, expected about 100"
    del blocks
    gc.collect()
    freed_but_resident = _resident_mb() - before
    release_memory(programs=False)
    returned = before + freed_but_resident - _resident_mb()
    assert returned > 0.8 * grown, f"returned {returned:.0f} of {grown:.0f} MB"
    assert len(top) == 4000


@pytest.mark.skipif(not pathlib.Path("/proc/self/status").exists(), reason="needs Linux's /proc for resident memory")
@pytest.mark.skipif(_libc("mallopt") is None, reason="the C library has no mallopt (not glibc)")
def test_large_blocks_go_back_to_the_system_when_freed():
    """A 16 MB block allocated and freed raises glibc's own mapping threshold to 16 MB; 13 blocks of
    8 MB then come from the heap, and freed between small live blocks they stay resident. After
    `map_large_blocks` (4 MB) each has its own mapping and freeing them returns them (measured: 104.0 of
    104.0 MB resident against 0.05). Run in a fresh interpreter: the threshold is per process."""
    script = """
import gc, pathlib, sys
def resident():
    line = [l for l in pathlib.Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS")][0]
    return int(line.split()[1]) / 1024
if sys.argv[1] == "map":
    from janssen.cli._memory import map_large_blocks
    map_large_blocks()
warm = bytearray(16 * 2**20)
del warm
before, blocks, pins = resident(), [], []
for _ in range(13):
    blocks.append(bytearray(8 * 2**20))
    pins.append(bytearray(4000))
grown = resident() - before
del blocks
gc.collect()
print(grown, resident() - before)
"""
    kept = {}
    for mode in ("heap", "map"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        kept[mode] = [float(value) for value in out.stdout.split()]
    assert kept["heap"][0] > 80 and kept["map"][0] > 80, kept
    assert kept["heap"][1] > 0.8 * kept["heap"][0], kept  # the case the call is for
    assert kept["map"][1] < 10, kept
