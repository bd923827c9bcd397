"""docs/refusals.md, "What janssen refuses, and why", from the table that tests/test_refusals.py runs.

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


def _table():
    spec = importlib.util.spec_from_file_location("test_refusals", ROOT / "tests" / "test_refusals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REFUSALS


def _plain(text: str) -> str:
    return text.replace("{data}", "data.cxi").replace("{dir}/", "").replace("|", "\\|")


def _setup(refusal) -> str:
    notes = []
    for name, content in refusal.files:
        if content in ("cxi", "result", "corrupt", "empty-hdf5", "folder", "npy-8x8"):
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
    return _INTRO + "\n".join(rows) + "\n"


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
