"""What a run writes: the result file (never over an input or, unasked, an earlier result), one run per file."""

import contextlib
import fcntl
import os
import pathlib
import socket
import sys
from collections.abc import Iterator
from typing import Any

import janssen.invert as jinv
import janssen.io as jio

from ._errors import BusyError, UsageError, WriteError
from ._memory import release_memory
from ._settings import ReconstructSettings
from ._signals import saving

_FIGURES = ("object", "probe", "loss", "residual", "patterns", "truth")


def output_path(settings: ReconstructSettings) -> pathlib.Path:
    """The result file, checked before anything is loaded (see `check_output`)."""
    if settings.resume is not None:
        out = settings.out if settings.out is not None else settings.resume
    else:
        out = settings.out if settings.out is not None else _default_out(settings.data)
    inputs = {"data file": settings.data, "config": settings.config, "probe": settings.probe}
    check_output(out, inputs, overwrite=settings.overwrite, own=settings.resume)
    return out


def _default_out(data_path: pathlib.Path) -> pathlib.Path:
    """`<DATA's folder>/<DATA's name without its extension>_result.h5`.

    Beside the input, so that inputs of one name in different folders never share a result.
    """
    name = data_path.name
    for suffix in (".npz.bz2", *data_path.suffixes[-1:]):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return data_path.parent / f"{name}_result.h5"


def _figure_paths(out: pathlib.Path) -> list[pathlib.Path]:
    """The figures and the report written beside a result."""
    return [out.parent / f"{out.stem}_{kind}.png" for kind in _FIGURES] + [out.with_suffix(".html")]


def same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(
    out: pathlib.Path, inputs: dict[str, Any], *, overwrite: bool, own: pathlib.Path | None = None
) -> None:
    """Refuse an output that would replace an input, or an existing file without `--overwrite`.

    `inputs`: the files the run reads, by the name of their argument; `own`: a result file
    the run continues (`--resume`), which it may update with its figures.
    """
    folder = out.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write --out {str(out)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write --out {str(out)!r}: folder {str(folder)!r} is not writable")
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder: expected the name of a result file (.h5)")
    for label, path in inputs.items():
        if path is not None and same_file(out, pathlib.Path(path)):
            raise UsageError(
                f"--out {str(out)!r} is the {label} {str(path)!r}: a result never replaces its input; "
                "choose another --out"
            )
    if overwrite or (own is not None and same_file(out, own)):
        return
    for path in (out, *_figure_paths(out)):
        if path.exists() or path.is_symlink():
            raise UsageError(
                f"--out: {str(path)!r} already exists; pass --overwrite to replace it (and the result's figures) "
                "or choose another --out"
            )


@contextlib.contextmanager
def output_lock(out: pathlib.Path) -> Iterator[None]:
    """Hold `<out>.lock` while the run writes `out`: a second run on it is refused (`BusyError`).

    The lock is an advisory `flock` on that file, which the system releases when its holder
    dies: a lock file left by a killed run is taken over. It names its holder for the
    refusal message and is removed at the end. A `<out>.partial` left by a run killed
    while saving is removed once the lock is held.
    """
    lock = out.with_name(out.name + ".lock")
    descriptor = _acquire(lock, out)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        _remove_stale_temporary(out)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(descriptor)


def _acquire(lock: pathlib.Path, out: pathlib.Path) -> int:
    """A descriptor of `lock` holding its exclusive `flock`."""
    while True:
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as error:
            raise UsageError(f"cannot create the lock file {str(lock)!r}: {error.strerror or error}") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 200).decode(errors="replace").strip() or "another process"
            os.close(descriptor)
            raise BusyError(
                f"{str(out)!r} is being written by another janssen run ({holder}; lock file {str(lock)!r}): "
                "wait for it to end or choose another --out"
            ) from None
        try:  # the holder may have removed the file between our open and our lock: lock the new one
            if os.stat(lock, follow_symlinks=False).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)


def _remove_stale_temporary(out: pathlib.Path) -> None:
    """Remove `<out>.partial`, left by a run killed while writing (the lock says none is running)."""
    partial = jio.temporary_path(out)
    if partial.exists() or partial.is_symlink():
        partial.unlink()
        print(f"janssen: removed {partial}, left by an earlier run that was stopped while saving", file=sys.stderr)


def save(out: pathlib.Path, solution: jinv.Solution, data, engine, records, **extra: Any) -> None:
    """`save_solution` with the command's records in the same atomic write; signals wait for it.

    `records` (the engine record and the `cli` record, or `None`) are what `--resume`
    needs beyond `save_solution`'s own attributes.
    """
    attrs = None if records is None else {"engine_parameters": records[0], "cli": records[1]}
    try:
        with saving():
            jinv.save_solution(out, solution, data, engine, attrs=attrs, **extra)
    except OSError as error:
        raise WriteError(str(error)) from error


def figures(
    solution: jinv.Solution,
    out: pathlib.Path,
    verdict: jinv.Verdict | None = None,
    data: jio.MicroscopeData | None = None,
    truth: Any = None,
    data_path: pathlib.Path | None = None,
    streamed: jio.CXIFrames | None = None,
) -> list[pathlib.Path]:
    """The figures and the HTML report beside the result (`out`'s stem, `_FIGURES` and `.html`).

    `streamed`: the open file of a streamed run, from which the patterns figure reads the
    few frames it shows (the report reads none).
    """
    try:
        from janssen.plots import ReportError, save_figures, write_report
    except ImportError:  # pragma: no cover - matplotlib is optional
        return []
    try:
        shown = data if streamed is None else streamed
        paths = list(save_figures(solution, out.parent, out.stem, verdict=verdict, data=shown, truth=truth).values())
        release_memory()  # the patterns figure's prediction and the pages the drawing freed
        try:
            paths.append(write_report(out, data_path=data_path, data=data, truth=truth))
        except (ReportError, OSError) as error:  # a view of the saved result: never fail the run for it
            print(f"janssen: warning: no report: {' '.join(str(error).split())}", file=sys.stderr)
        return paths
    except ImportError:  # pragma: no cover
        print("janssen: matplotlib is not installed; no figures written", file=sys.stderr)
        return []
    except KeyboardInterrupt:
        print("janssen: figures not written (interrupted)", file=sys.stderr)
        return []
