"""Memory given back between the phases of a run: the command owns its process, the library does not.

Two things stay resident after a phase of `janssen reconstruct` has ended: the programs XLA
compiled for it (about 50 MB for one PIE engine on the large preset's 256 x 256 frames) and
heap pages that glibc's allocator keeps after they were freed. Measured on the large preset
(1000 frames of 256 x 256, 262 MB) after the probe search: 906 MB resident; 905 MB after
`jax.clear_caches()`; 542 MB after that and `malloc_trim(0)` (the frames and the JAX
runtime: 476 MB before the search). The next phase compiles its own programs anyway.
"""

import ctypes
import functools
import gc
from collections.abc import Callable

# Whether the command is the process (`own_process`): only then does it touch the allocator
# and the JIT caches. Run from Python (`janssen.cli.main([...])`: tests, notebooks), the
# caller's process keeps both.
_PROCESS = {"owned": False}

# glibc's mallopt parameter for the size from which blocks are mapped on their own (malloc.h).
_M_MMAP_THRESHOLD = -3
#: Blocks of at least this many bytes get their own mapping (`map_large_blocks`).
MMAP_THRESHOLD = 4 * 2**20


@functools.cache
def _libc(name: str) -> Callable[..., int] | None:
    """The C library's function `name` (glibc's `mallopt`, `malloc_trim`), or `None` where it has none
    (macOS, musl, Windows: nothing to tune this way)."""
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def map_large_blocks() -> None:
    """Give every block of `MMAP_THRESHOLD` bytes (4 MB) or more its own mapping, returned to the system when freed.

    glibc maps large blocks on their own but raises that threshold to the size of each
    mapped block freed (up to 32 MB), so that an engine's per-iteration arrays (a 1388 x
    1388 object is 15 MB) soon come from the heap, whose freed pages stay resident. rPIE
    on 512 of the large preset's frames: 422 MB resident before, 661 MB after 13
    iterations, 510 MB once trimmed; with the threshold fixed at 4 MB, 557 MB (no growth
    after the first iteration; at 128 kB, 564 MB). Smaller blocks stay on the heap, where
    they cost no page faults (sequential rPIE on the medium preset: no difference beyond
    the machine's noise at 4 MB; at 128 kB about 5 % slower). Called once by the command;
    the library leaves the allocator alone.
    """
    mallopt = _libc("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def own_process() -> None:
    """The command runs as its own process (its own command line): map large blocks
    (`map_large_blocks`) and let `release_memory` act."""
    _PROCESS["owned"] = True
    map_large_blocks()


def release_memory(*, programs: bool = True) -> None:
    """Drop the compiled programs of the phase that ended and return freed heap pages to the system.

    Changes no result; the next phase compiles what it runs (its programs differ from the
    last phase's: other engine, other frame count). Call only between phases of a run.
    `programs=False` keeps the compiled programs (a later phase runs them again) and only
    returns the freed pages. Nothing is done unless `own_process` was called: a caller that
    runs the command inside its own Python keeps its compiled programs (clearing them made
    the test suite, which runs the command in-process, 50 % slower).
    """
    if not _PROCESS["owned"]:
        return
    if programs:
        import jax  # noqa: PLC0415 - the command imports JAX only when it runs

        jax.clear_caches()
    gc.collect()
    trim = _libc("malloc_trim")  # returns the heap's freed pages to the system
    if trim is not None:
        trim(0)
