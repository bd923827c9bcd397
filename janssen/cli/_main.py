"""Entry point of the `janssen` command."""

import argparse
import hashlib
import os
import pathlib
import platform
import sys

from . import loading
from ._memory import own_process
from ._parsers import add_demo_parser, add_reconstruct_parser, add_report_parser, add_simulate_parser

_OFF = "off"


def host_tag() -> str:
    """A short name for this kind of processor: the machine type and a digest of its instruction-set flags.

    JAX's cache keys do not include the processor's features, and XLA compiles CPU code
    for the processor at hand; machines sharing a home folder (a cluster's nodes) get a
    folder each for each kind of processor.
    """
    flags = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = (line for line in cpuinfo if line.startswith(("flags", "Features")))
            flags = next((line.split(":", 1)[1].strip() for line in lines), "")
    except OSError:
        pass
    digest = hashlib.sha1(f"{platform.machine()} {platform.processor()} {flags}".encode()).hexdigest()[:12]
    return f"{platform.machine() or 'cpu'}-{digest}"


def default_compile_cache() -> str:
    """`$JANSSEN_COMPILE_CACHE`, else `janssen/jax/<host_tag()>` in `$XDG_CACHE_HOME` or `~/.cache`."""
    chosen = os.environ.get("JANSSEN_COMPILE_CACHE")
    if chosen:
        return chosen
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "janssen", "jax", host_tag())


def use_compile_cache(path: str) -> str | None:
    """Point JAX's persistent compilation cache at `path` for this process; return the folder in use.

    For the command only (importing janssen changes no JAX setting). A cache folder the
    user set for JAX (`JAX_COMPILATION_CACHE_DIR`) is kept as it is; `"off"` leaves JAX's
    configuration alone. Every compilation is cached, however short: the command's
    largest, the engine's step, takes about half a second, below JAX's default threshold
    of 1 s, and reading it back takes milliseconds. A folder that cannot be created is
    reported on standard error and the command runs without the cache.
    """
    if path == _OFF:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        print(f"janssen: compile cache {path!r} not used: {error.strerror or error}", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def version_text() -> str:
    """janssen's version, JAX's, and the device JAX computes on by default (`jax.devices()[0]`)."""
    import jax

    import janssen

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", "") or device.platform
    return f"janssen {janssen.__version__}\njax {jax.__version__}\ndevice {device.platform} ({kind})"


class Parser(argparse.ArgumentParser):
    """argparse's parser with every refusal on one line (no usage block): exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        for wrong, plain in _ARGPARSE_WORDING:
            message = message.replace(wrong, plain)
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# argparse's phrases, said with what was expected.
_ARGPARSE_WORDING = (
    ("invalid int value:", "expected an integer, got"),
    ("invalid float value:", "expected a number, got"),
    ("ignored explicit argument", "is a flag and takes no value, got"),
    ("unrecognized arguments:", "unknown arguments (not options of this command):"),
)


def check_compile_cache(path: str) -> str | None:
    """Why a `--compile-cache` the user named cannot be used, or `None` (it can, or it will be created)."""
    if not path.strip():
        return f"--compile-cache must name a folder or be '{_OFF}', got {path!r}"
    if path == _OFF:
        return None
    folder = pathlib.Path(path)
    if folder.exists() and not folder.is_dir():
        return f"--compile-cache {path!r} is a file: expected a folder (or '{_OFF}')"
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--compile-cache {path!r} lies under the file {str(parent)!r}: expected a folder (or '{_OFF}')"
    return None


class _Version(argparse.Action):
    """`--version`: computed when asked (it starts JAX's backend), then exit 0."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="janssen", description="Ptychographic reconstruction in JAX.")
    parser.add_argument(
        "--version", action=_Version, help="print the versions of janssen and JAX and the default device, and exit"
    )
    parser.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help="folder of JAX's persistent compilation cache, so that a later run with the same shapes "
        f"compiles nothing ('{_OFF}': none; default: $JANSSEN_COMPILE_CACHE or ~/.cache/janssen/jax/<processor kind>)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_simulate_parser(subparsers)
    add_reconstruct_parser(subparsers)
    add_demo_parser(subparsers)
    add_report_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the `janssen` command with `argv` (default: `sys.argv[1:]`); return its exit code.

    With `argv` left out (the `janssen` script, `python -m janssen`) the command owns the
    process and gives memory back between the phases of a run (`janssen.cli._memory`);
    called from Python with a list, it leaves the caller's allocator and compiled programs alone.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compile_cache is not None:
        problem = check_compile_cache(args.compile_cache)
        if problem is not None:
            print(f"janssen: error: {problem}", file=sys.stderr)
            return 2
    if argv is None:  # the process's own command line: the command owns the process
        own_process()  # freed arrays go back to the system (`janssen.cli._memory`)
    try:
        with loading():  # the subcommand's modules, JAX with them
            handler = args.handler.load()
            use_compile_cache(args.compile_cache or default_compile_cache())
        return int(handler(args) or 0)
    except KeyboardInterrupt:  # before a command's own handling starts, or in one without it
        print(f"janssen {args.command}: interrupted; nothing more was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
