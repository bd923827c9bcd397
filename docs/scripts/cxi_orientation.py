"""The figure of docs/conventions.md, "Detector orientation in CXI files".

    python docs/scripts/cxi_orientation.py [--out docs/img/cxi_orientation.png]

Left: janssen's frame as `matplotlib.pyplot.imshow` shows it: columns along +x, rows along
+y, the beam on the centre pixel (H // 2, W // 2), a scan position (the beam on the
sample) and the sample translation CXI stores, its negative. Right: one asymmetric frame
(an "F" beside the centre) as `janssen.io.write_cxi` stores it in each of the eight
`DETECTOR_ORIENTATIONS`; `read_cxi` maps every one back onto the left panel's frame.
"""

import argparse
import pathlib
import tempfile

import h5py
import matplotlib
import numpy as np

from janssen.io import DETECTOR_ORIENTATIONS, MicroscopeData, write_cxi

SHAPE = (10, 8)  # (H, W)


def letter_frame() -> np.ndarray:
    """An "F" whose stem starts at the centre pixel: any flip or transpose changes it."""
    frame = np.zeros(SHAPE, np.float32)
    centre_row, centre_column = SHAPE[0] // 2, SHAPE[1] // 2
    frame[centre_row - 3 : centre_row + 1, centre_column] = 1.0  # stem, upwards from the centre
    frame[centre_row - 3, centre_column : centre_column + 3] = 1.0  # top bar
    frame[centre_row - 2, centre_column : centre_column + 2] = 1.0  # middle bar
    frame[centre_row, centre_column] = 2.0  # the beam: zero frequency
    return frame


def stored(frame: np.ndarray, axes: tuple[str, str]) -> np.ndarray:
    data = MicroscopeData(frame[None], np.zeros((1, 2)), 1e-10, 75e-6, 1.0)
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "f.cxi"
        write_cxi(path, data, detector_axes=axes)
        with h5py.File(path, "r") as handle:
            return handle["entry_1/instrument_1/detector_1/data"][0]


def draw(out: pathlib.Path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = letter_frame()
    figure = plt.figure(figsize=(11, 4.6), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=[1.0, 1.7])
    ax = left.subplots()
    ax.imshow(frame, cmap="Greys", vmin=0, vmax=2.5)
    centre = np.array([SHAPE[1] // 2, SHAPE[0] // 2])  # (x, y) in pixel indices
    arrow = {"arrowstyle": "->", "lw": 2}
    ax.annotate("", centre + [3.4, 0], centre, arrowprops={**arrow, "color": "tab:red"})
    ax.text(centre[0] + 3.5, centre[1] + 0.9, "+x (columns)", color="tab:red", ha="right")
    ax.annotate("", centre + [0, 3.4], centre, arrowprops={**arrow, "color": "tab:blue"})
    ax.text(centre[0] + 0.3, centre[1] + 3.9, "+y (rows)", color="tab:blue")
    position = np.array([-2.5, 3.0])
    ax.annotate("", centre + position, centre, arrowprops={**arrow, "color": "tab:green"})
    ax.text(*(centre + position + [0, 0.7]), "position\n(beam on sample)", color="tab:green", ha="center", va="top")
    ax.annotate("", centre - position, centre, arrowprops={**arrow, "color": "tab:orange", "ls": "--"})
    ax.text(*(centre - position - [0, 0.5]), "CXI translation\n(sample)", color="tab:orange", ha="center")
    ax.set_title('janssen\'s frame ("+y", "+x"); beam at (H//2, W//2)', fontsize=10)
    ax.set_xticks(range(SHAPE[1]))
    ax.set_yticks(range(SHAPE[0]))
    axes_grid = right.subplots(2, 4)
    for ax, axes in zip(axes_grid.flat, DETECTOR_ORIENTATIONS):
        ax.imshow(stored(frame, axes), cmap="Greys", vmin=0, vmax=2.5)
        ax.set_title(f"rows {axes[0]}, columns {axes[1]}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    right.suptitle("the same frame as stored with write_cxi(..., detector_axes=...)", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("docs/img/cxi_orientation.png"))
    draw(parser.parse_args().out)
