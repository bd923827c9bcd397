"""How `janssen reconstruct` and `janssen demo` end: their exit codes and the errors that choose them."""

#: Exit codes of `janssen reconstruct` and `janssen demo` (docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_REFUSED = 2
EXIT_NONFINITE = 3
EXIT_DIVERGED = 4
EXIT_POSITIONS_OFF_OBJECT = 5
EXIT_WRITE_FAILED = 6
EXIT_BUSY = 7
EXIT_INTERRUPTED = 130  # the shell's codes for a run stopped by SIGINT and by SIGTERM
EXIT_TERMINATED = 143
# A run that stopped on its own for one of these `RESULTS` (by name) exits with its code.
STOP_CODES = {
    "nonfinite": EXIT_NONFINITE,
    "diverged": EXIT_DIVERGED,
    "positions_off_object": EXIT_POSITIONS_OFF_OBJECT,
}


class UsageError(Exception):
    """A bad argument, config or input file: reported in one line, exit code 2."""


class BusyError(UsageError):
    """Another run holds the output's lock: exit code 7."""


class WriteError(Exception):
    """A result file could not be written (disk full, permissions): exit code 6."""
