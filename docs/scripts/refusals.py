"""docs/refusals.md, "What janssen refuses, and why", from the tables that tests/test_refusals.py and
tests/test_sweep.py run.

    python docs/scripts/refusals.py [--check]

`--check` writes nothing and exits 1 when the page differs from the table.
"""

import argparse
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "refusals.md"

_INTRO = """# What janssen refuses, and why

The command checks what it is given before it reads or writes anything large: a mistake
costs a second, not a run, and never destroys a file. Each refusal is one line on standard
error, `janssen COMMAND: error: ...`, naming the argument or the HDF5 path, what was
expected and what was received, with no traceback; the folder is left exactly as it was.
Every row below is run by `tests/test_refusals.py` (which checks all of that), and this
page is written from the same table by `docs/scripts/refusals.py`.

In the commands, `data.cxi` is a far-field CXI file of 16 frames of 32 x 32 pixels.
Exit codes: 2 for a refused input, 7 when another run is writing the same result
(see [the command's exit codes](cli.md#exit-codes)).

| What you do | Command | Exit | The message says | Why |
|---|---|---|---|---|
"""


_BOUNDS = """
## Bounds on counts and sizes

A count far beyond what a run can use is refused with the bound and the reason in the
message, before anything is loaded:

| What | Bound | Why |
|---|---|---|
| `--iterations` (`reconstruct`, `demo`; `iterations` in a config; `[engine]` counts such as `cg_maxiter`, `probe_delay`) | 0 to 100000 | each iteration is a full pass over the frames; the default schedule converges within a few hundred, and 100000 passes take days |
| `--modes` (`reconstruct`, `simulate`) | 1 to 32, and no more than the frames | each mode is a whole probe to refine: a few carry all but a percent of a real beam's power, and more modes than frames cannot be determined |
| the object grid | 2**28 pixels (2 GiB as complex64) | `janssen.io.check_geometry`, before anything is allocated: a larger grid is translations in the wrong unit |
| the scan step | under one frame width (median, in object pixels) | frames that do not overlap are not ptychography: translations in mm, or a wrong distance, wavelength or pixel size |
| `--learning-rate` | > 0, finite | no upper bound: too large a rate is stopped at run time (exit 3 non-finite, 4 diverged), keeping the best state |
| `--noise-std` | (0, 1e6] sqrt(counts) | 1e6 is the noise of 1e12 counts in one pixel |
| `--distance`, `--focus-to-sample` | (0, 100] m | a larger distance is millimetres |
| `simulate --photons` | 1 to 1e12 counts per frame | below 1 the detector is empty; above 1e12 beyond any detector |
| `simulate --coherence-width` | (0, 1 mm] | the width is in metres: 180 (nm) would be 180 m |
| `--seed` | 0 to 4294967295 | seeds are 32-bit PRNG keys: a larger one repeats a smaller one |
"""  # noqa: E501 (Markdown table rows)

_SWEEP = """
## The sweep

`tests/test_sweep.py` tries {total} inputs as a new user might: every option of every
subcommand with each class of bad value that applies to it (missing value, wrong type,
empty string, negative, zero, NaN, inf, absurdly large, out of range, a path that does not
exist, a folder where a file is expected and the reverse, the input as the output), every
config key with wrong types and ranges (and misspelt keys, and `[engine]` parameters), and
every CXI field the reader uses with missing, wrong dtype, wrong shape, NaN, negative, zero,
contradictory values and unit slips. Each of the {refused} refusals must end with exit 2
(7 for a held lock) and one line naming the argument, key or HDF5 path, what was expected
and what was received, with no traceback and the folder unchanged; the {accepted} valid edges
(`--seed 0`, `--iterations 0`, a CXI file without its optional fields...) must be accepted.

| Argument, key or field | Cases | Classes |
|---|---|---|
"""


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table():
    return _module("test_refusals").REFUSALS


def _sweep() -> str:
    cases = _module("test_sweep").CASES
    groups: dict[str, list[str]] = {}
    for case in cases:
        groups.setdefault(case.group, []).append(case.kind)
    accepted = sum(case.code == 0 for case in cases)
    text = _SWEEP.format(total=len(cases), refused=len(cases) - accepted, accepted=accepted)
    rows = [f"| `{group}` | {len(kinds)} | {_plain(', '.join(kinds))} |" for group, kinds in groups.items()]
    return text + "\n".join(rows) + "\n"


def _plain(text: str) -> str:
    return text.replace("{data}", "data.cxi").replace("{dir}/", "").replace("|", "\\|")


def _setup(refusal) -> str:
    notes = []
    for name, content in refusal.files:
        # Files the "What you do" column describes (a copy of the data, a result file, ...).
        kinds = ("cxi", "result", "corrupt", "empty-hdf5", "folder", "npy-8x8")
        if content in kinds or content.startswith(("result-", "streamed-result")):
            continue
        notes.append(f"`{name}`: `{content.strip()}`")
    return f" ({'; '.join(notes)})" if notes else ""


def render() -> str:
    """The page's Markdown."""
    rows = []
    for refusal in _table():
        command = _plain("janssen " + " ".join(refusal.argv))
        rows.append(
            f"| {_plain(refusal.doing)}{_plain(_setup(refusal))} | `{command}` | {refusal.code} | "
            f"{_plain(refusal.message)} | {_plain(refusal.why)} |"
        )
    return _INTRO + "\n".join(rows) + "\n" + _BOUNDS + _sweep()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/refusals.md is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        return 0 if PAGE.exists() and PAGE.read_text() == text else 1
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
