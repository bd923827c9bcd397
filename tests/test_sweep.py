"""The refusal sweep: every option, config key and CXI field the command reads, given bad values.

Generated, not hand-picked: each option of each subcommand (`janssen`, `reconstruct`,
`demo`, `simulate`, `report`) is crossed with the classes of bad values that apply to it
(missing value, wrong type, empty string, negative, zero, NaN, inf, absurdly large, out of
range, a path that does not exist, a folder where a file is expected and the reverse, the
input as the output), every config key with wrong types and ranges (and misspelt keys),
and every CXI field the reader uses with missing / wrong dtype / wrong shape / NaN /
negative / zero / contradictory values and unit slips.

Each case runs in-process through `janssen.cli.main` and must end with exit 2 (7 for a
held lock) and exactly one line on stderr that starts with `janssen`, names the argument,
config key or HDF5 path, says what was expected (and, where a value was given, what was
received), with no traceback, leaving the folder byte-identical. Nothing long runs: the
point where a command would start its real work (the engine loop, the demo, writing the
simulated file, drawing the report's figures) raises `_Accepted`, so an input that is not
refused shows up as a failure in a fraction of a second. The few `ACCEPTED` cases are
honest edge values (`--seed 0`, a CXI file without optional fields) that must *not* be
refused. docs/refusals.md summarises the counts per class (`SUMMARY`).
"""

import collections
import contextlib
import dataclasses
import pathlib
import shutil
import signal
from collections.abc import Callable

import h5py
import numpy as np
import pytest

from janssen.cli import main

ACCEPTED = 0  # `Case.code` of an input that must be accepted (the command reaches its real work)


@dataclasses.dataclass(frozen=True)
class Case:
    """One input of the sweep.

    - `group`, `kind`: where (`reconstruct --modes`, `config`, `CXI distance`) and the class
      of bad value (`negative`, `NaN`, `missing value`...): the summary's rows and columns.
    - `argv`: the arguments; `{data}` is `data.cxi` (16 frames of 32 x 32), `{dir}` its folder.
    - `names`: text the one line must contain: the argument, key or HDF5 path.
    - `received`: text the line must contain too, the value received (`None`: not checked).
    - `code`: the exit code (2; 7 for a held lock; `ACCEPTED` for a valid edge).
    - `files`: `(name, content)` made in `{dir}` first (see `_make`).
    - `edit`: a function that edits `data.cxi` (an `h5py.File` opened `r+`) first.
    """

    group: str
    kind: str
    argv: tuple[str, ...]
    names: str = ""
    received: str | None = None
    code: int = 2
    files: tuple[tuple[str, str], ...] = ()
    edit: Callable[[h5py.File], None] | None = None

    @property
    def id(self) -> str:
        return f"{self.group}: {self.kind}"


# ---- the options of the subcommands ------------------------------------------------------

_R = ("reconstruct", "{data}", "--out", "{dir}/r.h5")

# Bad values of an integer count, a real number and a file name, with the text the message
# must show for each (what was received).
_INT_BAD = (
    ("wrong type", "ten", "ten"),
    ("empty string", "", "''"),
    ("fraction", "1.5", "1.5"),
    ("NaN", "nan", "nan"),
    ("huge", "99999999999999999999", "99999999999999999999"),
)
_FLOAT_BAD = (
    ("wrong type", "abc", "abc"),
    ("empty string", "", "''"),
    ("negative", "-1", "-1"),
    ("zero", "0", "0"),
    ("NaN", "nan", "nan"),
    ("inf", "inf", "inf"),
    ("huge", "1e300", "1e+300"),
)


def _option_cases(group: str, prefix: tuple[str, ...], flag: str, values, suffix: tuple[str, ...] = ()):
    for kind, value, received in values:
        yield Case(f"{group} {flag}", kind, (*prefix, flag, value, *suffix), flag, received)


def _missing_value(group: str, prefix: tuple[str, ...], flag: str):
    return Case(f"{group} {flag}", "missing value", (*prefix, flag), flag)


def _reconstruct_cases():
    g = "reconstruct"
    # the data file
    yield Case(f"{g} DATA", "missing", ("reconstruct",), "DATA")
    yield Case(f"{g} DATA", "empty string", ("reconstruct", "", "--out", "{dir}/r.h5"), "''")
    yield Case(f"{g} DATA", "does not exist", ("reconstruct", "{dir}/gone.cxi", "--out", "{dir}/r.h5"), "gone.cxi")
    yield Case(
        f"{g} DATA", "a folder", ("reconstruct", "{dir}/sub", "--out", "{dir}/r.h5"), "sub", files=(("sub", "folder"),)
    )
    yield Case(
        f"{g} DATA",
        "text file",
        ("reconstruct", "{dir}/t.cxi", "--out", "{dir}/r.h5"),
        "t.cxi",
        files=(("t.cxi", "frames, as text"),),
    )
    yield Case(
        f"{g} DATA",
        "damaged",
        ("reconstruct", "{dir}/c.cxi", "--out", "{dir}/r.h5"),
        "c.cxi",
        files=(("c.cxi", "corrupt"),),
    )
    yield Case(
        f"{g} DATA",
        "truncated",
        ("reconstruct", "{dir}/h.cxi", "--out", "{dir}/r.h5"),
        "h.cxi",
        files=(("h.cxi", "truncated"),),
    )
    yield Case(
        f"{g} DATA",
        "empty file",
        ("reconstruct", "{dir}/e.cxi", "--out", "{dir}/r.h5"),
        "e.cxi",
        files=(("e.cxi", ""),),
    )
    yield Case(
        f"{g} DATA",
        "a result file",
        ("reconstruct", "{dir}/res.h5", "--out", "{dir}/r.h5"),
        "res.h5",
        files=(("res.h5", "result"),),
    )
    yield Case(
        f"{g} DATA",
        "npz without the arrays",
        ("reconstruct", "{dir}/s.npz", "--out", "{dir}/r.h5"),
        "s.npz",
        files=(("s.npz", "npz-other"),),
    )
    yield Case(
        f"{g} DATA",
        "bz2 that is text",
        ("reconstruct", "{dir}/s.npz.bz2", "--out", "{dir}/r.h5"),
        "s.npz.bz2",
        files=(("s.npz.bz2", "not bz2"),),
    )
    # --config (the keys are swept below)
    yield _missing_value(g, _R, "--config")
    yield Case(f"{g} --config", "empty string", (*_R, "--config", ""), "--config", "''")
    yield Case(f"{g} --config", "does not exist", (*_R, "--config", "{dir}/gone.toml"), "gone.toml")
    yield Case(f"{g} --config", "a folder", (*_R, "--config", "{dir}/sub"), "sub", files=(("sub", "folder"),))
    yield Case(f"{g} --config", "binary file (the data)", (*_R, "--config", "{data}"), "--config")
    yield Case(
        f"{g} --config", "not TOML", (*_R, "--config", "{dir}/c.toml"), "c.toml", files=(("c.toml", "iterations: 5\n"),)
    )
    # --engine, --loss, --propagator: choices
    for flag, extra in (("--engine", ()), ("--loss", ("--engine", "adam")),
                        ("--propagator", ("--near-field",))):  # fmt: skip
        yield _missing_value(g, (*_R, *extra), flag)
        yield Case(f"{g} {flag}", "out-of-range choice", (*_R, *extra, flag, "fast"), flag, "fast")
        yield Case(f"{g} {flag}", "empty string", (*_R, *extra, flag, ""), flag, "''")
    # counts
    for flag in ("--iterations", "--modes", "--seed"):
        yield _missing_value(g, _R, flag)
        yield from _option_cases(g, _R, flag, _INT_BAD)
        yield Case(f"{g} {flag}", "negative", (*_R, flag, "-1"), flag, "-1")
    yield Case(f"{g} --iterations", "over the maximum", (*_R, "--iterations", "1000001"), "--iterations", "1000001")
    yield Case(f"{g} --modes", "zero", (*_R, "--modes", "0"), "--modes", "0")
    yield Case(f"{g} --modes", "over the maximum", (*_R, "--modes", "500"), "--modes", "500")
    yield Case(f"{g} --modes", "more than the frames", (*_R, "--modes", "20"), "--modes", "20")
    yield Case(f"{g} --seed", "2**32", (*_R, "--seed", "4294967296"), "--seed", "4294967296")
    # real numbers
    yield _missing_value(g, (*_R, "--engine", "adam"), "--learning-rate")
    yield from _option_cases(g, (*_R, "--engine", "adam"), "--learning-rate", _FLOAT_BAD[:-1])
    # No upper bound on a rate: too large a one is stopped at run time (exit 3 or 4, tests/test_cli_reconstruct.py).
    adam = (*_R, "--engine", "adam")
    yield Case(f"{g} --learning-rate", "huge (stopped at run time)", (*adam, "--learning-rate", "1e300"), code=ACCEPTED)
    for flag in ("--distance", "--focus-to-sample"):
        yield _missing_value(g, (*_R, "--near-field"), flag)
        yield from _option_cases(g, (*_R, "--near-field"), flag, _FLOAT_BAD)
        yield Case(f"{g} {flag}", "millimetres (960 for 0.96 m)", (*_R, "--near-field", flag, "960"), flag, "960")
        yield Case(f"{g} {flag}", "without --near-field", (*_R, flag, "0.5"), flag)
    yield _missing_value(g, (*_R, "--uncertainty"), "--noise-std")
    yield from _option_cases(g, (*_R, "--uncertainty"), "--noise-std", _FLOAT_BAD)
    # --refine
    yield _missing_value(g, _R, "--refine")
    yield Case(f"{g} --refine", "empty string", (*_R, "--refine", ""), "--refine", "''")
    yield Case(f"{g} --refine", "empty name", (*_R, "--refine", "probe,,"), "--refine", "probe,,")
    yield Case(f"{g} --refine", "misspelt name", (*_R, "--engine", "adam", "--refine", "positons"), "positons")
    yield Case(f"{g} --refine", "not for PIE", (*_R, "--refine", "positions"), "--refine", "positions")
    # --probe
    yield _missing_value(g, _R, "--probe")
    yield Case(f"{g} --probe", "empty string", (*_R, "--probe", ""), "--probe", "''")
    yield Case(f"{g} --probe", "does not exist", (*_R, "--probe", "{dir}/gone.npy"), "gone.npy")
    yield Case(f"{g} --probe", "a folder", (*_R, "--probe", "{dir}/sub"), "sub", files=(("sub", "folder"),))
    yield Case(f"{g} --probe", "text file", (*_R, "--probe", "{dir}/p.npy"), "p.npy", files=(("p.npy", "text"),))
    yield Case(f"{g} --probe", "the data file", (*_R, "--probe", "{data}"), "--probe")
    for content, kind in (("npy-8x8", "wrong shape"), ("npy-4d", "4-D"), ("npy-nan", "NaN"),
                          ("npy-zero", "zero"), ("npy-str", "strings"), ("npy-inf", "inf")):  # fmt: skip
        yield Case(f"{g} --probe", kind, (*_R, "--probe", "{dir}/p.npy"), "p.npy", files=(("p.npy", content),))
    # --out and --resume
    yield _missing_value(g, ("reconstruct", "{data}"), "--out")
    yield Case(f"{g} --out", "empty string", ("reconstruct", "{data}", "--out", ""), "--out", "''")
    yield Case(f"{g} --out", "the input file", ("reconstruct", "{data}", "--out", "{data}"), "--out")
    yield Case(
        f"{g} --out",
        "the config file",
        (*_R[:2], "--config", "{dir}/c.toml", "--out", "{dir}/c.toml"),
        "--out",
        files=(("c.toml", "seed = 1\n"),),
    )
    yield Case(
        f"{g} --out",
        "the probe file",
        (*_R[:2], "--probe", "{dir}/p.npy", "--out", "{dir}/p.npy"),
        "--out",
        files=(("p.npy", "npy-32"),),
    )
    yield Case(
        f"{g} --out", "a folder", ("reconstruct", "{data}", "--out", "{dir}/sub"), "--out", files=(("sub", "folder"),)
    )
    yield Case(f"{g} --out", "folder does not exist", ("reconstruct", "{data}", "--out", "{dir}/no/r.h5"), "--out")
    yield Case(f"{g} --out", "under a file", ("reconstruct", "{data}", "--out", "{data}/r.h5"), "--out")
    yield Case(f"{g} --out", "exists", _R, "--out", files=(("r.h5", "result"),))
    yield Case(f"{g} --out", "held by another run", _R, "r.h5", code=7, files=(("r.h5.lock", "lock"),))
    yield _missing_value(g, ("reconstruct", "{data}"), "--resume")
    yield Case(f"{g} --resume", "empty string", ("reconstruct", "{data}", "--resume", ""), "--resume", "''")
    yield Case(f"{g} --resume", "does not exist", ("reconstruct", "{data}", "--resume", "{dir}/gone.h5"), "gone.h5")
    yield Case(
        f"{g} --resume",
        "a folder",
        ("reconstruct", "{data}", "--resume", "{dir}/sub", *_R[2:]),
        "sub",
        files=(("sub", "folder"),),
    )
    yield Case(f"{g} --resume", "the data file", ("reconstruct", "{data}", "--resume", "{data}", *_R[2:]), "--resume")
    yield Case(
        f"{g} --resume",
        "text file",
        ("reconstruct", "{data}", "--resume", "{dir}/t.h5", *_R[2:]),
        "t.h5",
        files=(("t.h5", "text"),),
    )
    yield Case(
        f"{g} --resume",
        "damaged result",
        ("reconstruct", "{data}", "--resume", "{dir}/d.h5", *_R[2:]),
        "d.h5",
        files=(("d.h5", "result-truncated"),),
    )
    yield Case(
        f"{g} --resume",
        "with --geometry",
        ("reconstruct", "{data}", "--resume", "{dir}/res.h5", "--out", "{dir}/r.h5", "--geometry"),
        "--geometry",
        files=(("res.h5", "result"),),
    )
    # flags given a value, and combinations that cannot work
    for flag in ("--batched", "--near-field", "--uncertainty", "--geometry", "--overwrite"):
        yield Case(f"{g} {flag}", "given a value", (*_R, f"{flag}=yes"), flag, "yes")
    yield Case(f"{g} --batched", "with auto", (*_R, "--batched"), "--batched")
    yield Case(f"{g} --batched", "with adam", (*_R, "--engine", "adam", "--batched"), "--batched")
    yield Case(f"{g} --geometry", "with --near-field", (*_R, "--geometry", "--near-field"), "--geometry")
    yield Case(f"{g} --loss", "with a PIE engine", (*_R, "--engine", "epie", "--loss", "poisson"), "--loss")
    yield Case(f"{g} --loss", "poisson with lm", (*_R, "--engine", "lm", "--loss", "poisson"), "--loss")
    yield Case(
        f"{g} --learning-rate",
        "with a PIE engine",
        (*_R, "--engine", "rpie", "--learning-rate", "0.1"),
        "--learning-rate",
    )
    yield Case(f"{g} --noise-std", "without --uncertainty", (*_R, "--noise-std", "0.5"), "--noise-std")
    yield Case(f"{g} --propagator", "without --near-field", (*_R, "--propagator", "fresnel"), "--propagator")
    yield Case(f"{g}", "unknown option", (*_R, "--iteration-count", "5"), "--iteration-count")
    # honest edges that must be accepted
    for argv in (("--seed", "0"), ("--seed", "4294967295"), ("--iterations", "0"), ("--modes", "2"),
                 ("--engine", "adam", "--learning-rate", "1e-3")):  # fmt: skip
        yield Case(f"{g} {argv[-2]}", f"valid {argv[-1]}", (*_R, *argv), code=ACCEPTED)


def _other_cases():
    g = "janssen"
    yield Case(g, "no command", (), "command")
    yield Case(g, "unknown command", ("rebuild",), "rebuild")
    yield _missing_value(g, (), "--compile-cache")
    yield Case(f"{g} --compile-cache", "empty string", ("--compile-cache", "", *_R, "--seed", "-1"), "--compile-cache")
    yield Case(f"{g} --compile-cache", "a file", ("--compile-cache", "{data}", *_R), "--compile-cache")
    yield Case(f"{g} --compile-cache", "under a file", ("--compile-cache", "{data}/cache", *_R), "--compile-cache")
    g = "demo"
    demo = ("demo", "--out", "{dir}/demo")
    yield _missing_value(g, demo, "--iterations")
    yield from _option_cases(g, demo, "--iterations", _INT_BAD)
    yield Case(f"{g} --iterations", "negative", (*demo, "--iterations", "-1"), "--iterations", "-1")
    yield Case(f"{g} --iterations", "over the maximum", (*demo, "--iterations", "1000001"), "--iterations", "1000001")
    yield _missing_value(g, ("demo",), "--out")
    yield Case(f"{g} --out", "empty string", ("demo", "--out", ""), "--out", "''")
    yield Case(f"{g} --out", "a file", ("demo", "--out", "{data}"), "--out")
    yield Case(f"{g} --out", "under a file", ("demo", "--out", "{data}/demo"), "--out")
    yield Case(f"{g} --out", "earlier demo", demo, "demo.h5", files=(("demo", "folder"), ("demo/demo.h5", "result")))
    yield Case(
        f"{g} --out",
        "earlier figure",
        demo,
        "demo_object.png",
        files=(("demo", "folder"), ("demo/demo_object.png", "a figure")),
    )
    yield Case(f"{g} --overwrite", "given a value", (*demo, "--overwrite=yes"), "--overwrite", "yes")
    yield Case(f"{g} --iterations", "valid 0", (*demo, "--iterations", "0"), code=ACCEPTED)
    g = "simulate"
    sim = ("simulate", "--size", "small", "--out", "{dir}/s.cxi")
    yield Case(f"{g} --size", "missing", ("simulate", "--out", "{dir}/s.cxi"), "--size")
    yield _missing_value(g, ("simulate", "--out", "{dir}/s.cxi"), "--size")
    yield Case(
        f"{g} --size", "out-of-range choice", ("simulate", "--size", "huge", "--out", "{dir}/s.cxi"), "--size", "huge"
    )
    yield Case(f"{g} --size", "empty string", ("simulate", "--size", "", "--out", "{dir}/s.cxi"), "--size", "''")
    yield _missing_value(g, sim, "--photons")
    yield from _option_cases(g, sim, "--photons", _FLOAT_BAD)
    yield Case(f"{g} --photons", "under one", (*sim, "--photons", "0.5"), "--photons", "0.5")
    yield _missing_value(g, sim, "--modes")
    yield from _option_cases(g, sim, "--modes", _INT_BAD)
    for kind, value in (("negative", "-1"), ("zero", "0"), ("over the maximum", "500")):
        yield Case(f"{g} --modes", kind, (*sim, "--modes", value), "--modes", value)
    yield _missing_value(g, sim, "--coherence-width")
    yield from _option_cases(g, sim, "--coherence-width", _FLOAT_BAD)
    yield Case(
        f"{g} --coherence-width",
        "nanometres (180 for 180 nm)",
        (*sim, "--coherence-width", "180"),
        "--coherence-width",
        "180",
    )
    yield _missing_value(g, sim, "--seed")
    yield from _option_cases(g, sim, "--seed", _INT_BAD)
    yield Case(f"{g} --seed", "negative", (*sim, "--seed", "-1"), "--seed", "-1")
    yield Case(f"{g} --out", "missing", ("simulate", "--size", "small"), "--out")
    yield _missing_value(g, ("simulate", "--size", "small"), "--out")
    yield Case(f"{g} --out", "empty string", ("simulate", "--size", "small", "--out", ""), "--out", "''")
    yield Case(
        f"{g} --out",
        "a folder",
        ("simulate", "--size", "small", "--out", "{dir}/sub"),
        "--out",
        files=(("sub", "folder"),),
    )
    yield Case(
        f"{g} --out", "folder does not exist", ("simulate", "--size", "small", "--out", "{dir}/no/s.cxi"), "--out"
    )
    yield Case(f"{g} --out", "under a file", ("simulate", "--size", "small", "--out", "{data}/s.cxi"), "--out")
    yield Case(f"{g} --out", "exists", ("simulate", "--size", "small", "--out", "{data}"), "--out")
    yield Case(f"{g} --overwrite", "given a value", (*sim, "--overwrite=yes"), "--overwrite", "yes")
    yield Case(f"{g} --seed", "valid 0", (*sim, "--seed", "0"), code=ACCEPTED)
    g = "report"
    rep = ("report", "{dir}/res.h5")
    result = (("res.h5", "result"),)
    yield Case(f"{g} RESULT", "missing", ("report",), "RESULT")
    yield Case(f"{g} RESULT", "empty string", ("report", ""), "''")
    yield Case(f"{g} RESULT", "does not exist", ("report", "{dir}/gone.h5"), "gone.h5")
    yield Case(f"{g} RESULT", "a folder", ("report", "{dir}/sub"), "sub", files=(("sub", "folder"),))
    yield Case(f"{g} RESULT", "text file", ("report", "{dir}/t.h5"), "t.h5", files=(("t.h5", "text"),))
    yield Case(f"{g} RESULT", "the data file", ("report", "{data}"), "data.cxi")
    yield Case(f"{g} RESULT", "damaged", ("report", "{dir}/d.h5"), "d.h5", files=(("d.h5", "result-truncated"),))
    yield _missing_value(g, rep, "--out")
    yield Case(f"{g} --out", "empty string", (*rep, "--out", ""), "--out", "''", files=result)
    yield Case(f"{g} --out", "the result file", (*rep, "--out", "{dir}/res.h5"), "--out", files=result)
    yield Case(f"{g} --out", "the data file", (*rep, "--data", "{data}", "--out", "{data}"), "--out", files=result)
    yield Case(f"{g} --out", "a folder", (*rep, "--out", "{dir}/sub"), "--out", files=(*result, ("sub", "folder")))
    yield Case(f"{g} --out", "folder does not exist", (*rep, "--out", "{dir}/no/r.html"), "--out", files=result)
    yield _missing_value(g, rep, "--data")
    yield Case(f"{g} --data", "empty string", (*rep, "--data", ""), "--data", "''", files=result)
    yield Case(f"{g} --data", "does not exist", (*rep, "--data", "{dir}/gone.cxi"), "gone.cxi", files=result)
    yield Case(f"{g} --data", "a folder", (*rep, "--data", "{dir}/sub"), "sub", files=(*result, ("sub", "folder")))
    yield Case(f"{g} --data", "text file", (*rep, "--data", "{dir}/t.cxi"), "t.cxi", files=(*result, ("t.cxi", "text")))
    yield Case(f"{g} --data", "the result file", (*rep, "--data", "{dir}/res.h5"), "res.h5", files=result)


# ---- the config file ----------------------------------------------------------------------

# key: (the context it needs, [(kind, TOML value, text received)])
_CONFIG = {
    "engine": (
        "",
        [
            ("wrong type", "5", "5"),
            ("out-of-range choice", '"fast"', "fast"),
            ("empty string", '""', "''"),
            ("list", '["rpie"]', "rpie"),
        ],
    ),
    "iterations": (
        "",
        [
            ("wrong type", '"ten"', "ten"),
            ("fraction", "1.5", "1.5"),
            ("negative", "-1", "-1"),
            ("huge", "99999999999", "99999999999"),
            ("boolean", "true", "True"),
            ("NaN", "nan", "nan"),
        ],
    ),
    "batched": ('engine = "rpie"\n', [("string", '"no"', "no"), ("number", "1", "1")]),
    "seed": (
        "",
        [
            ("wrong type", '"abc"', "abc"),
            ("negative", "-1", "-1"),
            ("huge", "99999999999", "99999999999"),
            ("fraction", "1.5", "1.5"),
            ("boolean", "false", "False"),
        ],
    ),
    "probe": (
        "",
        [("wrong type", "5", "5"), ("empty string", '""', "''"), ("does not exist", '"gone.npy"', "gone.npy")],
    ),
    "out": ("", [("wrong type", "5", "5"), ("empty string", '""', "''"), ("the input file", '"{data}"', "data.cxi")]),
    "loss": (
        'engine = "adam"\n',
        [("wrong type", "5", "5"), ("out-of-range choice", '"cross"', "cross"), ("empty string", '""', "''")],
    ),
    "learning_rate": (
        'engine = "adam"\n',
        [
            ("wrong type", '"fast"', "fast"),
            ("boolean", "true", "True"),
            ("negative", "-1.0", "-1"),
            ("zero", "0", "0"),
            ("NaN", "nan", "nan"),
            ("inf", "inf", "inf"),
        ],
    ),
    "refine": (
        "",
        [
            ("wrong type", "5", "5"),
            ("list of numbers", "[5]", "5"),
            ("empty string", '""', "''"),
            ("empty list", "[]", "[]"),
            ("not for PIE", '"positions"', "positions"),
        ],
    ),
    "modes": (
        "",
        [
            ("wrong type", '"two"', "two"),
            ("zero", "0", "0"),
            ("negative", "-2", "-2"),
            ("over the maximum", "500", "500"),
            ("fraction", "1.5", "1.5"),
        ],
    ),
    "near_field": ("", [("string", '"yes"', "yes"), ("number", "1", "1")]),
    "distance": (
        "near_field = true\n",
        [
            ("wrong type", '"far"', "far"),
            ("negative", "-1.0", "-1"),
            ("zero", "0.0", "0"),
            ("NaN", "nan", "nan"),
            ("inf", "inf", "inf"),
            ("millimetres", "960.0", "960"),
        ],
    ),
    "focus_to_sample": (
        "near_field = true\n",
        [
            ("wrong type", '"near"', "near"),
            ("negative", "-0.1", "-0.1"),
            ("zero", "0", "0"),
            ("NaN", "nan", "nan"),
            ("inf", "inf", "inf"),
            ("millimetres", "250.0", "250"),
        ],
    ),
    "propagator": (
        "near_field = true\n",
        [("wrong type", "5", "5"), ("out-of-range choice", '"fft"', "fft"), ("empty string", '""', "''")],
    ),
    "uncertainty": ("", [("string", '"yes"', "yes"), ("number", "0", "0")]),
    "noise_std": (
        "uncertainty = true\n",
        [
            ("wrong type", '"half"', "half"),
            ("negative", "-0.5", "-0.5"),
            ("zero", "0", "0"),
            ("NaN", "nan", "nan"),
            ("inf", "inf", "inf"),
            ("huge", "1e300", "1e+300"),
        ],
    ),
    "geometry": ("", [("string", '"yes"', "yes"), ("number", "1", "1")]),
}
# [engine] tables: (engine, key, TOML value, kind, text received)
_ENGINE_PARAMS = (
    ("rpie", "alpha", '"x"', "wrong type", "x"),
    ("rpie", "alpha", "-1.0", "negative", "-1"),
    ("rpie", "alpha", "nan", "NaN", "nan"),
    ("rpie", "alpha", "true", "boolean", "True"),
    ("epie", "object_step", "inf", "inf", "inf"),
    ("epie", "probe_step", "-0.5", "negative", "-0.5"),
    ("epie", "probe_delay", "-1", "negative", "-1"),
    ("epie", "probe_delay", "1.5", "fraction", "1.5"),
    ("epie", "fix_gauge", '"no"', "string for a flag", "no"),
    ("epie", "mode", '"fast"', "out-of-range choice", "fast"),
    ("mpie", "momentum", "2.0", "out of range", "2"),
    ("lm", "initial_damping", "-1.0", "negative", "-1"),
    ("lm", "cg_maxiter", "99999999999", "huge", "99999999999"),
    ("adam", "batch_size", "0", "zero", "0"),
    ("adam", "sweep", '"yes"', "string for a flag", "yes"),
    ("adam", "learning_rates", "5", "wrong type", "5"),
    ("adam", "learning_rates", '{ probe = "fast" }', "wrong type in the table", "fast"),
    ("optx-lm", "rtol", "-1.0", "negative", "-1"),
    ("rpie", "alpah", "0.1", "misspelt key", "alpah"),
    ("auto", "alpha", "0.1", "parameters for auto", "alpha"),
)


def _config_cases():
    def toml(text: str) -> tuple[tuple[str, str], ...]:
        return (("run.toml", text),)

    argv = ("reconstruct", "{data}", "--config", "{dir}/run.toml")  # the result's name from the config or DATA
    for key, (context, values) in _CONFIG.items():
        for kind, value, received in values:
            yield Case(f"config {key}", kind, argv, key, received, files=toml(f"{context}{key} = {value}\n"))
    for key in ("sed", "Seed", "learning-rate", "iteration"):
        yield Case("config unknown key", key, argv, key, files=toml(f"{key} = 3\n"))
    yield Case("config unknown key", "a table", argv, "settings", files=toml("[settings]\nseed = 3\n"))
    yield Case("config [engine]", "name of the wrong type", argv, "name", "5", files=toml("[engine]\nname = 5\n"))
    for engine, key, value, kind, received in _ENGINE_PARAMS:
        text = f'[engine]\nname = "{engine}"\n{key} = {value}\n'
        yield Case(f"config [engine] {key}", f"{kind} ({engine})", argv, key, received, files=toml(text))
    yield Case("config", "empty file", argv, code=ACCEPTED, files=toml(""))


# ---- the CXI fields ------------------------------------------------------------------------

_DET = "entry_1/instrument_1/detector_1"
_SRC = "entry_1/instrument_1/source_1"
_TRANSLATION = "entry_1/sample_1/geometry_1/translation"
_ORIENTATION = "entry_1/sample_1/geometry_1/orientation"


def _set(name: str, value) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        if name in handle:
            del handle[name]
        handle[name] = value

    return edit


def _scale(name: str, factor: float) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        value = handle[name][()] * factor
        del handle[name]
        handle[name] = value

    return edit


def _poke(name: str, index, value) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        array = handle[name][()].astype(np.float64)
        array[index] = value
        del handle[name]
        handle[name] = array

    return edit


def _delete(*names: str) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        for name in names:
            del handle[name]

    return edit


def _both(*edits: Callable[[h5py.File], None]) -> Callable[[h5py.File], None]:
    def edit(handle: h5py.File) -> None:
        for one in edits:
            one(handle)

    return edit


def _scalar_cases(field: str, name: str, slip: tuple[str, float] | None):
    yield "missing", _delete(name)
    yield "wrong dtype (text)", _set(name, "0.5")
    yield "wrong shape (2,)", _set(name, np.array([1.0, 2.0]))
    yield "NaN", _set(name, np.nan)
    yield "negative", _set(name, -1.0)
    yield "zero", _set(name, 0.0)
    yield "inf", _set(name, np.inf)
    if slip is not None:
        yield slip[0], _scale(name, slip[1])


def _cxi_edits():
    frames = f"{_DET}/data"
    read = "/entry_1/data_1/data"  # the reader's first choice, a link to the detector's frames
    yield "frames", read, "missing", _delete(frames)
    yield "frames", read, "wrong dtype (text)", _set(frames, np.array([["a"]], dtype=object).astype("S1"))
    yield "frames", read, "wrong shape (2-D)", _set(frames, np.ones((32, 32)))
    yield "frames", read, "wrong shape (4-D)", _set(frames, np.ones((16, 1, 32, 32)))
    yield "frames", read, "no frames", _set(frames, np.ones((0, 32, 32)))
    yield "frames", read, "NaN", _poke(frames, (3, 5, 5), np.nan)
    yield "frames", read, "inf", _poke(frames, (3, 5, 5), np.inf)
    yield "frames", read, "negative", _poke(frames, (3, 5, 5), -7.0)
    yield "frames", read, "all zero", _scale(frames, 0.0)
    yield "frames", read, "complex", _scale(frames, 1 + 0j)
    yield "frames", read, "fewer than the translations", _set(frames, np.ones((15, 32, 32)))
    t = _TRANSLATION
    yield "translation", "translation", "missing", _delete(t, "entry_1/data_1/translation")
    yield "translation", f"/{t}", "wrong dtype (text)", _set(t, np.array([[b"a", b"b", b"c"]] * 16))
    yield "translation", f"/{t}", "wrong shape (16, 1)", _set(t, np.zeros((16, 1)))
    yield "translation", f"/{t}", "NaN", _poke(t, (2, 0), np.nan)
    yield "translation", f"/{t}", "inf", _poke(t, (2, 1), np.inf)
    yield "translation", f"/{t}", "micrometres", _scale(t, 1e6)
    yield "translation", f"/{t}", "nanometres", _scale(t, 1e9)
    yield "translation", f"/{t}", "millimetres", _scale(t, 1e3)
    yield (
        "translation",
        f"/{t}",
        "contradicts the soft link",
        _both(_delete("entry_1/data_1/translation"), _set("entry_1/data_1/translation", np.zeros((16, 3)) + 1e-7)),
    )
    for field, slip in (("wavelength", ("nanometres (0.1 for 0.1 nm)", 1e9)),
                        ("distance", ("millimetres (960 for 0.96 m)", 1e3)),
                        ("x_pixel_size", ("micrometres (75 for 75 um)", 1e6)),
                        ("y_pixel_size", ("millimetres (0.075 for 75 um)", 1e3))):  # fmt: skip
        name = f"{_SRC}/{field}" if field == "wavelength" else f"{_DET}/{field}"
        for kind, edit in _scalar_cases(field, name, slip):
            if kind == "missing":
                continue  # derived from the energy, the basis vectors or corner_position: accepted below
            yield field, f"/{name}", kind, edit
    energy = f"{_SRC}/energy"
    for kind, edit in _scalar_cases("energy", energy, ("electronvolts", 1 / 1.602176634e-19)):
        if kind == "missing":
            yield "energy", "energy", "missing, and no wavelength", _delete(energy, f"{_SRC}/wavelength")
            continue
        yield "energy", f"/{energy}", kind, _both(_delete(f"{_SRC}/wavelength"), edit)
    yield (
        "energy",
        f"/{energy}",
        "kiloelectronvolts",
        _both(_delete(f"{_SRC}/wavelength"), _scale(energy, 1e-3 / 1.602176634e-19)),
    )
    yield "energy", f"/{energy}", "eV beside a wavelength", _scale(energy, 1 / 1.602176634e-19)
    yield "energy", f"/{energy}", "contradicts the wavelength", _scale(energy, 2.0)
    yield "distance", f"/{_DET}/distance", "contradicts corner_position", _scale(f"{_DET}/distance", 1.5)
    yield "x_pixel_size", f"/{_DET}/x_pixel_size", "contradicts basis_vectors", _scale(f"{_DET}/x_pixel_size", 2.0)
    basis = f"{_DET}/basis_vectors"
    yield "basis_vectors", f"/{basis}", "wrong dtype (text)", _set(basis, np.array([[b"a"] * 3] * 2))
    yield "basis_vectors", f"/{basis}", "wrong shape (3, 3)", _set(basis, np.eye(3) * 75e-6)
    yield "basis_vectors", f"/{basis}", "NaN", _poke(basis, (0, 1), np.nan)
    yield "basis_vectors", f"/{basis}", "zero vector", _poke(basis, (0, 1), 0.0)
    yield "basis_vectors", f"/{basis}", "tilted out of plane", _poke(basis, (0, 2), 1e-5)
    yield "basis_vectors", f"/{basis}", "rotated 45 degrees", _set(basis, np.array([[5e-5, 5e-5, 0], [-5e-5, 5e-5, 0]]))
    yield "basis_vectors", f"/{basis}", "both along x", _set(basis, np.array([[75e-6, 0, 0], [75e-6, 0, 0]]))
    corner = f"{_DET}/corner_position"
    yield "corner_position", f"/{corner}", "wrong dtype (text)", _set(corner, np.array([b"a", b"b", b"c"]))
    yield "corner_position", f"/{corner}", "wrong shape (2,)", _set(corner, np.zeros(2))
    yield "corner_position", f"/{corner}", "NaN", _poke(corner, 0, np.nan)
    yield "corner_position", f"/{corner}", "off the beam", _poke(corner, 0, 0.0)
    yield "corner_position", f"/{corner}", "z contradicts distance", _poke(corner, 2, 0.5)
    mask = f"{_DET}/mask"
    yield "mask", f"/{mask}", "wrong dtype (text)", _set(mask, np.array([[b"a"] * 32] * 32))
    yield "mask", f"/{mask}", "wrong shape", _set(mask, np.zeros((16, 16), np.uint32))
    yield "mask", f"/{mask}", "every pixel bad", _set(mask, np.ones((32, 32), np.uint32))
    yield "mask", f"/{mask}", "NaN", _set(mask, np.full((32, 32), np.nan))
    yield "mask", f"/{mask}", "negative", _set(mask, -np.ones((32, 32)))
    yield "orientation", f"/{_ORIENTATION}", "wrong shape (5,)", _set(_ORIENTATION, np.ones(5))
    yield "orientation", f"/{_ORIENTATION}", "tilted sample", _set(_ORIENTATION, np.array([1.0, 0, 0, 0, 0, 1]))
    yield "orientation", f"/{_ORIENTATION}", "wrong dtype (text)", _set(_ORIENTATION, np.array([b"a"] * 6))
    yield "orientation", f"/{_ORIENTATION}", "NaN", _set(_ORIENTATION, np.full(6, np.nan))


# Fields whose absence is fine: derived from another field, or optional.
_CXI_ACCEPTED = (
    ("wavelength", "missing (the energy gives it)", _delete(f"{_SRC}/wavelength")),
    ("distance", "missing (corner_position's z gives it)", _delete(f"{_DET}/distance")),
    ("x_pixel_size", "missing (basis_vectors give it)", _delete(f"{_DET}/x_pixel_size", f"{_DET}/y_pixel_size")),
    ("basis_vectors", "missing (frames in janssen's frame)", _delete(f"{_DET}/basis_vectors")),
    ("corner_position", "missing", _delete(f"{_DET}/corner_position")),
    ("mask", "missing", _delete(f"{_DET}/mask")),
    ("mask", "one per frame", _set(f"{_DET}/mask", np.zeros((16, 32, 32), np.uint32))),
    ("cxi_version", "missing", _delete("cxi_version")),
)


def _cxi_cases():
    for field, names, kind, edit in _cxi_edits():
        yield Case(f"CXI {field}", kind, _R, names, edit=edit)
    for field, kind, edit in _CXI_ACCEPTED:
        yield Case(f"CXI {field}", kind, _R, code=ACCEPTED, edit=edit)


CASES = (*_reconstruct_cases(), *_other_cases(), *_config_cases(), *_cxi_cases())


def summary() -> dict[str, collections.Counter]:
    """Refused cases per part (`reconstruct`, `demo`, `simulate`, `report`, `janssen`, `config`, `CXI`) and class."""
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for case in CASES:
        part = case.group.split()[0]
        table[part]["accepted" if case.code == ACCEPTED else "refused"] += 1
    return dict(table)


# ---- running a case -----------------------------------------------------------------------

# Words that say what was expected.
_EXPECTED = ("must", "expected", "needs", "need ", "choose from", "does not exist", "is a folder", "is a file",
             "already exists", "is not", "lacks", "missing", "unknown", "invalid", "required", "at most", "over ",
             "under ", "contradicts", "looks like", "cannot", "applies to", "exceeds", "damaged", "never",
             "choose", "wait", "only", "takes no")  # fmt: skip
_SECONDS = 60


class _Accepted(BaseException):
    """Raised where a command would start its real work: the input was accepted."""


def _make(path: pathlib.Path, content: str, data: pathlib.Path) -> None:
    if content == "folder":
        path.mkdir()
    elif content == "cxi":
        shutil.copy(data, path)
    elif content in ("result", "result-truncated"):
        from janssen.io import write_result

        write_result(path, object=np.ones((4, 4)), probe=np.ones((2, 2)), positions=np.zeros((1, 2)),
                     loss=np.ones(1), wavelength=1e-10, distance=1.0, object_pixel_size=[1e-8, 1e-8],
                     attrs={"iteration": 1})  # fmt: skip
        if content == "result-truncated":
            path.write_bytes(path.read_bytes()[:1500])
    elif content == "corrupt":
        raw = bytearray(data.read_bytes())
        for index in np.random.default_rng(0).integers(0, len(raw), 20):
            raw[index] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif content == "truncated":
        path.write_bytes(data.read_bytes()[:4000])
    elif content == "npz-other":
        np.savez(path, frames=np.ones((2, 4, 4)))
    elif content == "lock":
        path.write_text("")
    elif content.startswith("npy-"):
        arrays = {
            "npy-8x8": np.ones((8, 8), np.complex64),
            "npy-32": np.ones((32, 32), np.complex64),
            "npy-4d": np.ones((1, 1, 32, 32), np.complex64),
            "npy-nan": np.full((32, 32), np.nan, np.complex64),
            "npy-inf": np.full((32, 32), np.inf, np.complex64),
            "npy-zero": np.zeros((32, 32), np.complex64),
            "npy-str": np.full((32, 32), "a"),
        }
        np.save(path, arrays[content])
    else:
        path.write_text(content)


def _snapshot(folder: pathlib.Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


class _Timeout(BaseException):
    """A case that ran past `_SECONDS` (a BaseException: the command's handlers must not take it for a refusal)."""


def _timeout(signum, frame):
    raise _Timeout(f"the case ran over {_SECONDS} s")


def run_case(case: Case, folder: pathlib.Path, cxi_file: pathlib.Path, monkeypatch, capsys):
    """Set the case up in `folder` and run it: `(exit code or "accepted", stderr, stdout, before, after)`."""
    import janssen.cli._demo as demo_command
    import janssen.cli._output as output
    import janssen.cli._reconstruct as reconstruct_command
    import janssen.io
    import janssen.plots._report as report

    def accepted(*args, **kwargs):
        raise _Accepted

    for module, name in ((reconstruct_command, "run_engine"), (reconstruct_command, "refine_geometry"),
                         (demo_command, "_demo"), (janssen.io, "write_cxi"), (janssen.io, "simulate_preset_cxi"),
                         (report, "_figures")):  # fmt: skip
        monkeypatch.setattr(module, name, accepted)
    shutil.copy(cxi_file, folder / "data.cxi")
    for name, content in case.files:
        _make(folder / name, content.replace("{data}", str(folder / "data.cxi")), cxi_file)
    if case.edit is not None:
        with h5py.File(folder / "data.cxi", "r+") as handle:
            case.edit(handle)
    argv = [word.format(data=folder / "data.cxi", dir=folder) for word in case.argv]
    with contextlib.ExitStack() as stack:
        if ("r.h5.lock", "lock") in case.files:
            (folder / "r.h5.lock").unlink()
            stack.enter_context(output.output_lock(folder / "r.h5"))
        before = _snapshot(folder)
        previous = signal.signal(signal.SIGALRM, _timeout)
        signal.alarm(_SECONDS)
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
        except _Accepted:
            code = "accepted"
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        after = _snapshot(folder)
    captured = capsys.readouterr()
    return code, captured.err, captured.out, before, after


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_sweep(case, cxi_file, tmp_path, monkeypatch, capsys):
    code, err, out, before, after = run_case(case, tmp_path, cxi_file, monkeypatch, capsys)
    assert "Traceback" not in err + out, err
    # The run's first line, what was read (`data: N frames of ...`), may precede a refusal found later.
    lines = [line for line in err.strip().splitlines() if not line.startswith("data: ")]
    if case.code == ACCEPTED:
        assert code == "accepted", f"refused a valid input: {err}"
        return
    assert code == case.code, f"exit {code!r}, expected {case.code}: {err or out}"
    assert len(lines) == 1 and lines[0].startswith("janssen"), err
    line = lines[0]
    assert case.names in line, f"{case.names!r} not named: {line}"
    assert any(word in line for word in _EXPECTED), f"says nothing of what was expected: {line}"
    if case.received is not None:
        assert case.received.lower() in line.lower(), f"{case.received!r} (received) not shown: {line}"
    assert after == before, "the folder changed"
