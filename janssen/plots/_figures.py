"""PNG figures of a reconstruction: object, probe modes and loss history.

matplotlib is imported inside each function (it is an optional dependency) and figures
are made with the object-oriented API on the Agg canvas: nothing touches pyplot's global
state, so these functions are safe in scripts, servers and tests.
"""

import pathlib
from typing import Any

import numpy as np

from ..invert._ramp import remove_linear_phase


def _figure(width: float | int, height: float | int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _image(figure, axes, values: np.ndarray, title: str, cmap: str) -> None:
    shown = axes.imshow(values, cmap=cmap, origin="upper", interpolation="nearest")
    axes.set_title(title)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.colorbar(shown, ax=axes, shrink=0.8)


def _save(figure, path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    figure.savefig(path, format="png")
    return path


def plot_object(obj: Any, path: str | pathlib.Path, *, remove_ramp: bool = False) -> pathlib.Path:
    """Save the object's amplitude and phase side by side, with colour bars.

    **Arguments:**

    - `obj`: `(Y, X)` complex object (array or `janssen.optics.SampleFunction`).
    - `path`: the PNG file to write.
    - `remove_ramp`: show the phase without its mean linear ramp (the mean phase step
      between neighbouring pixels, weighted by amplitude). Far-field data cannot determine
      that ramp (see `janssen.invert.align_probe_to_data`); only the figure changes.

    **Returns:**

    The path written.
    """
    values = np.asarray(getattr(obj, "sample", obj))
    title = "phase (rad)"
    if remove_ramp:
        values = remove_linear_phase(values)
        title = "phase (rad), mean linear ramp removed"
    figure = _figure(10, 4.5)
    left, right = figure.subplots(1, 2)
    _image(figure, left, np.abs(values), "amplitude", "gray")
    _image(figure, right, np.angle(values), title, "twilight")
    return _save(figure, path)


def plot_probe(probe_modes: Any, path: str | pathlib.Path, *, phase: bool = False) -> pathlib.Path:
    """Save the amplitude of each probe mode (and optionally its phase) in a row.

    Each mode's title gives its share of the total power.

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
            _image(figure, axes[1, m], np.angle(mode), f"mode {m} phase (rad)", "hsv")
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


def save_figures(
    solution: Any, directory: str | pathlib.Path, prefix: str, *, remove_ramp: bool = True
) -> dict[str, pathlib.Path]:
    """Write `<prefix>_object.png`, `<prefix>_probe.png` and `<prefix>_loss.png`.

    **Arguments:**

    - `solution`: a `janssen.invert.Solution`.
    - `directory`: where to write (created if missing).
    - `prefix`: file-name prefix.
    - `remove_ramp`: draw the object's phase without its mean linear ramp (see
      `plot_object`; the saved arrays are untouched).

    **Returns:**

    A dict `{"object": path, "probe": path, "loss": path}`.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    microscope = solution.microscope
    return {
        "object": plot_object(microscope.sample.sample, directory / f"{prefix}_object.png", remove_ramp=remove_ramp),
        "probe": plot_probe(microscope.probe.fields(), directory / f"{prefix}_probe.png", phase=True),
        "loss": plot_loss(solution.losses, directory / f"{prefix}_loss.png"),
    }
