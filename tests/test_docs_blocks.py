"""Every ```python block of README.md and docs/*.md runs as written.

Each page runs in a fresh Python process (a page may change JAX's configuration, as
conventions.md does), block after block in one namespace, in a temporary folder that holds
what the pages name: `scan.cxi` (a small simulated far-field scan) and `../shared/data`
(the real data beside the checkout, when present). A block preceded by the comment
`<!-- skip-run: reason -->` is not run; a page that reads `../shared/data` skips when the
folder is absent. Bash blocks are not run here.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose blocks reconstruct for minutes (or tens of seconds); the rest run by default.
SLOW = {"geometry.md", "mixed-state.md", "scale.md", "tutorial-siemens-star.md"}
# Pages whose `scan.cxi` is written the way another program writes it (see `scan_files`).
CDTOOLS_FILE = {"own-data.md"}
SKIP_MARK = re.compile(r"<!--\s*skip-run:\s*(?P<reason>.*?)\s*-->")

# Runs the blocks given as JSON on stdin; names the failing block by its line in the page.
RUNNER = textwrap.dedent(
    """
    import json, sys, traceback
    page, blocks = json.load(sys.stdin)
    namespace = {"__name__": "__main__"}
    for block in blocks:
        if block["skip"] is not None:
            print(f"{page}:{block['line']}: skipped ({block['skip']})", flush=True)
            continue
        try:
            exec(compile(block["code"], f"{page}:{block['line']}", "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"FAILED: the block at {page}:{block['line']}", file=sys.stderr)
            sys.exit(1)
        print(f"{page}:{block['line']}: ran", flush=True)
    """
)


def python_blocks(text: str) -> list[dict]:
    """The ```python blocks of a Markdown page: first line's number, code, skip reason or None."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        if lines[index].strip() != "```python":
            index += 1
            continue
        before = [line for line in lines[:index] if line.strip()]
        mark = SKIP_MARK.fullmatch(before[-1].strip()) if before else None
        end = next(k for k in range(index + 1, len(lines)) if lines[k].strip() == "```")
        blocks.append(
            {
                "line": index + 2,
                "code": "\n".join(lines[index + 1 : end]) + "\n",
                "skip": mark["reason"] if mark else None,
            }
        )
        index = end + 1
    return blocks


def run_blocks(name: str, blocks: list[dict], folder: pathlib.Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg", JANSSEN_COMPILE_CACHE="off")
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps([name, blocks]),
        capture_output=True,
        text=True,
        cwd=folder,
        env=env,
        timeout=1800,
    )


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    """The `scan.cxi` files the pages open: the small preset (100 positions of 64 x 64).

    `"janssen"` is written by `write_cxi`; `"cdtools"` as CDTools would write it (rows along
    -y, columns along -x, no detector `basis_vectors`), the file own-data.md fixes.
    """
    import h5py
    import jax.random as jr

    from janssen.io import simulate_preset, write_cxi

    data = simulate_preset("small", key=jr.PRNGKey(0)).data
    folder = tmp_path_factory.mktemp("scan")
    write_cxi(folder / "janssen.cxi", data)
    write_cxi(folder / "cdtools.cxi", data, detector_axes=("-y", "-x"))
    with h5py.File(folder / "cdtools.cxi", "r+") as f:
        del f["entry_1/instrument_1/detector_1/basis_vectors"]
    return {"janssen": folder / "janssen.cxi", "cdtools": folder / "cdtools.cxi"}


def page_folder(page: pathlib.Path, tmp_path: pathlib.Path, scan_files: dict) -> pathlib.Path:
    """A working folder with `scan.cxi` in it and `../shared` beside it (when it exists)."""
    work = tmp_path / "work"
    work.mkdir()
    kind = "cdtools" if page.name in CDTOOLS_FILE else "janssen"
    (work / "scan.cxi").write_bytes(scan_files[kind].read_bytes())
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)
    return work


def _page_params():
    for page in PAGES:
        if not python_blocks(page.read_text()):
            continue  # nothing to run
        marks = [pytest.mark.slow] if page.name in SLOW else []
        yield pytest.param(page, id=page.name, marks=marks)


@pytest.mark.parametrize("page", list(_page_params()))
def test_page_blocks_run(page, tmp_path, scan_files):
    blocks = python_blocks(page.read_text())
    if any("../shared/data" in block["code"] for block in blocks) and not (SHARED / "data").is_dir():
        pytest.skip(f"{page.name} reads the real data in {SHARED / 'data'}, which is absent")
    name = str(page.relative_to(ROOT))
    done = run_blocks(name, blocks, page_folder(page, tmp_path, scan_files))
    assert done.returncode == 0, f"{name}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    # Every block was either run or skipped for its stated reason, in order.
    reports = [line for line in done.stdout.splitlines() if line.startswith(f"{name}:")]
    expected = [f"{name}:{b['line']}: " + ("ran" if b["skip"] is None else f"skipped ({b['skip']})") for b in blocks]
    assert reports == expected


def test_extraction_finds_blocks_lines_and_skip_marks():
    text = "# t\n\n```python\nx = 1\n```\n\n<!-- skip-run: needs a cluster -->\n\n```python\ny = 2\nz = 3\n```\n"
    text += "```bash\nls\n```\n"
    assert python_blocks(text) == [
        {"line": 4, "code": "x = 1\n", "skip": None},
        {"line": 10, "code": "y = 2\nz = 3\n", "skip": "needs a cluster"},
    ]


def test_runner_shares_a_namespace_and_names_the_failing_block(tmp_path):
    blocks = [
        {"line": 3, "code": "a = 2\n", "skip": None},
        {"line": 9, "code": "assert a == 2\nb = a + undefined_name\n", "skip": None},
        {"line": 15, "code": "raise SystemExit(0)\n", "skip": None},
    ]
    done = run_blocks("page.md", blocks, tmp_path)
    assert done.returncode == 1
    assert "FAILED: the block at page.md:9" in done.stderr
    assert "NameError: name 'undefined_name' is not defined" in done.stderr
    assert done.stdout.splitlines() == ["page.md:3: ran"]


def test_skip_marks_are_rare():
    # The mark is for blocks that cannot run on one machine; everything else must run.
    skipped = [(page.name, b["line"]) for page in PAGES for b in python_blocks(page.read_text()) if b["skip"]]
    assert len(skipped) <= 2, skipped
