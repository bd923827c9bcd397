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


def _half_radian_object(outliers=True):
    """A 0.2-0.5 rad disk object on an untouched unit margin, with a few +-pi pixels at the disk's edge."""
    y, x = np.mgrid[:60, :60] - 30.0
    inside = np.hypot(y, x) < 20
    phase = np.where(inside, 0.2 + 0.3 * (x + 20) / 40, 0.0)
    obj = np.where(inside, 0.9, 1.0) * np.exp(1j * phase)
    if outliers:
        obj[30, 11], obj[30, 49], obj[11, 30], obj[49, 30] = -1, -1, np.exp(3j), np.exp(-3j)
    illumination = np.where(np.hypot(y, x) < 18, 1.0, 0.0)
    return obj.astype(np.complex64), inside, illumination


def test_phase_limits_hide_outliers_and_the_untouched_margin():
    from janssen.plots import phase_limits

    obj, inside, illumination = _half_radian_object()
    # Whole image: the margin's zeros set the lower limit.
    assert phase_limits(obj, region=np.ones(obj.shape, bool))[0] == pytest.approx(0.0, abs=1e-6)
    # Default region (moved away from 1 + 0j): the disk; the 4 outliers (0.3 % of it) are clipped away.
    low, high = phase_limits(obj)
    assert 0.19 < low < 0.22 and 0.48 < high < 0.51
    # Illumination given: only the lit disk counts.
    low, high = phase_limits(obj, illumination=illumination)
    assert 0.2 < low < 0.25 and 0.45 < high < 0.5
    # min/max (the old scale) would have spanned nearly +-pi.
    assert np.ptp(np.angle(obj)) > 6
    # A flat phase still gets an increasing range; a wrong-shaped map is refused.
    assert phase_limits(np.ones((8, 8), np.complex64)) == pytest.approx((-0.1, 0.1))
    with pytest.raises(ValueError, match="illumination"):
        phase_limits(obj, illumination=illumination[:10])


def test_object_and_probe_phase_images_use_the_limits():
    from janssen.plots import phase_limits
    from janssen.plots._figures import _figure, _phase_image

    obj, _, illumination = _half_radian_object()
    figure = _figure(4, 4)
    image = _phase_image(figure, figure.subplots(), obj, "phase", None, illumination)
    assert image.get_clim() == pytest.approx(phase_limits(obj, illumination=illumination))
    assert max(abs(limit) for limit in image.get_clim()) < 0.6
    assert image.get_cmap().name == "viridis"  # a 0.3 rad range is not drawn on a cyclic map
    # The probe: phase drawn only where |P|**2 >= 1e-3 of its maximum.
    y, x = np.mgrid[:32, :32] - 16.0
    probe = np.exp(-(x**2 + y**2) / 20) * np.exp(0.4j * np.tanh(x / 4))
    probe[0, 0] = 1e-4 * np.exp(3j)  # a wild phase where there is no beam
    beam = np.abs(probe) ** 2 >= 1e-3 * np.max(np.abs(probe) ** 2)
    image = _phase_image(figure, figure.subplots(), probe, "mode 0", beam)
    shown = np.asarray(image.get_array())
    assert np.all(np.isnan(shown[~beam])) and np.allclose(shown[beam], np.angle(probe[beam]))
    assert max(abs(limit) for limit in image.get_clim()) < 0.45


def _verdict():
    from janssen.invert import Verdict

    rng = np.random.default_rng(3)
    per_pixel = rng.gamma(1.0, 0.3, (12, 16))
    per_pixel[0, 0] = np.nan  # a bad pixel
    per_pixel[3, 4] = 0.0
    return Verdict(r=0.02, floor=0.008, per_frame=rng.uniform(0.01, 0.03, 25), per_pixel=per_pixel)


def test_residual_figure_shows_the_verdicts_values(tmp_path):
    from janssen.plots import plot_residuals
    from janssen.plots._figures import _draw_residuals, _figure

    verdict = _verdict()
    assert _png_size(plot_residuals(verdict, tmp_path / "r.png")) == (1100, 450)
    figure = _figure(11, 4.5)
    image = _draw_residuals(figure, verdict)
    shown = image.get_array()
    shown_ok = ~np.ma.getmaskarray(shown)
    np.testing.assert_array_equal(shown_ok, np.isfinite(verdict.per_pixel) & (verdict.per_pixel > 0))
    np.testing.assert_array_equal(np.asarray(shown)[shown_ok], verdict.per_pixel[shown_ok])
    assert image.norm.vmax == np.nanmax(verdict.per_pixel)
    assert type(image.norm).__name__ == "LogNorm"
    frames_line, r_line, floor_line = figure.axes[0].get_lines()
    np.testing.assert_array_equal(frames_line.get_ydata(), verdict.per_frame)
    assert r_line.get_ydata()[0] == 0.02 and floor_line.get_ydata()[0] == 0.008
    # The dict that read_result returns draws the same figure.
    as_dict = {"r": 0.02, "floor": 0.008, "per_frame": verdict.per_frame, "per_pixel": verdict.per_pixel}
    assert _png_size(plot_residuals(as_dict, tmp_path / "d.png")) == (1100, 450)


def test_save_figures_writes_the_residual_with_a_verdict(arrays, tmp_path):
    import jax.numpy as jnp
    import jax.random as jr

    from janssen.invert import RESULTS, Solution
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    obj, probe = arrays
    microscope = FarFieldMicroscope(Probe(probe, 1e-9, 1e-8), SampleFunction(obj, 1e-8), jnp.zeros((1, 2)))
    solution = Solution(microscope, None, jnp.array([2.0, 1.0]), 2, RESULTS.max_iterations_reached, jr.PRNGKey(0), None)
    paths = save_figures(solution, tmp_path, "run", verdict=_verdict())
    assert sorted(paths) == ["loss", "object", "probe", "residual"]
    assert paths["residual"] == tmp_path / "run_residual.png"
    assert _png_size(paths["residual"]) == (1100, 450)
