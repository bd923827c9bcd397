"""Figures: the PNG files are written, valid, and of the expected pixel size."""

import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from janssen.plots import plot_loss, plot_object, plot_probe, save_figures  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    """(width, height) from the PNG header; asserts the signature and the IHDR chunk."""
    raw = path.read_bytes()
    assert raw[:8] == PNG_SIGNATURE
    assert raw[12:16] == b"IHDR"
    assert raw[-8:-4] == b"IEND"
    return struct.unpack(">II", raw[16:24])


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    obj = np.exp(1j * rng.uniform(-1, 1, (40, 50))) * rng.uniform(0.5, 1, (40, 50))
    probe = rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))
    return obj.astype(np.complex64), probe.astype(np.complex64)


def test_object_probe_loss_figures(arrays, tmp_path):
    obj, probe = arrays
    # Figures are 100 dpi: 10 x 4.5 in, (4 * modes + 1) x 3.6 in, 6 x 4 in.
    assert _png_size(plot_object(obj, tmp_path / "o.png")) == (1000, 450)
    assert _png_size(plot_probe(probe, tmp_path / "p.png")) == (900, 360)
    assert _png_size(plot_probe(probe[0], tmp_path / "p1.png", phase=True)) == (500, 720)
    assert _png_size(plot_loss(np.geomspace(10, 0.1, 30), tmp_path / "l.png")) == (600, 400)


def test_save_figures_and_no_pyplot_state(arrays, tmp_path):
    import sys

    import jax.numpy as jnp
    import jax.random as jr

    from janssen.invert import RESULTS, Solution
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    obj, probe = arrays
    microscope = FarFieldMicroscope(Probe(probe, 1e-9, 1e-8), SampleFunction(obj, 1e-8), jnp.zeros((1, 2)))
    solution = Solution(microscope, None, jnp.array([2.0, 1.0]), 2, RESULTS.max_iterations_reached, jr.PRNGKey(0), None)
    paths = save_figures(solution, tmp_path / "figs", "run")
    assert sorted(paths) == ["loss", "object", "probe"]
    for name, path in paths.items():
        assert path == tmp_path / "figs" / f"run_{name}.png"
        width, height = _png_size(path)
        assert 300 <= width <= 2000 and 300 <= height <= 2000
        assert 5_000 < path.stat().st_size < 2_000_000
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or not pyplot.get_fignums()
