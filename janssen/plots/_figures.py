"""PNG figures of a reconstruction: object, probe modes, loss history and residuals.

matplotlib is imported inside each function (it is an optional dependency) and figures
are made with the object-oriented API on the Agg canvas: nothing touches pyplot's global
state, so these functions are safe in scripts, servers and tests.

Phase images are scaled to percentiles of the phase where there is something to see (see
`phase_limits`): a +-pi scale hides a 0.5 rad object, and a few wild pixels at the edge of
the scan would set a min/max scale.
"""

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..invert._ramp import remove_linear_phase
from ..invert._verdict import Verdict

# Phase colour limits: these percentiles of the phase over the region that matters.
PHASE_PERCENTILES = (1.0, 99.0)
# The object region: pixels lit by more than this fraction of the illumination's 99th percentile.
_LIT_FRACTION = 0.1
# Without an illumination map: pixels that moved this far from the unit start (1 + 0j).
_UNTOUCHED = 1e-4
# The probe's phase is drawn where |P|**2 exceeds this fraction of its maximum.
_BEAM_FRACTION = 1e-3
# A region smaller than this many pixels is no basis for percentiles: use the whole image.
_MIN_REGION = 16


def _figure(width: float | int, height: float | int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _image(figure, axes, values: np.ndarray, title: str, cmap: str, **limits: Any):
    shown = axes.imshow(values, cmap=cmap, origin="upper", interpolation="nearest", **limits)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(shown, ax=axes, shrink=0.8)
    return shown


def phase_limits(
    values: Any, *, illumination: Any = None, region: Any = None, percentiles: tuple[float, float] = PHASE_PERCENTILES
) -> tuple[float, float]:
    """Colour limits for a phase image: percentiles of the phase over the region that matters.

    The region is, in order of preference: `region` (a boolean mask); the pixels where
    `illumination` exceeds a tenth of its 99th percentile; the pixels that moved away from
    the unit start `1 + 0j` of an object (an untouched margin would otherwise pile up at 0);
    the whole image, when the region found has fewer than 16 pixels.

    **Arguments:**

    - `values`: `(Y, X)` complex image.
    - `illumination`: optional `(Y, X)` weight map (e.g. `janssen.invert.illumination_map`).
    - `region`: optional `(Y, X)` boolean mask; takes precedence over `illumination`.
    - `percentiles`: the lower and upper percentile (default 1 and 99).

    **Returns:**

    `(low, high)` in radians, `low < high`.
    """
    values = np.asarray(values)
    if region is None and illumination is not None:
        illumination = np.asarray(illumination, dtype=np.float64)
        if illumination.shape != values.shape:
            raise ValueError(f"`illumination` must have the image's shape {values.shape}, got {illumination.shape}")
        region = illumination > _LIT_FRACTION * np.percentile(illumination, 99)
    if region is None:
        region = np.abs(values - 1) > _UNTOUCHED
    region = np.asarray(region, dtype=bool) & np.isfinite(values)
    if np.count_nonzero(region) < _MIN_REGION:
        region = np.isfinite(values)
    low, high = np.percentile(np.angle(values[region]), percentiles) if region.any() else (-np.pi, np.pi)
    if not high > low:  # a flat phase: a small symmetric range around it
        low, high = low - 0.1, high + 0.1
    return float(low), float(high)


def _phase_image(figure, axes, values: np.ndarray, title: str, region: np.ndarray | None, illumination: Any = None):
    """The phase of `values` on percentile limits; a cyclic colour map only when they span nearly 2 pi."""
    low, high = phase_limits(values, illumination=illumination, region=region)
    cmap = "twilight" if high - low > 0.9 * 2 * np.pi else "viridis"
    phase = np.angle(values) if region is None else np.where(region, np.angle(values), np.nan)
    return _image(figure, axes, phase, f"{title}, {_percent_range()}", cmap, vmin=low, vmax=high)


def _percent_range() -> str:
    low, high = PHASE_PERCENTILES
    return f"{low:g}-{high:g} %"


def _save(figure, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    figure.savefig(path, format="png")
    return path


def plot_object(
    obj: Any, path: str | pathlib.Path, *, remove_ramp: bool = False, illumination: Any = None
) -> pathlib.Path:
    """Save the object's amplitude and phase side by side, with colour bars.

    The phase colour scale spans the 1st to 99th percentile of the phase over the
    illuminated region (see `phase_limits`), not +-pi.

    **Arguments:**

    - `obj`: `(Y, X)` complex object (array or `janssen.optics.SampleFunction`).
    - `path`: the PNG file to write.
    - `remove_ramp`: show the phase without its mean linear ramp (the mean phase step
      between neighbouring pixels, weighted by amplitude). Far-field data cannot determine
      that ramp (see `janssen.invert.align_probe_to_data`); only the figure changes.
    - `illumination`: optional `(Y, X)` map of the summed probe intensity
      (`janssen.invert.illumination_map`) that picks the region for the phase scale;
      without it, the pixels that differ from the unit start `1 + 0j`.

    **Returns:**

    The path written.
    """
    values = np.asarray(getattr(obj, "sample", obj))
    title = "phase (rad)"
    if remove_ramp:
        values = remove_linear_phase(values)
        title = "phase (rad), ramp removed"
    figure = _figure(10, 4.5)
    left, right = figure.subplots(1, 2)
    _image(figure, left, np.abs(values), "amplitude", "gray")
    _phase_image(figure, right, values, title, None, illumination)
    return _save(figure, path)


def plot_probe(probe_modes: Any, path: str | pathlib.Path, *, phase: bool = False) -> pathlib.Path:
    """Save the amplitude of each probe mode (and optionally its phase) in a row.

    Each mode's title gives its share of the total power. The phase is drawn where the
    beam is (`|P|**2` above 1e-3 of the mode's maximum), on percentile limits.

    **Arguments:**

    - `probe_modes`: `(modes, y, x)` or `(y, x)` complex probe (or an `AbstractProbe`).
    - `path`: the PNG file to write.
    - `phase`: add a second row with each mode's phase.

    **Returns:**

    The path written.
    """
    fields = getattr(probe_modes, "fields", None)
    values = np.asarray(fields() if callable(fields) else probe_modes)
    values = values[None] if values.ndim == 2 else values
    power = np.sum(np.abs(values) ** 2, axis=(1, 2))
    share = power / max(float(power.sum()), np.finfo(np.float64).tiny)
    rows, columns = (2 if phase else 1), len(values)
    figure = _figure(4 * columns + 1, 3.6 * rows)
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    for m, mode in enumerate(values):
        _image(figure, axes[0, m], np.abs(mode), f"mode {m} amplitude ({100 * share[m]:.1f} %)", "magma")
        if phase:
            intensity = np.abs(mode) ** 2
            beam = intensity >= _BEAM_FRACTION * intensity.max()
            _phase_image(figure, axes[1, m], mode, f"mode {m} phase (rad)", beam)
    return _save(figure, path)


def plot_loss(losses: Any, path: str | pathlib.Path) -> pathlib.Path:
    """Save the loss history against the iteration, on a logarithmic loss axis.

    **Arguments:**

    - `losses`: `(iterations,)` losses (e.g. `Solution.losses`).
    - `path`: the PNG file to write.

    **Returns:**

    The path written.
    """
    values = np.asarray(losses, dtype=np.float64).ravel()
    figure = _figure(6, 4)
    axes = figure.subplots()
    iterations = np.arange(1, values.size + 1)
    positive = values > 0
    axes.plot(iterations[positive], values[positive], marker="." if values.size < 50 else None)
    if positive.any():
        axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.grid(True, which="both", alpha=0.3)
    return _save(figure, path)


def _verdict_fields(verdict: Verdict | Mapping[str, Any]) -> tuple[float, float, np.ndarray, np.ndarray]:
    """`(r, floor, per_frame, per_pixel)` of a `Verdict` or of the dict `read_result` gives."""
    if isinstance(verdict, Mapping):
        return verdict["r"], verdict["floor"], verdict["per_frame"], verdict["per_pixel"]
    return verdict.r, verdict.floor, verdict.per_frame, verdict.per_pixel


def _draw_residuals(figure, verdict: Verdict | Mapping[str, Any]):
    """Both panels on `figure`; returns the per-pixel image (its data are the verdict's)."""
    from matplotlib.colors import LogNorm

    r, floor, per_frame, per_pixel = _verdict_fields(verdict)
    per_frame = np.asarray(per_frame, dtype=np.float64)
    per_pixel = np.asarray(per_pixel, dtype=np.float64)
    left, right = figure.subplots(1, 2)
    frames = np.arange(per_frame.size)
    left.plot(frames, per_frame, marker="." if per_frame.size < 100 else None, linewidth=0.8, label="frame")
    left.axhline(r, color="C1", linestyle="-", label=f"R = {r:.3g}")
    left.axhline(floor, color="C2", linestyle="--", label=f"Poisson floor {floor:.3g}")
    if np.any(per_frame > 0):
        left.set_yscale("log")
    left.set_xlabel("frame")
    left.set_ylabel("R of the frame")
    left.set_title("residual per frame")
    left.legend(fontsize="small")
    left.grid(True, which="both", alpha=0.3)
    positive = per_pixel[np.isfinite(per_pixel) & (per_pixel > 0)]
    # Zeros and bad pixels (NaN) are left blank; the scale starts at the 1st percentile.
    norm = LogNorm(float(np.percentile(positive, 1)), float(positive.max())) if positive.size else None
    shown = np.ma.masked_where(~(np.isfinite(per_pixel) & (per_pixel > 0)), per_pixel)
    return _image(figure, right, shown, "mean (|Psi| - sqrt(I))^2 per detector pixel", "magma", norm=norm)


def plot_residuals(verdict: Verdict | Mapping[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    """Save the residual per frame and the mean residual per detector pixel.

    Left: each frame's R against the frame index, with the overall R and its Poisson
    floor as lines (a frame far above the rest is a bad frame or a wrong position).
    Right: `(|Psi| - sqrt(I))**2` averaged over frames, per detector pixel, on a
    logarithmic colour scale (structure there points at the detector: a transposed or
    flipped frame, a beam stop, hot pixels, a wrong centre or distance). Bad pixels are blank.

    **Arguments:**

    - `verdict`: a `janssen.invert.Verdict` (from `janssen.invert.compute_verdict`) or
      the `"verdict"` dict of `janssen.io.read_result`.
    - `path`: the PNG file to write.

    **Returns:**

    The path written.
    """
    figure = _figure(11, 4.5)
    _draw_residuals(figure, verdict)
    return _save(figure, path)


def save_figures(
    solution: Any,
    directory: str | pathlib.Path,
    prefix: str,
    *,
    remove_ramp: bool = True,
    verdict: Verdict | None = None,
) -> dict[str, pathlib.Path]:
    """Write `<prefix>_object.png`, `<prefix>_probe.png`, `<prefix>_loss.png` and, with a verdict, `_residual.png`.

    The object's phase scale comes from its illuminated region
    (`janssen.invert.illumination_map` of the solution's microscope).

    **Arguments:**

    - `solution`: a `janssen.invert.Solution`.
    - `directory`: where to write (created if missing).
    - `prefix`: file-name prefix.
    - `remove_ramp`: draw the object's phase without its mean linear ramp (see
      `plot_object`; the saved arrays are untouched).
    - `verdict`: the solution's `janssen.invert.Verdict`; when given, `plot_residuals`
      writes `<prefix>_residual.png`.

    **Returns:**

    A dict `{"object": path, "probe": path, "loss": path}`, plus `"residual": path` with a verdict.
    """
    from ..invert._metrics import illumination_map

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    microscope = solution.microscope
    illumination = illumination_map(microscope)
    paths = {
        "object": plot_object(
            microscope.sample.sample,
            directory / f"{prefix}_object.png",
            remove_ramp=remove_ramp,
            illumination=illumination,
        ),
        "probe": plot_probe(microscope.probe.fields(), directory / f"{prefix}_probe.png", phase=True),
        "loss": plot_loss(solution.losses, directory / f"{prefix}_loss.png"),
    }
    if verdict is not None:
        paths["residual"] = plot_residuals(verdict, directory / f"{prefix}_residual.png")
    return paths
