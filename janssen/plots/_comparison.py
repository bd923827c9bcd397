"""Truth, result and difference: a reconstruction beside the ground truth it should match."""

import pathlib
from typing import Any

import numpy as np

from ..invert._metrics import best_alignment
from ._figures import (
    _figure,
    _image,
    _phase_image,
    _save,
    _scale_bar,
    decimate,
    decimation_note,
    display_factor,
    illuminated_region,
)


def align_to_truth(truth: Any, result: Any, illumination: Any, *, max_shift: int = 2) -> tuple[np.ndarray, float]:
    """The result aligned to the truth as the object error measures it, and that error.

    The result `R` is shifted by the integer shift (up to `max_shift` pixels each way) and
    scaled by the global complex factor `gamma = <R, T> / <R, R>` that minimise
    `||T - gamma R|| / ||T||` over the well-lit pixels (illumination above half of its
    99th percentile); see `janssen.invert.object_error`, which gives the same number.

    **Arguments:**

    - `truth`, `result`: `(Y, X)` complex objects on one grid.
    - `illumination`: `(Y, X)` summed probe intensity.
    - `max_shift`: largest shift tried, in pixels.

    **Returns:**

    `(aligned, error)`: `gamma` times the shifted result, and the relative error.
    """
    truth, result, illumination = (np.asarray(x) for x in (truth, result, illumination))
    if not (truth.shape == result.shape == illumination.shape):
        raise ValueError(
            f"`truth`, `result` and `illumination` must have one shape, got {truth.shape}, {result.shape} and "
            f"{illumination.shape}"
        )
    sy, sx, gamma, best = best_alignment(truth, result, illumination, max_shift)
    aligned = gamma * np.roll(result, (sy, sx), (0, 1)) if np.isfinite(best) else result
    return aligned, float(best) if np.isfinite(best) else float("nan")  # NaN in the result: no error


def centre_crop(image: Any, shape: tuple[int, int]) -> np.ndarray:
    """The centred `shape` window of `image` (janssen's positions are relative to the centre pixel)."""
    image = np.asarray(image)
    top, left = ((size - want) // 2 for size, want in zip(image.shape[-2:], shape))
    return image[..., top : top + shape[0], left : left + shape[1]]


def plot_truth_comparison(
    truth: Any, result: Any, illumination: Any, path: str | pathlib.Path, *, pixel_size: Any = None
) -> tuple[pathlib.Path, float]:
    """Save truth, result and difference (amplitude and phase rows) with the object error in the title.

    The result is aligned to the truth first (`align_to_truth`: integer shift and global
    complex scale, the gauge ptychography cannot fix). Columns: truth, aligned result,
    difference (`|T - gamma R|`; the phase of `gamma R / T`). Outside the scanned region
    (`illuminated_region`) the pixels are grey. Objects of different sizes are compared on
    their common centred window. The error is the full-resolution one; a window longer
    than `DISPLAY_LIMIT` pixels is drawn decimated (`decimate`), as the title says.

    **Arguments:**

    - `truth`: `(Y, X)` true object.
    - `result`: `(Y', X')` reconstructed object.
    - `illumination`: summed probe intensity on the truth's grid (e.g. `janssen.invert.illumination_map`
      of the true microscope).
    - `path`: the PNG file to write.
    - `pixel_size`: optional object pixel `(x, y)` in metres: adds a scale bar.

    **Returns:**

    `(path, error)`: the path written and the object error (as `janssen.invert.object_error`).
    """
    truth, result, illumination = np.asarray(truth), np.asarray(result), np.asarray(illumination)
    shape = tuple(min(a, b) for a, b in zip(truth.shape, result.shape))
    truth, result, illumination = (centre_crop(x, shape) for x in (truth, result, illumination))
    aligned, error = align_to_truth(truth, result, illumination)
    factor = display_factor(shape)  # the error above is the full-resolution one; the images are for the eye
    if factor > 1:
        truth, aligned, illumination = (decimate(x, factor) for x in (truth, aligned, illumination))
        pixel_size = None if pixel_size is None else np.asarray(pixel_size, dtype=np.float64) * factor
    region = illuminated_region(illumination)
    figure = _figure(13, 8)
    axes = np.asarray(figure.subplots(2, 3))
    grey = np.where(region, 1.0, np.nan)
    limits = _shared_amplitude_limits(truth, aligned, region)
    _image(figure, axes[0, 0], np.abs(truth) * grey, "truth amplitude", "gray", vmin=limits[0], vmax=limits[1])
    _image(figure, axes[0, 1], np.abs(aligned) * grey, "result amplitude", "gray", vmin=limits[0], vmax=limits[1])
    _image(figure, axes[0, 2], np.abs(truth - aligned) * grey, "|truth - result|", "magma", vmin=0)
    truth_phase = _phase_image(figure, axes[1, 0], truth, "truth phase (rad)", region)
    result_phase = _phase_image(figure, axes[1, 1], aligned, "result phase (rad)", region)
    result_phase.set_clim(truth_phase.get_clim())  # one scale for truth and result
    with np.errstate(divide="ignore", invalid="ignore"):
        _phase_image(figure, axes[1, 2], aligned / truth, "phase difference (rad)", region)
    if pixel_size is not None:
        for panel in axes.ravel():
            _scale_bar(panel, pixel_size, truth.shape[1])
    title = f"object error {error:.4f} (aligned by shift and global complex scale; grey: not scanned)"
    note = "" if factor == 1 else "\n" + decimation_note(factor, shape, "objects").replace("; ", ";\n")
    figure.suptitle(title + note)
    return _save(figure, path), error


def _shared_amplitude_limits(truth: np.ndarray, aligned: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([np.abs(truth[region]), np.abs(aligned[region])]) if region.any() else np.ones(1)
    low, high = np.percentile(values, (1, 99))
    return (float(low), float(high)) if high > low else (float(low) - 0.05, float(high) + 0.05)
