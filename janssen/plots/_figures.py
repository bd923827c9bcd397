"""PNG figures of a reconstruction: object, probe modes, loss history and residuals.

matplotlib is imported inside each function (it is an optional dependency) and figures
are made with the object-oriented API on the Agg canvas: nothing touches pyplot's global
state, so these functions are safe in scripts, servers and tests.

Phase images are scaled to percentiles of the phase where there is something to see (see
`phase_limits`): a +-pi scale hides a 0.5 rad object, and a few wild pixels at the edge of
the scan would set a min/max scale. Where the illumination is known, the unscanned
region is drawn grey (its values are the starting guess, not a reconstruction), and
images with a known pixel size carry a scale bar in physical units.
"""

import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..invert._ramp import linear_phase_steps, remove_linear_phase
from ..invert._verdict import Verdict

# Phase colour limits: these percentiles of the phase over the region that matters.
PHASE_PERCENTILES = (1.0, 99.0)
# The object region: pixels lit by more than this fraction of the illumination's 99th percentile.
_LIT_FRACTION = 0.1
# Without an illumination map: pixels that moved this far from the unit start (1 + 0j).
_UNTOUCHED = 1e-4
# The probe's phase is drawn where |P| exceeds this fraction of its maximum (the faint
# tails beyond carry a noisy phase that hides the beam's).
_BEAM_FRACTION = 0.05
# A region smaller than this many pixels is no basis for percentiles: use the whole image.
_MIN_REGION = 16
# Masked pixels (unscanned object, no beam, bad detector pixels) are drawn in this grey.
MASK_GREY = "0.6"
# The scale bar is the longest 1-2-5 length up to this fraction of the image width.
_SCALE_BAR_FRACTION = 0.25
_LENGTH_UNITS = ((1.0, "m"), (1e-3, "mm"), (1e-6, "µm"), (1e-9, "nm"), (1e-12, "pm"))
# A y axis is logarithmic when its values span more than this factor.
_LOG_SPAN = 10.0
# The loss every engine reports (see `janssen.invert.AbstractEngine.step`).
LOSS_LABEL = "RMS amplitude residual (√counts)"
#: Images are drawn at most this many pixels on their longer side; larger ones are
#: block-averaged by an integer factor first (`display_factor`, `decimate`), and the
#: figure says so. A figure is 1000 pixels wide and an object panel about 380: more
#: pixels add no detail, only memory (docs/scale.md: the 4936 x 4932 object drawn at full
#: size took 2.3 GB; the large preset's 1388 x 1388 one, drawn whole, 300 MB, halved: 89 MB).
DISPLAY_LIMIT = 1024


def display_factor(shape: tuple[int, ...], limit: int = DISPLAY_LIMIT) -> int:
    """The smallest integer factor that brings an image of `shape` to at most `limit` pixels on its longer side.

    **Arguments:**

    - `shape`: the image's shape, `(..., y, x)`.
    - `limit`: the longest side drawn, in pixels (>= 1; default `DISPLAY_LIMIT`).

    **Returns:**

    `1` for an image that fits, else `ceil(max(y, x) / limit)`.
    """
    if isinstance(limit, bool) or int(limit) != limit or limit < 1:
        raise ValueError(f"`limit` must be an integer >= 1 pixel, got {limit!r}")
    return max(1, -(-max(shape[-2:]) // int(limit)))


def decimate(image: Any, factor: int, *, ramp: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The means of `factor x factor` blocks of `image`, for display.

    The last rows and columns that do not fill a block (fewer than `factor`) are left out.
    Summed from the `factor**2` strided views of `image` in its precision, so no
    full-size copy is made: the temporaries and the result have the decimated size. With `ramp = (gx, gy)` the linear
    phase `exp(i (gx x + gy y))` is removed from every pixel before the blocks are averaged
    (a ramp steeper than a fraction of a radian per block would otherwise darken them).

    **Arguments:**

    - `image`: `(..., Y, X)` real or complex array.
    - `factor`: block side in pixels (>= 1; 1 returns `image` unchanged).
    - `ramp`: the phase step per pixel `(along x, along y)` in radians to remove (complex images).

    **Returns:**

    `(..., Y // factor, X // factor)` array of `image`'s dtype (float32 or complex64 for integers).
    """
    image = np.asarray(image)
    if isinstance(factor, bool) or int(factor) != factor or factor < 1:
        raise ValueError(f"`factor` must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    if factor == 1:
        return image
    height, width = image.shape[-2] // factor, image.shape[-1] // factor
    if height < 1 or width < 1:
        raise ValueError(f"`image` must be at least {factor} x {factor} pixels, got shape {image.shape}")
    gx, gy = (float(g) for g in ramp)
    tilted = gx != 0 or gy != 0
    # Summed in the image's precision (float32 and complex64 stay so: 9 terms lose nothing visible).
    dtype = image.dtype if image.dtype.kind in "fc" else np.result_type(image.dtype, np.float32)
    dtype = np.result_type(dtype, np.complex64) if tilted else dtype
    total = np.zeros((*image.shape[:-2], height, width), dtype=dtype)
    term = np.empty_like(total) if tilted else None
    for row in range(factor):
        for col in range(factor):
            view = image[..., row : height * factor : factor, col : width * factor : factor]
            if term is None:
                total += view
                continue
            np.multiply(view, np.exp(-1j * gy * (row + factor * np.arange(height)))[:, None].astype(dtype), out=term)
            term *= np.exp(-1j * gx * (col + factor * np.arange(width))).astype(dtype)
            total += term
    total /= factor**2
    return total


def _figure(width: float | int, height: float | int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _image(figure, axes, values: np.ndarray, title: str, cmap: str, **limits: Any):
    """`values` on `cmap`; NaN or masked pixels in `MASK_GREY`."""
    import matplotlib

    cmap = matplotlib.colormaps[cmap].with_extremes(bad=MASK_GREY)
    values = np.ma.masked_invalid(values)
    shown = axes.imshow(values, cmap=cmap, origin="upper", interpolation="nearest", **limits)
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(shown, ax=axes, shrink=0.8)
    return shown


def illuminated_region(illumination: Any) -> np.ndarray:
    """The scanned region of the object: where `illumination` exceeds a tenth of its 99th percentile.

    The same region sets the phase scale (`phase_limits`); outside it the object is
    the starting guess, drawn grey by `plot_object`.

    **Arguments:**

    - `illumination`: `(Y, X)` summed probe intensity (`janssen.invert.illumination_map`).

    **Returns:**

    `(Y, X)` boolean mask, `True` on the scanned pixels.
    """
    illumination = np.asarray(illumination, dtype=np.float64)
    return illumination > _LIT_FRACTION * np.percentile(illumination, 99)


def scale_bar_length(width: float) -> tuple[float, str]:
    """A scale bar for an image `width` metres across: the longest 1-2-5 length up to a quarter of it.

    **Arguments:**

    - `width`: the image width in metres (> 0).

    **Returns:**

    `(length, label)`: the bar's length in metres and its text, e.g. `(5e-7, "500 nm")`.
    """
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"`width` must be a finite length > 0 in metres, got {width!r}")
    target = _SCALE_BAR_FRACTION * width
    decade = 10.0 ** np.floor(np.log10(target))
    step = max(s for s in (1, 2, 5) if s * decade <= target * (1 + 1e-9))
    length = float(step * decade)
    unit, name = next((unit, name) for unit, name in _LENGTH_UNITS if length >= unit * (1 - 1e-9))
    return length, f"{length / unit:.3g} {name}"


def _scale_bar(axes, pixel_size: Any, width_px: int):
    """Add a scale bar for pixels of `pixel_size` metres (x first) to an image `width_px` wide; return it."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    dx = float(np.ravel(np.asarray(pixel_size, dtype=np.float64))[0])
    length, label = scale_bar_length(dx * width_px)
    bar = AnchoredSizeBar(
        axes.transData,
        length / dx,
        label,
        "lower right",
        pad=0.3,
        sep=3,
        color="white",
        frameon=False,
        size_vertical=max(width_px / 80, 0.5),
    )
    axes.add_artist(bar)
    return bar


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
        region = illuminated_region(illumination)
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
    # Outside the region: NaN, drawn grey.
    phase = np.angle(values) if region is None else np.where(region, np.angle(values), np.nan)
    return _image(figure, axes, phase, f"{title}, {_percent_range()}", cmap, vmin=low, vmax=high)


def _percent_range() -> str:
    low, high = PHASE_PERCENTILES
    return f"{low:g}-{high:g} %"


def _save(figure, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    figure.savefig(path, format="png")
    return path


def _object_region(values: np.ndarray, illumination: Any) -> np.ndarray | None:
    """The scanned region for `plot_object`: `None` (no mask) without a map or when it is too small."""
    if illumination is None:
        return None
    illumination = np.asarray(illumination)
    if illumination.shape != values.shape:
        raise ValueError(f"`illumination` must have the image's shape {values.shape}, got {illumination.shape}")
    region = illuminated_region(illumination)
    return region if np.count_nonzero(region) >= _MIN_REGION else None


def _amplitude_limits(amplitude: np.ndarray, region: np.ndarray | None) -> tuple[float, float]:
    """Percentiles of the amplitude over `region` (or the whole image)."""
    inside = amplitude[region] if region is not None else amplitude.ravel()
    inside = inside[np.isfinite(inside)]
    if not inside.size:
        return 0.0, 1.0
    low, high = np.percentile(inside, PHASE_PERCENTILES)
    return (float(low), float(high)) if high > low else (float(low) - 0.05, float(high) + 0.05)


def _draw_object(figure, axes, values: np.ndarray, title: str, region: np.ndarray | None, pixel_size: Any):
    """Amplitude and phase of `values` on two axes; outside `region` grey; returns both images."""
    amplitude = np.abs(values)
    low, high = _amplitude_limits(amplitude, region)
    shown = amplitude if region is None else np.where(region, amplitude, np.nan)
    images = (
        _image(figure, axes[0], shown, "amplitude", "gray", vmin=low, vmax=high),
        _phase_image(figure, axes[1], values, title, region),
    )
    if pixel_size is not None:
        for panel in axes:
            _scale_bar(panel, pixel_size, values.shape[1])
    return images


def plot_object(
    obj: Any,
    path: str | pathlib.Path,
    *,
    remove_ramp: bool = False,
    illumination: Any = None,
    pixel_size: Any = None,
) -> pathlib.Path:
    """Save the object's amplitude and phase side by side, with colour bars.

    The phase colour scale spans the 1st to 99th percentile of the phase over the
    illuminated region (see `phase_limits`), not +-pi; with an illumination map, the
    amplitude's scale too, and the unscanned pixels (outside `illuminated_region`) are
    grey on both panels. An object longer than `DISPLAY_LIMIT` pixels on a side is drawn
    decimated: means of `display_factor` x `display_factor` pixel blocks (`decimate`; the
    ramp, with `remove_ramp`, estimated on every pixel and taken off before averaging),
    and the figure's title names the factor.

    **Arguments:**

    - `obj`: `(Y, X)` complex object (array or `janssen.optics.SampleFunction`).
    - `path`: the PNG file to write.
    - `remove_ramp`: show the phase without its mean linear ramp (the mean phase step
      between neighbouring pixels, weighted by amplitude). Far-field data cannot determine
      that ramp (see `janssen.invert.align_probe_to_data`); only the figure changes.
    - `illumination`: optional `(Y, X)` map of the summed probe intensity
      (`janssen.invert.illumination_map`) that picks the scanned region; without it, the
      phase scale comes from the pixels that differ from the unit start `1 + 0j` and
      nothing is masked.
    - `pixel_size`: optional object pixel `(x, y)` in metres: adds a scale bar.

    **Returns:**

    The path written.
    """
    values = np.asarray(getattr(obj, "sample", obj))
    factor = display_factor(values.shape)
    title = "phase (rad)" + (", ramp removed" if remove_ramp else "")
    if factor == 1:
        values = remove_linear_phase(values) if remove_ramp else values
    else:  # block means, the ramp taken off first (estimated on every pixel), then the mean phase
        full = values.shape
        ramp = tuple(float(step) for step in linear_phase_steps(values)) if remove_ramp else (0.0, 0.0)
        values = decimate(values, factor, ramp=ramp)
        values = values * np.exp(-1j * np.angle(np.sum(values))) if remove_ramp else values
        illumination = None if illumination is None else decimate(illumination, factor)
        pixel_size = None if pixel_size is None else np.asarray(pixel_size, dtype=np.float64) * factor
    region = _object_region(values, illumination)
    figure = _figure(10, 4.5)
    _draw_object(figure, figure.subplots(1, 2), values, title, region, pixel_size)
    if factor > 1:
        _note_title(figure, decimation_note(factor, full, "object"))
    return _save(figure, path)


def decimation_note(factor: int, shape: tuple[int, ...], what: str) -> str:
    """What a figure drawn at `1 / factor` scale says about it (a caption; `_note_title` splits it for a title)."""
    height, width = shape[-2:]
    return (
        f"decimated {factor}x for display: means of {factor} x {factor} pixel blocks of the {height} x {width} "
        f"{what}; the saved arrays keep full resolution"
    )


def _note_title(figure, note: str) -> None:
    """`note` as the figure's title, on two lines (one is wider than a figure)."""
    figure.suptitle(note.replace("; ", ";\n"), fontsize="medium")


def beam_region(mode: Any) -> np.ndarray:
    """Where a probe mode has beam: `|P|` at least 5 % of its maximum.

    **Arguments:**

    - `mode`: `(y, x)` complex probe mode.

    **Returns:**

    `(y, x)` boolean mask.
    """
    amplitude = np.abs(np.asarray(mode))
    return amplitude >= _BEAM_FRACTION * amplitude.max()


def plot_probe(
    probe_modes: Any, path: str | pathlib.Path, *, phase: bool = False, pixel_size: Any = None
) -> pathlib.Path:
    """Save the amplitude of each probe mode (and optionally its phase) in a row.

    Each mode's title gives its share of the total power. The phase is drawn where the
    beam is (`beam_region`: `|P|` above 5 % of the mode's maximum), on percentile
    limits; elsewhere it is grey. Modes longer than `DISPLAY_LIMIT` pixels on a side are
    drawn decimated (`decimate`), as `plot_object` draws objects.

    **Arguments:**

    - `probe_modes`: `(modes, y, x)` or `(y, x)` complex probe (or an `AbstractProbe`).
    - `path`: the PNG file to write.
    - `phase`: add a second row with each mode's phase.
    - `pixel_size`: optional probe pixel `(x, y)` in metres: adds a scale bar to each panel.

    **Returns:**

    The path written.
    """
    fields = getattr(probe_modes, "fields", None)
    values = np.asarray(fields() if callable(fields) else probe_modes)
    values = values[None] if values.ndim == 2 else values
    power = np.sum(np.abs(values) ** 2, axis=(1, 2))
    share = power / max(float(power.sum()), np.finfo(np.float64).tiny)
    factor, full = display_factor(values.shape), values.shape
    if factor > 1:
        values = decimate(values, factor)
        pixel_size = None if pixel_size is None else np.asarray(pixel_size, dtype=np.float64) * factor
    rows, columns = (2 if phase else 1), len(values)
    figure = _figure(4 * columns + 1, 3.6 * rows)
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False))
    for m, mode in enumerate(values):
        _image(figure, axes[0, m], np.abs(mode), f"mode {m} amplitude ({100 * share[m]:.1f} %)", "magma")
        if phase:
            _phase_image(figure, axes[1, m], mode, f"mode {m} phase (rad)", beam_region(mode))
    if pixel_size is not None:
        for panel in axes.ravel():
            _scale_bar(panel, pixel_size, values.shape[-1])
    if factor > 1:
        _note_title(figure, decimation_note(factor, full, "probe"))
    return _save(figure, path)


def loss_floor(verdict: Verdict | Mapping[str, Any]) -> float:
    """The Poisson floor of R in the loss's unit: an RMS amplitude residual in sqrt(counts).

    The loss is `sqrt(mean (|Psi| - sqrt(I))**2)` over frames and valid pixels, R is the
    same sum over `sum I`: so the floor `F` of R is `sqrt(F * mean I)` in the loss's unit,
    and `mean I` (per frame and valid pixel) is the verdict's mean per-pixel residual
    over R. NaN when R is not a finite positive number.

    **Arguments:**

    - `verdict`: a `janssen.invert.Verdict` or the `"verdict"` dict of `janssen.io.read_result`.

    **Returns:**

    The floor in sqrt(counts).
    """
    r, floor, _, per_pixel = _verdict_fields(verdict)
    per_pixel = np.asarray(per_pixel, dtype=np.float64)
    finite = per_pixel[np.isfinite(per_pixel)]
    if not (np.isfinite(r) and r > 0 and np.isfinite(floor) and finite.size):
        return float("nan")
    return float(np.sqrt(np.mean(finite) * floor / r))


def plot_loss(losses: Any, path: str | pathlib.Path, *, floor: float | None = None) -> pathlib.Path:
    """Save the loss history against the iteration, on a logarithmic axis, with the noise floor.

    The loss every engine reports is the RMS amplitude residual
    `sqrt(mean (sqrt(I) - |Psi|)**2)` in sqrt(counts); on Poisson counts it cannot fall
    below the noise floor (about 0.5 for counts >> 1; `loss_floor` converts a verdict's
    floor of R to this unit), drawn as a dashed line when given.

    **Arguments:**

    - `losses`: `(iterations,)` losses (e.g. `Solution.losses`).
    - `path`: the PNG file to write.
    - `floor`: optional noise floor in sqrt(counts) (ignored when not finite).

    **Returns:**

    The path written.
    """
    figure = _figure(6, 4)
    _draw_loss(figure.subplots(), losses, floor)
    return _save(figure, path)


def _log_y(axes, positive: np.ndarray) -> None:
    """A logarithmic y axis when the positive values span more than a decade, in plain numbers (0.6, not 6 x 10^-1)."""
    if not positive.size or positive.max() <= _LOG_SPAN * positive.min():
        return
    axes.set_yscale("log")
    _plain_ticks(axes.yaxis)


def _plain_ticks(axis) -> None:
    """Tick labels of a logarithmic axis in plain numbers."""
    from matplotlib.ticker import FormatStrFormatter

    axis.set_major_formatter(FormatStrFormatter("%.3g"))
    axis.set_minor_formatter(FormatStrFormatter("%.3g"))


def _draw_loss(axes, losses: Any, floor: float | None):
    values = np.asarray(losses, dtype=np.float64).ravel()
    iterations = np.arange(1, values.size + 1)
    positive = values > 0
    axes.plot(iterations[positive], values[positive], marker="." if values.size < 50 else None, label="loss")
    if floor is not None and np.isfinite(floor) and floor > 0:
        axes.axhline(floor, color="C2", linestyle="--", label=f"Poisson noise floor {floor:.3g}")
        axes.legend(fontsize="small")
    _log_y(axes, values[positive])
    axes.set_xlabel("iteration")
    axes.set_ylabel(LOSS_LABEL)
    axes.grid(True, which="both", alpha=0.3)


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
    _log_y(left, per_frame[np.isfinite(per_frame) & (per_frame > 0)])
    left.set_xlabel("frame")
    left.set_ylabel("R of the frame")
    left.set_title("residual per frame")
    left.legend(fontsize="small")
    left.grid(True, which="both", alpha=0.3)
    positive = per_pixel[np.isfinite(per_pixel) & (per_pixel > 0)]
    # Zeros and bad pixels (NaN) are left blank; the scale starts at the 1st percentile.
    norm = LogNorm(float(np.percentile(positive, 1)), float(positive.max())) if positive.size else None
    shown = np.ma.masked_where(~(np.isfinite(per_pixel) & (per_pixel > 0)), per_pixel)
    image = _image(figure, right, shown, "mean (|Ψ| − √I)² per detector pixel", "magma", norm=norm)
    _plain_ticks(image.colorbar.ax.yaxis)
    return image


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
