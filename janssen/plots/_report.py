"""A result file as one self-contained HTML page: verdict, figures, settings, geometry, versions.

The page needs no server and no network: the figures are inline PNGs (`data:` URLs), the
style sheet and a three-line script (it marks `<body data-images="ok">` once every figure
has decoded, for tests in a headless browser) are in the page itself.
"""

import base64
import datetime
import html
import json
import math
import pathlib
import platform
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from ._figures import decimation_note, display_factor

# Shown under "software": the packages a result depends on.
_PACKAGES = ("janssen", "jax", "jaxlib", "equinox", "optax", "lineax", "optimistix", "numpy", "h5py", "matplotlib")
# A rebuilt model whose R on the shown frames is off by more than this from the run's is flagged.
_REBUILT_TOLERANCE = 0.05
_DATA_SUFFIXES = (".npz", ".npz.bz2")


class ReportError(ValueError):
    """A result or data file the report cannot use; the message names the file and what is wrong."""


# ---- reading -------------------------------------------------------------------------------


def _read_result(path: pathlib.Path) -> dict[str, Any]:
    """`janssen.io.read_result`, with every failure (missing, truncated, not a result) as a `ReportError`."""
    from ..io import read_result

    try:
        result = read_result(path, state=False)  # the page shows no checkpoint
    except ValueError as error:
        raise ReportError(str(error)) from error
    except (OSError, KeyError, RuntimeError) as error:  # h5py on a truncated or damaged file
        raise ReportError(
            f"result file {str(path)!r} is truncated or damaged: {' '.join(str(error).split())}"
        ) from error
    expected = {"object": 2, "probe": 3, "positions": 2, "loss": 1}
    wrong = [
        f"/{name} ({np.ndim(result[name])}-D, expected {ndim}-D)"
        for name, ndim in expected.items()
        if np.ndim(result[name]) != ndim
    ]
    if np.ndim(result["positions"]) == 2 and np.shape(result["positions"])[1] != 2:
        wrong.append(f"/positions (shape {np.shape(result['positions'])}, expected (N, 2))")
    if wrong:
        raise ReportError(f"{str(path)!r} is not a valid janssen result file: wrong datasets {', '.join(wrong)}")
    return result


def _cli_record(result: dict[str, Any]) -> dict[str, Any]:
    record = result["attrs"].get("cli")
    try:
        return json.loads(record) if isinstance(record, str) else {}
    except json.JSONDecodeError:
        return {}


def _data_path(result_path: pathlib.Path, result: dict[str, Any], data_path: Any) -> pathlib.Path | None:
    """The data file given, else the one the result file records (`data` in its `cli` record), if present.

    Not the recorded file of a streamed run (`janssen reconstruct --stream`): its frames may
    not fit in memory, and the report would read them all.
    """
    if data_path is not None:
        return pathlib.Path(data_path)
    if _cli_record(result).get("stream"):
        return None
    recorded = _cli_record(result).get("data") or result["attrs"].get("data")
    if not isinstance(recorded, str):
        return None
    path = pathlib.Path(recorded)
    path = path if path.is_absolute() else result_path.parent / path
    return path if path.is_file() else None


def _read_data(path: pathlib.Path, data: Any = None) -> tuple[Any, Any]:
    """`(data, truth)` of a CXI file (truth `None` without `/ground_truth`) or of the Siemens-star archive.

    With `data` (the file's, already in memory) only the truth is read.
    """
    from .. import io as jio

    if not path.is_file():
        raise ReportError(f"data file {str(path)!r} does not exist")
    try:
        if path.name.endswith(_DATA_SUFFIXES):
            return (jio.load_siemens_star(path).data if data is None else data), None
        try:
            truth = jio.read_ground_truth(path, data=data)
        except ValueError:
            if data is None:
                raise
            # The run's data differ from the file's (another scan's shape): the file's own.
            data, truth = None, jio.read_ground_truth(path)
        if truth is not None:
            return truth.data, truth
        return (jio.read_cxi(path) if data is None else data), None
    except (OSError, ValueError, KeyError) as error:
        raise ReportError(f"cannot read data file {str(path)!r}: {' '.join(str(error).split())}") from error


# ---- the model ----------------------------------------------------------------------------


def _microscope(result: dict[str, Any], data: Any) -> tuple[Any, str]:
    """The model rebuilt from the saved arrays (and the CLI's record), or `None` and why not."""
    from ..optics import Probe, SampleFunction, ScaledFraunhofer
    from ..scopes import FarFieldMicroscope, NearFieldMicroscope

    kind, cli = result["attrs"].get("microscope", "FarFieldMicroscope"), _cli_record(result)
    dx = np.asarray(result["object_pixel_size"])
    try:
        probe = Probe(result["probe"], result["wavelength"], dx)
        sample = SampleFunction(result["object"], dx)
        if kind == "NearFieldMicroscope" and cli.get("near_field"):
            options = {name: cli.get(name) for name in ("distance", "focus_to_sample", "propagator")}
            return NearFieldMicroscope(probe, sample, result["positions"], **options), ""
        if kind != "FarFieldMicroscope":
            return None, f"the report cannot rebuild a {kind} from the saved arrays"
        propagator = None
        if cli.get("scaled_far_field"):
            if data is None:
                return None, "the scaled far field needs the data file's camera pixel"
            propagator = ScaledFraunhofer(result["distance"], data.camera_pixel_size, tuple(data.frame_shape))
        return FarFieldMicroscope(probe, sample, result["positions"], propagator), ""
    except (TypeError, ValueError) as error:
        return None, f"the saved arrays do not make a {kind}: {' '.join(str(error).split())}"


def _illumination(result: dict[str, Any]) -> np.ndarray | None:
    """The summed probe intensity on the object grid (any microscope places its probe the same way)."""
    from ..invert import illumination_map
    from ..optics import Probe, SampleFunction
    from ..scopes import FarFieldMicroscope

    dx = np.asarray(result["object_pixel_size"])
    try:
        microscope = FarFieldMicroscope(
            Probe(result["probe"], result["wavelength"], dx), SampleFunction(result["object"], dx), result["positions"]
        )
    except (TypeError, ValueError):
        return None
    return np.asarray(illumination_map(microscope))


# ---- figures ------------------------------------------------------------------------------


def _png(draw: Callable[[pathlib.Path], Any]) -> bytes:
    """The PNG bytes a `plot_*` call writes (the report keeps nothing on disk)."""
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "figure.png"
        draw(path)
        return path.read_bytes()


def _verdict(result: dict[str, Any]):
    from ..invert import Verdict

    stored = result["verdict"]
    if stored is None:
        return None
    return Verdict(r=stored["r"], floor=stored["floor"], per_frame=stored["per_frame"], per_pixel=stored["per_pixel"])


def _figures(
    result: dict[str, Any], data: Any, truth: Any, notes: list[str], numbers: dict[str, float]
) -> list[tuple[str, str, bytes]]:
    """`(key, caption, png)` of every figure the inputs allow; the object error goes to `numbers`."""
    from ._figures import loss_floor, plot_loss, plot_object, plot_probe, plot_residuals

    verdict, dx = _verdict(result), np.asarray(result["object_pixel_size"])
    illumination = _illumination(result)
    for name in ("object", "probe"):
        bad = int(np.count_nonzero(~np.isfinite(result[name])))
        if bad:
            notes.append(f"The {name} holds {bad} NaN or infinite values: the run diverged.")
    figures = [
        (
            "object",
            "Object amplitude and phase (linear phase ramp removed). Colour limits: 1st-99th percentile over "
            "the scanned region; grey: not scanned (still the starting guess)."
            + _decimated(result["object"].shape, "object"),
            _png(
                lambda p: plot_object(result["object"], p, remove_ramp=True, illumination=illumination, pixel_size=dx)
            ),
        ),
        (
            "probe",
            "Probe modes: amplitude, and phase where the beam is (|P| above 5 % of its maximum; grey elsewhere)."
            + _decimated(result["probe"].shape, "probe"),
            _png(lambda p: plot_probe(result["probe"], p, phase=True, pixel_size=dx)),
        ),
        (
            "loss",
            "Loss per iteration: the RMS amplitude residual in √counts; the dashed line is the Poisson noise "
            "floor, the value the true model would reach on these counts.",
            _png(lambda p: plot_loss(result["loss"], p, floor=None if verdict is None else loss_floor(verdict))),
        ),
    ]
    if verdict is not None:
        figures.append(
            (
                "residual",
                "Residual per frame (a frame far above the rest: a bad frame or position) and per detector "
                "pixel (structure there: detector orientation, centre, beam stop, hot pixels).",
                _png(lambda p: plot_residuals(verdict, p)),
            )
        )
    if data is not None:
        figures += _pattern_figure(result, data, verdict, notes)
    if truth is not None:
        figures += _truth_figure(result, truth, numbers)
    return figures


def _decimated(shape: tuple[int, ...], what: str) -> str:
    """The caption's sentence on a figure drawn decimated (`plot_object`, `plot_probe`); empty when it is not."""
    factor = display_factor(shape)
    return "" if factor == 1 else f" Image {decimation_note(factor, shape, what)}."


def _pattern_figure(result, data, verdict, notes: list[str]) -> list[tuple[str, str, bytes]]:
    from ._patterns import frame_r, plot_patterns
    from ._save import pattern_frames

    microscope, why = _microscope(result, data)
    if microscope is not None and microscope.num_positions != data.num_positions:
        why = f"the result has {microscope.num_positions} positions, the data {data.num_positions} frames"
    elif microscope is not None and tuple(microscope.detector_shape) != tuple(data.frame_shape):
        why = f"the result predicts {tuple(microscope.detector_shape)} frames, the data's are {tuple(data.frame_shape)}"
    if why:
        notes.append(f"No measured-vs-predicted patterns: {why}.")
        return []
    frames, measured, predicted, valid = pattern_frames(microscope, data, verdict)
    indices = [index for _, index in frames]
    if verdict is not None:
        rebuilt, stored = frame_r(measured, predicted, valid), np.asarray(verdict.per_frame)[indices]
        if np.any(np.abs(rebuilt - stored) > _REBUILT_TOLERANCE * np.abs(stored)):
            notes.append(
                "The predicted patterns come from a model rebuilt from the saved object, probe and positions; its R "
                f"on the frames shown ({', '.join(f'{r:.3g}' for r in rebuilt)}) differs from the run's "
                f"({', '.join(f'{r:.3g}' for r in stored)}): the run's model held more (e.g. a detector response)."
            )
    caption = (
        "Measured and predicted diffraction patterns of the best, median and worst frame by R, with the amplitude "
        "residual √I − |Ψ| (structure repeated across frames points at the model or the geometry)."
    )
    png = _png(lambda p: plot_patterns(measured, predicted, p, frames=frames, valid=valid))
    return [("patterns", caption, png)]


def _truth_figure(result, truth, numbers: dict[str, float]) -> list[tuple[str, str, bytes]]:
    from ..invert import illumination_map
    from ._comparison import plot_truth_comparison

    out: dict[str, Any] = {}

    def draw(path):
        out["error"] = plot_truth_comparison(
            truth.object,
            result["object"],
            illumination_map(truth.microscope()),
            path,
            pixel_size=result["object_pixel_size"],
        )[1]

    png = _png(draw)
    numbers["object_error"] = out["error"]
    caption = (
        f"Ground truth, result and difference; object error {out['error']:.4f} (relative, over the well-lit pixels, "
        "after the best integer shift and global complex scale; a unit object scores about 0.5)."
    )
    return [("truth", caption, png)]


# ---- the page -----------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 1.5em auto;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.meta { color: #666; font-size: 0.9em; }
.verdict { padding: 0.8em 1em; border-radius: 6px; border-left: 6px solid; margin: 1em 0; font-size: 1.1em; }
.verdict.good { background: #e8f5e9; border-color: #2e7d32; }
.verdict.fair { background: #fff8e1; border-color: #f9a825; }
.verdict.poor { background: #ffebee; border-color: #c62828; }
.verdict.none { background: #eceff1; border-color: #607d8b; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.2em 0.8em; text-align: left;
       border-bottom: 1px solid #ddd; vertical-align: top; }
th { color: #555; font-weight: 600; } figure { margin: 1em 0 2em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9em; } pre { margin: 0; font-size: 0.85em; white-space: pre-wrap; }
.notes li { color: #6d4c41; }
"""

# Marks <body data-images="ok"> once every figure has decoded (headless-browser tests read it back).
_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.every(function (image) { return image.complete && image.naturalWidth > 0; });
  document.body.setAttribute("data-images", ok ? "ok" : "broken");
  document.body.setAttribute("data-image-count", String(images.length));
});
"""


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _row(name: str, value: Any, key: str | None = None, exact: float | None = None) -> str:
    """A table row; `key` gives the value cell an id and `exact` a machine-readable `data-value`."""
    attributes = "" if key is None else f' id="{key}"'
    if exact is not None:
        attributes += f' data-value="{float(exact)!r}"'
    return f"<tr><th>{html.escape(name)}</th><td{attributes}>{value}</td></tr>"


def _table(rows: list[str]) -> str:
    return "<table>" + "".join(rows) + "</table>"


def _verdict_block(verdict) -> str:
    if verdict is None:
        return (
            '<div class="verdict none" id="verdict">No verdict in this file: R and its Poisson floor were not '
            "computed (the run stopped before the end, or predates the verdict).</div>"
        )
    from ..invert._verdict import ACCEPTABLE, FITS_NOISE

    ratio = verdict.ratio
    grade = "good" if ratio <= FITS_NOISE else "fair" if ratio <= ACCEPTABLE else "poor"
    return (
        f'<div class="verdict {grade}" id="verdict" data-grade="{grade}"><strong>{html.escape(verdict.judgement)}'
        f"</strong><br>R = {_number(verdict.r)} against its Poisson floor {_number(verdict.floor)}"
        + (f" ({_number(ratio, 3)}x the floor)" if math.isfinite(ratio) else "")
        + "</div>"
    )


def _summary_rows(result: dict[str, Any], verdict, numbers: dict[str, float]) -> list[str]:
    from ._figures import loss_floor

    attrs, loss = result["attrs"], np.asarray(result["loss"], dtype=np.float64)
    rows = [
        _row("iterations", html.escape(str(attrs.get("iteration", loss.size))), "iterations"),
        _row("stopped because", html.escape(str(attrs.get("result", "unknown")).replace("_", " ")), "stop"),
    ]
    if loss.size:
        rows.append(_row("final loss (RMS amplitude residual)", f"{_number(loss[-1])} √counts", "loss", loss[-1]))
    if verdict is not None:
        floor = loss_floor(verdict)
        rows += [
            _row("R = Σ(|Ψ| − √I)² / ΣI", _number(verdict.r), "r", verdict.r),
            _row("Poisson floor of R", _number(verdict.floor), "floor", verdict.floor),
            _row("R / floor", _number(verdict.ratio, 3), "ratio", verdict.ratio),
            _row("noise floor of the loss", f"{_number(floor)} √counts", "loss-floor", floor),
        ]
    if "object_error" in numbers:
        error = numbers["object_error"]
        rows.append(
            _row(
                "object error vs ground truth",
                f"{_number(error)} (a unit object scores about 0.5)",
                "object-error",
                error,
            )
        )
    return rows


def _settings_rows(result: dict[str, Any]) -> list[str]:
    attrs = result["attrs"]
    rows = [_row("engine", html.escape(str(attrs.get("engine", "unknown"))), "engine")]
    for name, key in (("engine parameters", "engine_parameters"), ("refined", "trainable"), ("command line", "cli")):
        if key in attrs:
            value = attrs[key]
            try:
                value = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError:
                pass
            rows.append(_row(name, f"<pre>{html.escape(json.dumps(value, indent=1, default=str))}</pre>"))
    return rows


def _length(metres: float) -> str:
    for unit, name in ((1.0, "m"), (1e-3, "mm"), (1e-6, "µm"), (1e-9, "nm"), (1e-12, "pm")):
        if abs(metres) >= unit:
            return f"{metres / unit:.4g} {name}"
    return f"{metres:.4g} m"


def _geometry_rows(result: dict[str, Any]) -> list[str]:
    obj, probe, positions = (np.asarray(result[name]) for name in ("object", "probe", "positions"))
    dx = np.asarray(result["object_pixel_size"], dtype=np.float64)
    power = np.sum(np.abs(probe) ** 2, axis=(1, 2))
    shares = ", ".join(f"{100 * p / max(power.sum(), 1e-300):.1f} %" for p in power)
    extent = np.ptp(positions, axis=0) if positions.size else np.zeros(2)
    rows = [
        _row("wavelength", _length(result["wavelength"]), "wavelength", result["wavelength"]),
        _row("sample-to-detector distance", _length(result["distance"]), "distance", result["distance"]),
        _row("object pixel (x, y)", f"{_length(dx[0])} x {_length(dx[1])}", "pixel", dx[0]),
        _row(
            "object",
            f"{obj.shape[1]} x {obj.shape[0]} px ({_length(obj.shape[1] * dx[0])} x {_length(obj.shape[0] * dx[1])})",
            "object-shape",
        ),
        _row("probe / frame", f"{probe.shape[2]} x {probe.shape[1]} px, {probe.shape[0]} mode(s): {shares}", "probe"),
        _row("scan", f"{positions.shape[0]} positions over {_length(extent[0])} x {_length(extent[1])}", "scan"),
    ]
    for name, value in sorted(result["extra"].get("refined", {}).items()):
        rows.append(_row(f"refined {name}", html.escape(np.array2string(np.asarray(value), precision=5))))
    return rows


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    rows = [_row("python", html.escape(platform.python_version()))]
    for package in _PACKAGES:
        try:
            rows.append(_row(package, html.escape(version(package))))
        except PackageNotFoundError:
            continue
    rows.append(_row("platform", html.escape(platform.platform())))
    return rows


def _figure_html(key: str, caption: str, png: bytes) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{key}"><img alt="{html.escape(key)} figure" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _page(result_path: pathlib.Path, source: str | None, result: dict[str, Any], parts: dict) -> str:
    verdict, notes = parts["verdict"], parts["notes"]
    written_by = result["attrs"].get("janssen_version", "unknown")
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data_line = f"data {html.escape(source)}" if source is not None else "no data file (no measured patterns)"
    body = [
        f"<h1>janssen report: {html.escape(result_path.name)}</h1>",
        f'<p class="meta">result {html.escape(str(result_path))} (written by janssen {html.escape(str(written_by))})'
        f"; {data_line}; report generated {generated}</p>",
        _verdict_block(verdict),
        _table(_summary_rows(result, verdict, parts["numbers"])),
    ]
    if notes:
        body.append('<ul class="notes">' + "".join(f"<li>{html.escape(note)}</li>" for note in notes) + "</ul>")
    body += ["<h2>Figures</h2>", *(_figure_html(*figure) for figure in parts["figures"])]
    body += ["<h2>Settings</h2>", _table(_settings_rows(result))]
    body += ["<h2>Geometry</h2>", _table(_geometry_rows(result))]
    body += ["<h2>Software</h2>", _table(_versions())]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>janssen report: {html.escape(result_path.name)}</title><style>{_STYLE}</style>"
        f"<script>{_SCRIPT}</script></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(
    result_path: str | pathlib.Path,
    html_path: str | pathlib.Path | None = None,
    data_path: Any = None,
    *,
    data: Any = None,
    truth: Any = None,
) -> pathlib.Path:
    """Write a result file's report: one self-contained HTML page that any browser opens without a server.

    The page holds the verdict (R beside its Poisson floor, in words), the key numbers,
    the figures as inline PNGs (object and probe with scale bars, the loss with its noise
    floor, the residual per frame and per detector pixel; with the data, measured against
    predicted patterns of the best, median and worst frame; with ground truth in the data
    file, truth / result / difference and the object error), the run's settings, the
    geometry and the software versions.

    **Arguments:**

    - `result_path`: a result file of `janssen reconstruct` or `janssen.invert.save_solution`.
    - `html_path`: the page to write (default: the result file with suffix `.html`).
    - `data_path`: optional data file the result was refined against (a CXI file, with or
      without `/ground_truth`, or the Siemens-star `.npz.bz2`); default: the file named
      by the result's `cli` record (`data`), when it exists.
    - `data`: the `janssen.io.MicroscopeData` itself (a caller that holds it in memory,
      as `janssen reconstruct` does, saves reading it again). With `data_path` too, only
      the ground truth is read from that file.
    - `truth`: a `janssen.io.SimulatedDataset` holding the true object (optional; read
      from `data_path` when that file has `/ground_truth`).

    **Returns:**

    The path of the page written.

    **Raises:**

    `ReportError` (a `ValueError`) naming the file when the result file is missing,
    truncated or not a janssen result, or the data file cannot be read; `OSError` when
    the page cannot be written.
    """
    result_path = pathlib.Path(result_path)
    html_path = result_path.with_suffix(".html") if html_path is None else pathlib.Path(html_path)
    result = _read_result(result_path)
    if truth is None and (data is None or data_path is not None):
        data_path = _data_path(result_path, result, data_path)
        data, truth = _read_data(data_path, data) if data_path is not None else (None, None)
    elif data is None:
        data = truth.data
    notes: list[str] = []
    if data is None and _cli_record(result).get("stream"):
        notes.append(
            "The frames were streamed from the data file (janssen reconstruct --stream) and are not read here: no "
            "comparison with a ground truth, and the measured-vs-predicted patterns are the run's own figure "
            f"{result_path.stem}_patterns.png beside the result (the three frames it shows, read from the file). "
            "`janssen report RESULT --data FILE` draws both here, reading every frame into memory."
        )
    numbers: dict[str, float] = {}
    figures = _figures(result, data, truth, notes, numbers)
    parts = {"verdict": _verdict(result), "notes": notes, "numbers": numbers, "figures": figures}
    source = str(data_path) if data_path is not None else (None if data is None else "given in memory")
    page = _page(result_path, source, result, parts)
    try:
        html_path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise OSError(f"cannot write report {str(html_path)!r}: {error.strerror or error}") from error
    return html_path
