"""What every subcommand checks its arguments against: file names and the bounds on counts."""

import argparse
import pathlib

#: The most iterations one command runs (`--iterations`, `iterations` in a config, `[engine]` iteration
#: counts): each is a full pass over the frames, the default schedule converges within a few hundred,
#: and 100000 passes of even a small dataset take days; a larger count is a typo.
MAX_ITERATIONS = 100_000
#: The most probe modes (`--modes`): each is a whole probe to refine, and a few carry all but a
#: percent of a real beam's power; more cannot be determined from the data and run for hours.
MAX_MODES = 32


def path_argument(value: str) -> pathlib.Path:
    """An argparse `type` for file and folder names: an empty name is refused (`Path("")` is the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"expected a file or folder name, got {value!r}")
    return pathlib.Path(value)
