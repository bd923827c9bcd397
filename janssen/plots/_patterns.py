"""Measured against predicted diffraction patterns of a few frames, with their amplitude residual."""

import pathlib
from typing import Any

import numpy as np

from ._figures import _figure, _image, _save

# The frames shown: the best, the median and the worst fitted frame by their R.
_FRAME_LABELS = ("best", "median", "worst")
_MAP = "viridis"


def select_frames(per_frame: Any) -> list[tuple[str, int]]:
    """The best, median and worst frame by their R: `[("best", i), ("median", j), ("worst", k)]`.

    Frames whose R is not finite (no counts) are skipped; a frame is listed once, under its
    first label, when fewer than three frames remain.

    **Arguments:**

    - `per_frame`: `(N,)` R of each frame (`Verdict.per_frame`).

    **Returns:**

    A list of `(label, frame index)`, at most three.
    """
    per_frame = np.asarray(per_frame, dtype=np.float64).ravel()
    finite = np.flatnonzero(np.isfinite(per_frame))
    if not finite.size:
        return []
    ranked = finite[np.argsort(per_frame[finite], kind="stable")]
    chosen = (ranked[0], ranked[(ranked.size - 1) // 2], ranked[-1])
    picked: list[tuple[str, int]] = []
    for label, index in zip(_FRAME_LABELS, chosen):
        if all(index != seen for _, seen in picked):
            picked.append((label, int(index)))
    return picked


def frame_r(measured: Any, predicted: Any, valid: Any = None) -> np.ndarray:
    """Each frame's R, `sum (sqrt(predicted) - sqrt(measured))**2 / sum measured` over valid pixels.

    **Arguments:**

    - `measured`, `predicted`: `(k, H, W)` intensities.
    - `valid`: optional `(H, W)` weights (1 = use, 0 = bad pixel).

    **Returns:**

    `(k,)` R of each frame (NaN for a frame without counts).
    """
    measured = np.clip(np.asarray(measured, dtype=np.float64), 0, None)
    predicted = np.clip(np.asarray(predicted, dtype=np.float64), 0, None)
    weight = np.ones(measured.shape[-2:]) if valid is None else np.asarray(valid, dtype=np.float64)
    squared = np.sum((np.sqrt(predicted) - np.sqrt(measured)) ** 2 * weight, axis=(-2, -1))
    counts = np.sum(measured * weight, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, squared / counts, np.nan)


def _name(label: str, index: int) -> str:
    return f"{label}: frame {index}" if label else f"frame {index}"


def _draw_patterns(figure, measured: np.ndarray, predicted: np.ndarray, frames: list, valid: np.ndarray | None):
    """Three rows (measured, predicted, amplitude residual) by one column per frame; returns the images."""
    bad = np.zeros(measured.shape[-2:], bool) if valid is None else np.asarray(valid) <= 0
    axes = np.asarray(figure.subplots(3, len(frames), squeeze=False))
    rs = frame_r(measured, predicted, None if valid is None else ~bad)
    residuals = np.where(bad, np.nan, np.sqrt(np.clip(measured, 0, None)) - np.sqrt(np.clip(predicted, 0, None)))
    # One symmetric residual scale for all frames (their 99th percentile), so that frames compare.
    finite = np.abs(residuals[np.isfinite(residuals)])
    limit = max(float(np.percentile(finite, 99)) if finite.size else 1.0, 1e-6)
    images = []
    for column, (label, index) in enumerate(frames):
        # log10(1 + counts): zero counts stay drawable; one scale for both rows of a frame.
        shown = [np.where(bad, np.nan, np.log10(1 + np.clip(x[column], 0, None))) for x in (measured, predicted)]
        high = max(float(np.nanmax(shown[0])) if np.any(~bad) else 1.0, 1e-3)
        title = f"√I − |Ψ|, R = {rs[column]:.3g}"
        images.append(
            (
                _image(figure, axes[0, column], shown[0], f"{_name(label, index)}: measured", _MAP, vmin=0, vmax=high),
                _image(figure, axes[1, column], shown[1], "predicted", _MAP, vmin=0, vmax=high),
                _image(figure, axes[2, column], residuals[column], title, "RdBu_r", vmin=-limit, vmax=limit),
            )
        )
    figure.suptitle("log10(1 + counts) measured and predicted; amplitude residual in √counts; bad pixels grey")
    return images


def plot_patterns(
    measured: Any, predicted: Any, path: str | pathlib.Path, *, frames: Any, valid: Any = None
) -> pathlib.Path:
    """Save measured and predicted diffraction patterns of a few frames, with their amplitude residual.

    One column per frame: the measured counts, the model's predicted intensity (both as
    `log10(1 + counts)` on the frame's measured scale) and `sqrt(I) - |Psi|` on one
    symmetric diverging scale for all frames, titled with the frame's R. Bad pixels are grey. Structure in
    the residual that repeats across frames points at the model (probe, geometry,
    background); a single bad frame at the scan.

    **Arguments:**

    - `measured`, `predicted`: `(k, H, W)` intensities of the `k` frames shown.
    - `path`: the PNG file to write.
    - `frames`: `k` frame indices, or `(label, index)` pairs (as `select_frames` gives).
    - `valid`: optional `(H, W)` detector mask (1 = use, 0 = bad pixel).

    **Returns:**

    The path written.
    """
    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    if measured.ndim != 3 or measured.shape != predicted.shape:
        raise ValueError(
            f"`measured` and `predicted` must be (k, H, W) of one shape, got {measured.shape} and {predicted.shape}"
        )
    frames = [item if isinstance(item, tuple) else ("", int(item)) for item in frames]
    if len(frames) != measured.shape[0]:
        raise ValueError(f"`frames` must name the {measured.shape[0]} frames shown, got {len(frames)}")
    figure = _figure(3.6 * len(frames) + 1, 10)
    _draw_patterns(figure, measured, predicted, frames, None if valid is None else np.asarray(valid))
    return _save(figure, path)
