"""What every subcommand checks its arguments against: file names, the bounds on counts, the choices.

Imports nothing of JAX or janssen: the parsers (`_parsers`) use it before either is loaded.
"""

import argparse
import pathlib

#: The most iterations one command runs (`--iterations`, `iterations` in a config, `[engine]` iteration
#: counts): each is a full pass over the frames, the default schedule converges within a few hundred,
#: and 100000 passes of even a small dataset take days; a larger count is a typo.
MAX_ITERATIONS = 100_000
#: The most probe modes (`--modes`): each is a whole probe to refine, and a few carry all but a
#: percent of a real beam's power; more cannot be determined from the data and run for hours.
MAX_MODES = 32
#: Iterations between the checkpoints `janssen reconstruct` writes into its result file.
CHECKPOINT_EVERY = 10
#: `--engine auto`: `janssen.invert.default_schedule`.
AUTO = "auto"
#: `--engine`'s choices: "auto" and `janssen.invert.ENGINE_NAMES`, written out so that the parser
#: needs no JAX (`tests/test_cli_settings.py` checks that they are the registry's names).
ENGINE_CHOICES = (
    "adam",
    AUTO,
    "curvature",
    "epie",
    "gauss-newton",
    "lm",
    "mpie",
    "optx-dogleg",
    "optx-gn",
    "optx-lm",
    "phase-field",
    "rpie",
    "sgd",
)
#: The PIE engines among them (checked against the registry's classes by the same test).
PIE_ENGINES = ("epie", "mpie", "rpie")
#: Iterations of a named engine (or epochs of a streamed run) when `--iterations` is not given.
DEFAULT_ITERATIONS = 50
LOSSES = ("amplitude", "poisson", "intensity")
PROPAGATORS = ("fresnel", "angular_spectrum")
#: `janssen simulate --size`: `janssen.io.simulate_preset`'s presets.
SIMULATE_SIZES = ("small", "medium", "large", "xlarge")


def path_argument(value: str) -> pathlib.Path:
    """An argparse `type` for file and folder names: an empty name is refused (`Path("")` is the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"expected a file or folder name, got {value!r}")
    return pathlib.Path(value)
