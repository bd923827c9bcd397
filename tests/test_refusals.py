"""What the command refuses, and why: every case of the table is run through `janssen.cli.main`.

Each case must exit with its code and one line on stderr that names the argument or the
HDF5 path and contains the expected text, with no traceback, and must leave the folder
exactly as it was (nothing written, nothing replaced). The same table is docs/refusals.md
(written by docs/scripts/refusals.py; `test_the_docs_page_is_up_to_date`).
"""

import contextlib
import dataclasses
import json
import pathlib
import shutil

import h5py
import numpy as np
import pytest

from janssen.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One refused input.

    - `doing`: what the user did, in words (the docs' first column).
    - `argv`: the command's arguments; `{data}` is a small far-field CXI file (`data.cxi`,
      16 frames of 32 x 32) and `{dir}` the folder it is in.
    - `code`: the exit code.
    - `message`: text the one-line message contains.
    - `why`: why janssen refuses it (the docs' last column).
    - `files`: `(name, content)` made in `{dir}` first: `"cxi"` (a copy of the data),
      `"result"` (a janssen result file; `"streamed-result"`, one written by `--stream`;
      either ending `-of-copy`: recording `{dir}/copy.cxi` as its data), `"corrupt"` (the data with 20 bytes flipped),
      `"empty-hdf5"`, `"folder"`, or text.
    - `edit`: `(HDF5 path, value)` written into `{data}` first (units slipped); a value
      `"*factor"` multiplies the stored values.
    - `lock`: a result file whose lock another run holds.
    """

    doing: str
    argv: tuple[str, ...]
    code: int
    message: str
    why: str
    files: tuple[tuple[str, str], ...] = ()
    edit: tuple[str, float | str] | None = None
    lock: str | None = None


_R = ("reconstruct", "{data}")
_OUT = ("--out", "{dir}/r.h5")
_WAVELENGTH = "entry_1/instrument_1/source_1/wavelength"

REFUSALS = (
    # ---- the data file
    Refusal("data file that does not exist", ("reconstruct", "{dir}/missing.cxi", *_OUT), 2,
            "'{dir}/missing.cxi' does not exist", "nothing to read"),
    Refusal("data file that is not HDF5", ("reconstruct", "{dir}/text.cxi", *_OUT), 2,
            "is not a readable HDF5 file", "a CXI file is HDF5", files=(("text.cxi", "frames, as text"),)),
    Refusal("a damaged copy of a CXI file (20 bytes flipped)", ("reconstruct", "{dir}/flipped.cxi", *_OUT), 2,
            "CXI file '{dir}/flipped.cxi'", "HDF5 cannot read it back: the copy is damaged, not the data wrong",
            files=(("flipped.cxi", "corrupt"),)),
    Refusal("an HDF5 file without frames", ("reconstruct", "{dir}/empty.h5", *_OUT), 2,
            "lacks the diffraction frames: expected a dataset at '/entry_1/data_1/data'",
            "the frames are the measurement", files=(("empty.h5", "empty-hdf5"),)),
    Refusal("wavelength stored in nm (0.1 for 0.1 nm)", (*_R, *_OUT), 2, f"'/{_WAVELENGTH}'",
            "a wavelength over 1 mm is a unit slip, not light", edit=(_WAVELENGTH, 0.1)),
    Refusal("detector pixel stored in µm (75 for 75 µm)", (*_R, *_OUT), 2,
            "'/entry_1/instrument_1/detector_1/x_pixel_size'", "a pixel over 1 cm is a unit slip",
            edit=("entry_1/instrument_1/detector_1/x_pixel_size", 75.0)),
    Refusal("distance stored in mm (960 for 0.96 m)", (*_R, *_OUT), 2, "'/entry_1/instrument_1/detector_1/distance'",
            "a distance over 100 m is a unit slip", edit=("entry_1/instrument_1/detector_1/distance", 960.0)),
    # ---- the output
    Refusal("`--out` naming the data file", (*_R, "--out", "{data}"), 2, "a result never replaces its input",
            "the measured data would be destroyed"),
    Refusal("`--out` naming an existing file", (*_R, *_OUT), 2, "'{dir}/r.h5' already exists; pass --overwrite",
            "results are replaced only when asked", files=(("r.h5", "result"),)),
    Refusal("a figure of the result already there", (*_R, *_OUT), 2,
            "'{dir}/r_object.png' already exists; pass --overwrite", "the figures are part of the result",
            files=(("r_object.png", "an earlier run's figure"),)),
    Refusal("`--out` in a folder that does not exist", (*_R, "--out", "{dir}/nowhere/r.h5"), 2,
            "folder '{dir}/nowhere' does not exist", "found before the run, not after it"),
    Refusal("`--out` naming a folder", (*_R, "--out", "{dir}/results"), 2, "is a folder",
            "a result is a file", files=(("results", "folder"),)),
    Refusal("a second run on the same `--out`", (*_R, *_OUT), 7, "is being written by another janssen run",
            "two runs would overwrite each other's checkpoints", lock="r.h5"),
    # ---- arguments and config
    Refusal("`--seed 99999999999999999999`", (*_R, *_OUT, "--seed", "99999999999999999999"), 2,
            "--seed must be an integer from 0 to 4294967295", "seeds are 32-bit: a larger one repeats a smaller one"),
    Refusal("`--seed -1`", (*_R, *_OUT, "--seed", "-1"), 2, "--seed must be an integer from 0",
            "a negative seed is the same key as 2**32 - 1"),
    Refusal("`--modes 500`", (*_R, *_OUT, "--modes", "500"), 2, "--modes must be an integer from 1 to 32",
            "each mode is a whole probe to refine: 500 runs for hours and cannot be determined"),
    Refusal("`--modes 20` on 16 frames", (*_R, *_OUT, "--modes", "20"), 2, "--modes 20 exceeds the 16 frames",
            "each mode has as many unknowns as a frame has pixels"),
    Refusal("`--modes 20` on 16 frames, streamed (`--stream`)", (*_R, *_OUT, "--stream", "--modes", "20"), 2,
            "--modes 20 exceeds the 16 frames", "the same check as in memory, on the open file's frame count"),
    Refusal("`--iterations -1`", (*_R, *_OUT, "--iterations", "-1"), 2, "--iterations must be an integer from 0",
            "a count of iterations"),
    Refusal("`--iterations 1000000`", (*_R, *_OUT, "--iterations", "1000000"), 2,
            "--iterations must be an integer from 0 to 100000",
            "each iteration is a full pass over the frames: 100000 of them take days; more is a typo"),
    Refusal("`[engine]` value of the wrong type (`alpha = \"x\"`)", (*_R, *_OUT, "--config", "{dir}/run.toml"), 2,
            "[engine] parameter 'alpha' of RPIE must be a finite number, got 'x'", "read as given, never guessed",
            files=(("run.toml", '[engine]\nname = "rpie"\nalpha = "x"\n'),)),
    Refusal("translations in mm (steps wider than a frame)", (*_R, *_OUT), 2,
            "object pixels apart (median), expected less than the 32-pixel frame",
            "frames that do not overlap are not ptychography; the object grid would be huge",
            edit=("entry_1/sample_1/geometry_1/translation", "*1000")),
    Refusal("photon energy in eV beside the wavelength", (*_R, *_OUT), 2,
            "'/entry_1/instrument_1/source_1/energy' contradicts", "contradictions are never resolved by a guess",
            edit=("entry_1/instrument_1/source_1/energy", 12398.4)),
    Refusal("`--learning-rate` with a PIE engine", (*_R, *_OUT, "--engine", "rpie", "--learning-rate", "0.1"), 2,
            "--learning-rate applies to the gradient engines", "PIE engines have steps, set in [engine]"),
    Refusal("`--learning-rate 0`", (*_R, *_OUT, "--engine", "adam", "--learning-rate", "0"), 2,
            "--learning-rate (config key 'learning_rate') must be a finite number > 0", "nothing would move"),
    Refusal("`--noise-std` without `--uncertainty`", (*_R, *_OUT, "--noise-std", "0.5"), 2,
            "--noise-std needs --uncertainty", "it is only used for the uncertainty map"),
    Refusal("config value of the wrong type (`seed = \"abc\"`)", (*_R, *_OUT, "--config", "{dir}/run.toml"), 2,
            "key 'seed' must be an integer, got 'abc' (str)", "read as given, never guessed",
            files=(("run.toml", 'seed = "abc"\n'),)),
    Refusal("config flag as a string (`batched = \"no\"`)", (*_R, *_OUT, "--config", "{dir}/run.toml"), 2,
            "key 'batched' must be true or false, got 'no'", "the string \"no\" would read as true",
            files=(("run.toml", 'batched = "no"\n'),)),
    Refusal("config list of numbers (`refine = 5`)", (*_R, *_OUT, "--config", "{dir}/run.toml"), 2,
            "key 'refine' must be a string or a list of strings", "names of parts to refine",
            files=(("run.toml", "refine = 5\n"),)),
    Refusal("config key misspelt (`sed = 3`)", (*_R, *_OUT, "--config", "{dir}/run.toml"), 2, "unknown key 'sed'",
            "a misspelt key would be ignored silently", files=(("run.toml", "sed = 3\n"),)),
    Refusal("config that is not TOML", (*_R, *_OUT, "--config", "{dir}/run.toml"), 2, "is not valid TOML",
            "read as given, never guessed", files=(("run.toml", "iterations: 5\n"),)),
    Refusal("`--resume` of a data file", (*_R, "--resume", "{data}", *_OUT), 2, "is not a janssen result file",
            "a checkpoint holds the engine's state"),
    Refusal("`--resume` of a file that does not exist", (*_R, "--resume", "{dir}/gone.h5"), 2,
            "result file '{dir}/gone.h5' does not exist", "nothing to continue"),
    Refusal("`--stream` with a gradient engine", (*_R, *_OUT, "--stream", "--engine", "adam"), 2,
            "--stream runs the PIE engines only", "their closed-form updates need no step tuned to the whole scan"),
    Refusal("`--resume` of a result made without `--stream`, with `--stream`",
            (*_R, "--stream", "--resume", "{dir}/r.h5"), 2,
            "was written by a run without --stream: continue it without --stream",
            "--stream continues a streamed run's epochs only", files=(("r.h5", "result"),)),
    Refusal("`--resume` of a streamed result, without `--stream`", (*_R, "--resume", "{dir}/r.h5"), 2,
            "was written by a streamed run (--stream): continue it with --stream",
            "its checkpoint counts epochs of batches", files=(("r.h5", "streamed-result"),)),
    Refusal("`--resume` on another data file than the result's", (*_R, "--resume", "{dir}/r.h5"), 2,
            "was refined against the data file '{dir}/copy.cxi', not '{data}'",
            "a result continues on the frames it was refined against",
            files=(("copy.cxi", "cxi"), ("r.h5", "result-of-copy"))),
    Refusal("`--resume` on another data file, streamed (`--stream`)", (*_R, "--stream", "--resume", "{dir}/r.h5"), 2,
            "was refined against the data file '{dir}/copy.cxi', not '{data}'",
            "the same check as in memory, before the data file is opened",
            files=(("copy.cxi", "cxi"), ("r.h5", "streamed-result-of-copy"))),
    Refusal("`--stream-batch` without `--stream`", (*_R, *_OUT, "--stream-batch", "64"), 2,
            "--stream-batch needs --stream", "the frames would be read into memory, not in batches"),
    Refusal("`--stream --stream-batch 0`", (*_R, *_OUT, "--stream", "--stream-batch", "0"), 2,
            "--stream-batch (config key 'stream_batch') must be an integer from 1 to 100000",
            "a batch holds at least one position"),
    Refusal("translations in mm, streamed (`--stream`)", (*_R, *_OUT, "--stream"), 2,
            "object pixels apart (median), expected less than the 32-pixel frame",
            "checked on the positions before any frame is read",
            edit=("entry_1/sample_1/geometry_1/translation", "*1000")),
    Refusal("`--probe` of the wrong shape", (*_R, *_OUT, "--probe", "{dir}/probe.npy"), 2,
            "probe '{dir}/probe.npy' must be (y, x) or (modes, y, x) with frames (32, 32)",
            "the probe lives on the detector grid", files=(("probe.npy", "npy-8x8"),)),
    Refusal("`--probe` of the wrong shape, streamed (`--stream`)",
            (*_R, *_OUT, "--stream", "--probe", "{dir}/probe.npy"), 2,
            "probe '{dir}/probe.npy' must be (y, x) or (modes, y, x) with frames (32, 32)",
            "the same check as in memory, before any frame is read", files=(("probe.npy", "npy-8x8"),)),
    # ---- the other commands
    Refusal("`demo --iterations -1`", ("demo", "--out", "{dir}/demo", "--iterations", "-1"), 2,
            "--iterations must be an integer from 0 to 100000", "refused before its folder is made"),
    Refusal("`demo` over an earlier demo", ("demo", "--out", "{dir}/demo"), 2,
            "'{dir}/demo/demo.h5' already exists; pass --overwrite", "results are replaced only when asked",
            files=(("demo", "folder"), ("demo/demo.h5", "result"))),
    Refusal("`simulate --seed 99999999999999999999`",
            ("simulate", "--size", "small", "--seed", "99999999999999999999", "--out", "{dir}/s.cxi"), 2,
            "--seed must be an integer from 0 to 4294967295", "seeds are 32-bit"),
    Refusal("`simulate --modes 500`",
            ("simulate", "--size", "small", "--modes", "500", "--out", "{dir}/s.cxi"), 2,
            "--modes must be an integer from 1 to 32", "each mode is a whole probe"),
    Refusal("`simulate --coherence-width 180` (nm for m)",
            ("simulate", "--size", "small", "--coherence-width", "180", "--out", "{dir}/s.cxi"), 2,
            "--coherence-width must be at most 0.001 m", "a width over 1 mm is a unit slip"),
    Refusal("`simulate` over an existing file", ("simulate", "--size", "small", "--out", "{data}"), 2,
            "'{data}' already exists; pass --overwrite", "the measured data would be destroyed"),
)  # fmt: skip


def _make(path: pathlib.Path, content: str, data: pathlib.Path) -> None:
    if content == "folder":
        path.mkdir()
    elif content == "cxi":
        shutil.copy(data, path)
    elif content.startswith(("result", "streamed-result")):
        from janssen.io import write_result

        # What the command records: streamed or not, and the data file (a copy beside it).
        cli = {"modes": 1, "near_field": False}
        if content.startswith("streamed"):
            cli["stream"] = {"batch_size": 4, "epochs": 1}
        if content.endswith("-of-copy"):
            cli["data"] = str(path.parent / "copy.cxi")
        write_result(path, object=np.ones((4, 4)), probe=np.ones((2, 2)), positions=np.zeros((1, 2)),
                     loss=np.ones(1), wavelength=1e-10, distance=1.0, object_pixel_size=[1e-8, 1e-8],
                     attrs={"iteration": 1, "cli": json.dumps(cli)})  # fmt: skip
    elif content == "corrupt":
        raw = bytearray(data.read_bytes())
        for index in np.random.default_rng(0).integers(0, len(raw), 20):
            raw[index] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif content == "empty-hdf5":
        with h5py.File(path, "w") as handle:
            handle["cxi_version"] = 160
    elif content == "npy-8x8":
        np.save(path, np.ones((8, 8), np.complex64))
    else:
        path.write_text(content)


def _snapshot(folder: pathlib.Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _argv(refusal: Refusal, folder: pathlib.Path) -> list[str]:
    return [word.format(data=folder / "data.cxi", dir=folder) for word in refusal.argv]


@pytest.mark.parametrize("refusal", REFUSALS, ids=[refusal.doing for refusal in REFUSALS])
def test_refused(refusal, cxi_file, tmp_path, capsys):
    folder = tmp_path
    shutil.copy(cxi_file, folder / "data.cxi")
    for name, content in refusal.files:
        _make(folder / name, content, cxi_file)
    if refusal.edit is not None:
        with h5py.File(folder / "data.cxi", "r+") as handle:
            name, value = refusal.edit
            scaled = isinstance(value, str)  # "*factor": the stored values times factor
            handle[name][()] = handle[name][()] * float(value[1:]) if scaled else value
    with contextlib.ExitStack() as stack:
        if refusal.lock is not None:
            from janssen.cli._output import output_lock

            stack.enter_context(output_lock(folder / refusal.lock))
        before = _snapshot(folder)
        code = main(_argv(refusal, folder))
        after = _snapshot(folder)
    captured = capsys.readouterr()
    # The run's first line, what was read (`data: N frames of ...`), may precede a refusal found later.
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith("data: ")]
    assert code == refusal.code, captured.err
    assert len(lines) == 1 and lines[0].startswith("janssen "), captured.err
    assert refusal.message.format(data=folder / "data.cxi", dir=folder) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert after == before  # nothing written, nothing replaced


def test_argparse_refusals_name_the_flag(capsys):
    """Choices and types that argparse checks: exit 2, the flag named, no traceback."""
    for argv, flag in ((["reconstruct", "x.cxi", "--engine", "fast"], "--engine"),
                       (["reconstruct", "x.cxi", "--iterations", "ten"], "--iterations")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err


def test_the_docs_page_is_up_to_date():
    import importlib.util

    spec = importlib.util.spec_from_file_location("refusals_page", ROOT / "docs" / "scripts" / "refusals.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    assert (ROOT / "docs" / "refusals.md").read_text() == page.render(), (
        "docs/refusals.md is out of date: run `python docs/scripts/refusals.py`"
    )
