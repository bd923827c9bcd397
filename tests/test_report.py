"""The HTML report of a result file: figures, numbers equal to the file's, bad input, a real browser."""

import argparse
import base64
import html.parser
import json
import pathlib
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = pathlib.Path("/usr/bin/chromium")
# Figure sizes at 100 dpi: object 10 x 4.5 in, one probe mode with its phase 5 x 7.2, loss 6 x 4,
# residual 11 x 4.5, three frames' patterns 11.8 x 10, truth / result / difference 13 x 8.
SIZES = {
    "object": (1000, 450),
    "probe": (500, 720),
    "loss": (600, 400),
    "residual": (1100, 450),
    "patterns": (1180, 1000),
    "truth": (1300, 800),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny simulated scan as CXI with its ground truth, and a result file of 5 rPIE iterations with a verdict."""
    import jax.random as jr

    import janssen.invert as jinv
    import janssen.io as jio

    folder = tmp_path_factory.mktemp("report")
    truth = jio.simulate(32, 16, key=jr.PRNGKey(1), photons=1e5)
    cxi = folder / "data.cxi"
    jio.write_cxi(cxi, truth.data, ground_truth=truth)
    engine = jinv.RPIE()
    start = jinv.init_far_field_microscope(truth.data)
    solution = jinv.reconstruct(start, truth.data, engine, num_iterations=5, key=jr.PRNGKey(0))
    result = folder / "run.h5"
    verdict = jinv.compute_verdict(solution.microscope, truth.data)
    jinv.save_solution(result, solution, truth.data, engine, verdict=verdict)
    bare = folder / "bare.h5"  # no verdict, as a run stopped early
    jinv.save_solution(bare, solution, truth.data, engine)
    return {"folder": folder, "cxi": cxi, "result": result, "bare": bare, "truth": truth}


class _Page(html.parser.HTMLParser):
    """The figures (`id` of the enclosing <figure> -> image `src`) and every element's id -> attributes."""

    def __init__(self):
        super().__init__()
        self.figures: dict[str, str] = {}
        self.ids: dict[str, dict[str, str]] = {}
        self.texts: dict[str, str] = {}
        self.external: list[str] = []
        self._figure = None
        self._open_id = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = attrs
            self._open_id = attrs["id"]
        if tag == "figure":
            self._figure = attrs["id"].removeprefix("fig-")
        if tag == "img":
            self.figures[self._figure] = attrs["src"]
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith("data:"):
                self.external.append(attrs[name])
        if tag == "link":
            self.external.append(str(attrs))

    def handle_data(self, data):
        if self._open_id is not None:
            self.texts[self._open_id] = self.texts.get(self._open_id, "") + data

    def handle_endtag(self, tag):
        self._open_id = None


def _parse(path: pathlib.Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _png_size(raw: bytes) -> tuple[int, int]:
    assert raw[:8] == PNG_SIGNATURE and raw[12:16] == b"IHDR" and raw[-8:-4] == b"IEND"
    return struct.unpack(">II", raw[16:24])


def _decoded(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return base64.b64decode(src[len(prefix) :], validate=True)


def _value(page: _Page, key: str) -> float:
    return float(page.ids[key]["data-value"])


def test_report_with_data_and_truth_shows_every_figure_and_the_files_numbers(files):
    import janssen.invert as jinv
    import janssen.io as jio
    from janssen.plots import loss_floor, write_report

    path = write_report(files["result"], data_path=files["cxi"])
    assert path == files["result"].with_suffix(".html")
    page = _parse(path)
    assert list(page.figures) == list(SIZES)
    for name, src in page.figures.items():
        assert _png_size(_decoded(src)) == SIZES[name], name
    assert page.external == []  # self-contained: nothing fetched from elsewhere
    saved = jio.read_result(files["result"])
    verdict = saved["verdict"]
    assert _value(page, "r") == saved["attrs"]["r_factor"] == verdict["r"]
    assert _value(page, "floor") == saved["attrs"]["r_floor"]
    assert _value(page, "ratio") == pytest.approx(verdict["r"] / verdict["floor"], rel=1e-12)
    assert _value(page, "loss") == pytest.approx(float(saved["loss"][-1]), rel=1e-7)
    assert _value(page, "loss-floor") == loss_floor(verdict)
    assert _value(page, "wavelength") == saved["wavelength"]
    assert _value(page, "pixel") == saved["object_pixel_size"][0]
    truth = files["truth"]
    error = jinv.object_error(truth.object, saved["object"], jinv.illumination_map(truth.microscope()))
    assert _value(page, "object-error") == pytest.approx(error, rel=1e-9)
    ratio = verdict["r"] / verdict["floor"]
    expected = "good" if ratio <= 1.25 else "fair" if ratio <= 3.5 else "poor"
    assert page.ids["verdict"]["data-grade"] == expected
    assert page.texts["engine"] == "RPIE"
    assert page.texts["iterations"] == str(saved["attrs"]["iteration"]) == "5"


def test_report_without_data_or_verdict(files, tmp_path):
    from janssen.plots import write_report

    page = _parse(write_report(files["result"], tmp_path / "plain.html"))
    assert list(page.figures) == ["object", "probe", "loss", "residual"]
    assert "object-error" not in page.ids
    bare = _parse(write_report(files["bare"], tmp_path / "bare.html"))
    assert list(bare.figures) == ["object", "probe", "loss"]
    assert "none" in bare.ids["verdict"].get("class", "") and "r" not in bare.ids
    assert "No verdict" in bare.texts["verdict"]


def test_report_from_data_in_memory_equals_the_one_from_the_file(files, tmp_path):
    from janssen.plots import write_report

    from_file = _parse(write_report(files["result"], tmp_path / "file.html", files["cxi"]))
    truth = files["truth"]
    in_memory = _parse(write_report(files["result"], tmp_path / "memory.html", data=truth.data, truth=truth))
    assert list(in_memory.figures) == list(SIZES)
    for key in ("r", "floor", "object-error", "loss-floor"):
        assert _value(in_memory, key) == _value(from_file, key)
    only_data = _parse(write_report(files["result"], tmp_path / "data.html", data=truth.data))
    assert list(only_data.figures) == ["object", "probe", "loss", "residual", "patterns"]


def test_data_in_memory_with_the_file_reads_only_the_truth(files, tmp_path, monkeypatch):
    # `janssen reconstruct` holds the frames: given them and the file, the report reads the file's
    # ground truth and not the frames again (a second copy took the large preset's report from
    # 1.0 to 1.6 GB resident), and the page is the one made from the file alone.
    import janssen.io as jio
    import janssen.io._cxi as cxi
    from janssen.plots import write_report

    from_file = _parse(write_report(files["result"], tmp_path / "file.html", files["cxi"]))
    data = jio.read_cxi(files["cxi"])
    reads = []
    original = cxi._read_data
    monkeypatch.setattr(cxi, "_read_data", lambda *args: reads.append(args) or original(*args))
    monkeypatch.setattr(jio, "read_cxi", lambda *args, **kwargs: pytest.fail("the frames were read again"))
    both = _parse(write_report(files["result"], tmp_path / "both.html", files["cxi"], data=data))
    assert reads == []
    assert list(both.figures) == list(SIZES)
    for key in ("r", "floor", "object-error", "loss-floor"):
        assert _value(both, key) == _value(from_file, key)
    truth = jio.read_ground_truth(files["cxi"], data=data)
    assert truth.data is data
    np.testing.assert_array_equal(np.asarray(truth.object), np.asarray(files["truth"].object))


def test_a_diverged_run_is_reported_as_such(files, tmp_path):
    import janssen.io as jio
    from janssen.plots import write_report

    saved = jio.read_result(files["result"])
    broken = saved["object"].copy()
    broken[3:5, 3:5] = np.nan
    npos = len(saved["positions"])
    jio.write_result(
        tmp_path / "nan.h5",
        object=broken,
        probe=np.concatenate([saved["probe"], 0.3 * saved["probe"]]),  # two modes
        positions=saved["positions"],
        loss=np.array([1.0, np.nan]),
        wavelength=saved["wavelength"],
        distance=saved["distance"],
        object_pixel_size=saved["object_pixel_size"],
        attrs={"engine": "RPIE"},
        verdict={
            "r": np.nan,
            "floor": 0.01,
            "per_frame": np.full(npos, np.nan),
            "per_pixel": np.full((32, 32), np.nan),
        },
    )
    page = _parse(write_report(tmp_path / "nan.h5", data_path=files["cxi"]))
    assert page.ids["verdict"]["data-grade"] == "poor" and "diverged" in page.texts["verdict"]
    assert list(page.figures) == ["object", "probe", "loss", "residual", "truth"]
    assert _png_size(_decoded(page.figures["probe"])) == (900, 720)  # two modes side by side
    text = (tmp_path / "nan.html").read_text(encoding="utf-8")
    assert "The object holds 4 NaN or infinite values" in text and "No measured-vs-predicted patterns" in text


def test_data_of_another_scan_gives_a_note_not_patterns(files, tmp_path):
    import jax.random as jr

    import janssen.io as jio
    from janssen.plots import write_report

    other = jio.simulate(32, 9, key=jr.PRNGKey(2), photons=1e5).data
    page = _parse(write_report(files["result"], tmp_path / "other.html", data=other))
    assert "patterns" not in page.figures
    assert "the result has 16 positions, the data 9 frames" in (tmp_path / "other.html").read_text(encoding="utf-8")


def test_report_finds_the_data_file_the_result_records(files, tmp_path):
    import h5py

    from janssen.plots import write_report

    shutil.copy(files["cxi"], tmp_path / "scan.cxi")
    result = tmp_path / "run.h5"
    shutil.copy(files["result"], result)
    with h5py.File(result, "r+") as handle:
        handle.attrs["cli"] = json.dumps({"engine": "rpie", "modes": 1, "near_field": False, "data": "scan.cxi"})
    assert list(_parse(write_report(result)).figures) == list(SIZES)


def _truncated(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return target


def _without_loss(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    import h5py

    shutil.copy(source, target)
    with h5py.File(target, "r+") as handle:
        del handle["loss"]
    return target


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda files, tmp: tmp / "missing.h5", r"missing\.h5' does not exist"),
        (lambda files, tmp: _truncated(files["result"], tmp / "cut.h5"), r"cut\.h5' is not a readable HDF5 file"),
        (lambda files, tmp: files["cxi"], r"data\.cxi' is not a janssen result file: it lacks the datasets \['object'"),
        (
            lambda files, tmp: _without_loss(files["result"], tmp / "noloss.h5"),
            r"noloss\.h5'.*lacks the datasets \['loss'\]",
        ),
    ],
)
def test_bad_result_files_name_the_file_and_what_is_missing(files, tmp_path, make, match):
    from janssen.plots import ReportError, write_report

    with pytest.raises(ReportError, match=match):
        write_report(make(files, tmp_path), tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_a_missing_data_file_is_named(files, tmp_path):
    from janssen.plots import ReportError, write_report

    with pytest.raises(ReportError, match=r"data file '.*nowhere\.cxi' does not exist"):
        write_report(files["result"], tmp_path / "x.html", tmp_path / "nowhere.cxi")


def _cli(argv):
    from janssen.cli._parsers import add_report_parser

    parser = argparse.ArgumentParser(prog="janssen")
    add_report_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *map(str, argv)])
    return args.handler.load()(args)


def test_cli_writes_the_page_and_reports_bad_input_in_one_line(files, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert _cli([files["result"], "--out", out, "--data", files["cxi"]]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert len(_parse(out).figures) == len(SIZES)
    not_a_result = tmp_path / "notes.txt"
    not_a_result.write_text("hello")
    assert _cli([not_a_result]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("janssen report: error: result file ") and "notes.txt" in err
    assert _cli([files["result"], "--out", tmp_path / "no" / "page.html"]) == 2
    err = capsys.readouterr().err
    assert "cannot write --out" in err and "page.html" in err


# ---- a real browser ------------------------------------------------------------------------

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=10000",
)


def _browse(page: pathlib.Path, profile: pathlib.Path) -> tuple[str, list[str]]:
    """The DOM after the load event and the page's console messages, from headless Chromium."""
    run = subprocess.run(
        [str(CHROMIUM), *_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return run.stdout, console


def _body(dom: str) -> dict[str, str]:
    match = re.search(r"<body([^>]*)>", dom)
    assert match is not None
    return dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)")
def test_the_page_loads_in_chromium_with_every_figure_decoded_and_no_console_error(files, tmp_path):
    from janssen.plots import write_report

    page = write_report(files["result"], tmp_path / "report.html", files["cxi"])
    dom, console = _browse(page, tmp_path / "profile")
    assert console == []
    body = _body(dom)
    assert body["data-images"] == "ok" and body["data-image-count"] == str(len(SIZES))
    # The check can fail: a page with an undecodable image and a script error is caught.
    text = page.read_text(encoding="utf-8")
    broken = text.replace("</body>", '<img src="data:image/png;base64,AAAA"><script>noSuchFunction();</script></body>')
    (tmp_path / "broken.html").write_text(broken, encoding="utf-8")
    dom, console = _browse(tmp_path / "broken.html", tmp_path / "profile2")
    assert _body(dom)["data-images"] == "broken"
    assert any("noSuchFunction" in line for line in console)
    # A screenshot renders (non-empty PNG of the requested width).
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            str(CHROMIUM),
            *_FLAGS,
            f"--user-data-dir={tmp_path / 'profile3'}",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert _png_size(shot.read_bytes()) == (1280, 2000)
    assert shot.stat().st_size > 50_000
