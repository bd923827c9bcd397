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


# ---- quantitative figures: scale bars, masks, limits, the loss's unit and floor -----------------


@pytest.mark.parametrize(
    "width, length, label",
    [(3.28e-6, 5e-7, "500 nm"), (4e-6, 1e-6, "1 µm"), (2.5e-3, 5e-4, "500 µm"), (1.0e-9, 2e-10, "200 pm")],
)
def test_scale_bar_length_is_the_longest_1_2_5_length_up_to_a_quarter(width, length, label):
    from janssen.plots import scale_bar_length

    got, text = scale_bar_length(width)
    assert got == pytest.approx(length, rel=1e-12) and text == label
    assert got <= width / 4 * (1 + 1e-9)
    with pytest.raises(ValueError, match="width"):
        scale_bar_length(0.0)


def _bars(axes):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    return [artist for artist in axes.artists if isinstance(artist, AnchoredSizeBar)]


def test_object_figure_masks_the_unscanned_region_and_scales_over_the_scanned_one():
    from matplotlib.colors import to_rgba

    from janssen.plots import illuminated_region
    from janssen.plots._figures import MASK_GREY, _draw_object, _figure

    obj, _, _ = _half_radian_object()
    y, x = np.mgrid[:60, :60] - 30.0
    illumination = np.exp(-(x**2 + y**2) / 200.0)  # smooth: the 10 % contour is a circle of radius ~17
    region = illuminated_region(illumination)
    np.testing.assert_array_equal(region, illumination > 0.1 * np.percentile(illumination, 99))
    assert 500 < region.sum() < 1500
    figure = _figure(10, 4.5)
    axes = figure.subplots(1, 2)
    amplitude, phase = _draw_object(figure, axes, obj, "phase", region, np.array([2e-8, 2e-8]))
    for image in (amplitude, phase):
        # Exactly the unscanned pixels are masked, drawn in the mask grey.
        np.testing.assert_array_equal(np.ma.getmaskarray(image.get_array()), ~region)
        assert image.get_cmap().get_bad() == pytest.approx(to_rgba(MASK_GREY))
    assert phase.get_clim() == pytest.approx(tuple(np.percentile(np.angle(obj[region]), (1, 99))))
    assert amplitude.get_clim() == pytest.approx(tuple(np.percentile(np.abs(obj[region]), (1, 99))))
    # The scale bar: 60 px of 20 nm = 1.2 um wide -> a 200 nm bar, 10 px long, on each panel.
    for panel in axes:
        (bar,) = _bars(panel)
        assert bar.size_bar.get_children()[0].get_width() == pytest.approx(2e-7 / 2e-8)
        assert bar.txt_label.get_text() == "200 nm"


def test_plot_object_with_illumination_and_pixel_size_writes_the_same_size(tmp_path):
    obj, _, illumination = _half_radian_object()
    path = plot_object(obj, tmp_path / "o.png", illumination=illumination, pixel_size=(1e-8, 1e-8))
    assert _png_size(path) == (1000, 450)
    with pytest.raises(ValueError, match="illumination"):
        plot_object(obj, tmp_path / "x.png", illumination=illumination[:5])


def test_probe_phase_is_grey_outside_the_beam_and_carries_a_scale_bar():
    from matplotlib.colors import to_rgba

    from janssen.plots import beam_region
    from janssen.plots._figures import MASK_GREY, _figure, _phase_image, _scale_bar

    y, x = np.mgrid[:32, :32] - 16.0
    probe = np.exp(-(x**2 + y**2) / 20) * np.exp(0.4j * np.tanh(x / 4))
    beam = beam_region(probe)
    # |P| >= 5 % of max: exp(-r^2/20) >= 0.05, r <= sqrt(20 ln 20) = 7.7 px.
    np.testing.assert_array_equal(beam, np.hypot(x, y) <= np.sqrt(20 * np.log(20)))
    figure = _figure(4, 4)
    axes = figure.subplots()
    image = _phase_image(figure, axes, probe, "mode 0", beam)
    np.testing.assert_array_equal(np.ma.getmaskarray(image.get_array()), ~beam)
    assert image.get_cmap().get_bad() == pytest.approx(to_rgba(MASK_GREY))
    bar = _scale_bar(axes, np.array([5e-9, 5e-9]), 32)  # 160 nm wide: a 20 nm bar of 4 px
    assert bar.size_bar.get_children()[0].get_width() == pytest.approx(4.0)
    assert bar.txt_label.get_text() == "20 nm"


def test_loss_plot_has_its_unit_and_the_noise_floor():
    from janssen.plots import LOSS_LABEL
    from janssen.plots._figures import _draw_loss, _figure

    axes = _figure(6, 4).subplots()
    losses = np.geomspace(3.0, 0.6, 20)
    _draw_loss(axes, losses, 0.53)
    assert axes.get_ylabel() == LOSS_LABEL == "RMS amplitude residual (√counts)"
    curve, floor = axes.get_lines()
    np.testing.assert_array_equal(curve.get_ydata(), losses)
    assert tuple(floor.get_ydata()) == (0.53, 0.53) and floor.get_linestyle() == "--"
    assert "0.53" in axes.get_legend().get_texts()[1].get_text()
    assert axes.get_yscale() == "linear"  # 3 to 0.6: within a decade
    # No floor (or a NaN one): the curve alone.
    axes = _figure(6, 4).subplots()
    _draw_loss(axes, np.geomspace(10, 0.1, 20), float("nan"))
    assert len(axes.get_lines()) == 1
    assert axes.get_yscale() == "log"  # two decades
    assert axes.yaxis.get_major_formatter()(0.1, 0) == "0.1"  # plain numbers, not 10^-1


@pytest.fixture(scope="module")
def tiny_run():
    """A tiny simulated scan, a few rPIE iterations and the verdict (module-scoped: one compilation)."""
    import jax.random as jr

    import janssen.invert as jinv
    from janssen.io import simulate

    truth = simulate(32, 16, key=jr.PRNGKey(1), photons=1e5)
    start = jinv.init_far_field_microscope(truth.data)
    solution = jinv.reconstruct(start, truth.data, jinv.RPIE(), num_iterations=5, key=jr.PRNGKey(0))
    return truth, solution, jinv.compute_verdict(solution.microscope, truth.data)


def test_loss_floor_is_the_poisson_floor_in_the_losses_unit(tiny_run):
    import janssen.invert as jinv
    from janssen.plots import loss_floor

    truth, solution, verdict = tiny_run
    data = truth.data
    valid = np.asarray(data.valid, bool)
    counts = np.asarray(data.intensities, np.float64)[:, valid]
    # The floor of R (a fraction of the counts) times the mean count per frame and valid pixel, rooted.
    assert loss_floor(verdict) == pytest.approx(np.sqrt(verdict.floor * counts.mean()), rel=1e-6)
    # The loss's unit: the verdict's mean per-pixel residual is the squared RMS amplitude residual.
    rms = jinv.data_residual(solution.microscope, data)
    assert np.sqrt(np.nanmean(verdict.per_pixel)) == pytest.approx(rms, rel=1e-4)
    # The true model scores about the floor: its RMS residual is near loss_floor (Poisson estimate).
    truth_rms = jinv.data_residual(truth.microscope(), data)
    assert loss_floor(verdict) == pytest.approx(truth_rms, rel=0.1)
    assert np.isnan(loss_floor({"r": 0.0, "floor": 0.1, "per_frame": np.zeros(0), "per_pixel": np.ones((2, 2))}))


def test_select_frames_and_frame_r():
    from janssen.plots import frame_r, select_frames

    per_frame = np.array([0.3, np.nan, 0.1, 0.5, 0.2, 0.4])
    assert select_frames(per_frame) == [("best", 2), ("median", 0), ("worst", 3)]
    assert select_frames([0.2, 0.1]) == [("best", 1), ("worst", 0)]
    assert select_frames([np.nan]) == []
    measured = np.array([[[4.0, 9.0], [0.0, 1.0]]])
    predicted = np.array([[[1.0, 9.0], [1.0, 100.0]]])
    # (1 - 2)^2 + 0 + (1 - 0)^2 [+ (10 - 1)^2 on the pixel the mask drops] over the counts 13 [+ 1].
    assert frame_r(measured, predicted, np.array([[1, 1], [1, 0]]))[0] == pytest.approx(2 / 13)
    assert frame_r(measured, predicted)[0] == pytest.approx(83 / 14)


def test_patterns_figure_matches_the_verdict(tiny_run, tmp_path):
    import jax.numpy as jnp

    from janssen.plots import frame_r, plot_patterns, select_frames
    from janssen.plots._figures import _figure
    from janssen.plots._patterns import _draw_patterns

    truth, solution, verdict = tiny_run
    frames = select_frames(verdict.per_frame)
    indices = [index for _, index in frames]
    assert verdict.per_frame[indices[0]] == np.nanmin(verdict.per_frame)
    assert verdict.per_frame[indices[-1]] == np.nanmax(verdict.per_frame)
    measured = np.asarray(truth.data.intensities)[indices]
    predicted = np.asarray(solution.microscope.predict(jnp.asarray(indices)))
    valid = np.asarray(truth.data.valid)
    # The figure's R per frame is the verdict's.
    np.testing.assert_allclose(frame_r(measured, predicted, valid), verdict.per_frame[indices], rtol=1e-4)
    images = _draw_patterns(_figure(12, 10), measured, predicted, frames, valid)
    top, middle, bottom = images[0]
    np.testing.assert_allclose(np.asarray(top.get_array()), np.log10(1 + measured[0]))
    np.testing.assert_allclose(np.asarray(middle.get_array()), np.log10(1 + predicted[0]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(bottom.get_array()), np.sqrt(measured[0]) - np.sqrt(predicted[0]), atol=1e-5)
    # One symmetric scale for all frames: the 99th percentile of |sqrt(I) - |Psi||.
    limit = np.percentile(np.abs(np.sqrt(measured) - np.sqrt(predicted))[:, valid > 0], 99)
    for _, _, residual in images:
        assert residual.get_clim() == pytest.approx((-limit, limit), rel=1e-5)
    assert _png_size(plot_patterns(measured, predicted, tmp_path / "p.png", frames=frames)) == (1180, 1000)
    with pytest.raises(ValueError, match="frames"):
        plot_patterns(measured, predicted, tmp_path / "q.png", frames=[1])


def test_truth_comparison_error_is_the_object_error(tiny_run, tmp_path):
    import janssen.invert as jinv
    from janssen.plots import align_to_truth, plot_truth_comparison

    truth, solution, _ = tiny_run
    illumination = np.asarray(jinv.illumination_map(truth.microscope()))
    true_object = np.asarray(truth.object)
    # A result off by a shift and a global complex factor: aligned back exactly, error 0.
    moved = np.roll(true_object, (1, -2), (0, 1)) * 0.7 * np.exp(0.4j)
    aligned, error = align_to_truth(true_object, moved, illumination)
    lit = illumination > 0.5 * np.percentile(illumination, 99)
    assert error < 1e-6 and np.allclose(aligned[lit], true_object[lit], atol=1e-5)
    result = np.asarray(solution.microscope.sample.sample)
    path, error = plot_truth_comparison(true_object, result, illumination, tmp_path / "t.png", pixel_size=(2e-8, 2e-8))
    assert error == pytest.approx(jinv.object_error(true_object, result, illumination), rel=1e-6)
    assert 0.0 < error < 1.0
    assert _png_size(path) == (1300, 800)


def test_save_figures_with_data_and_truth(tiny_run, tmp_path):
    truth, solution, verdict = tiny_run
    paths = save_figures(solution, tmp_path, "run", verdict=verdict, data=truth.data, truth=truth)
    assert sorted(paths) == ["loss", "object", "patterns", "probe", "residual", "truth"]
    assert _png_size(paths["patterns"]) == (1180, 1000) and _png_size(paths["truth"]) == (1300, 800)


# ---- objects larger than the display limit -------------------------------------------------


def _drawn(monkeypatch, draw):
    """The figure a `plot_*` call draws (its file is not written): `(images' arrays, suptitle)`."""
    import janssen.plots._figures as figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    draw()
    (figure,) = drawn
    arrays = [np.ma.getdata(axes.images[0].get_array()) for axes in figure.axes if axes.images]
    title = figure._suptitle.get_text() if figure._suptitle is not None else ""
    return arrays, title


def _block_object(side=4100, ramp=(0.0, 0.0)):
    """A `side` x `side` complex64 unit object holding a block of phase 0.7 rad at rows 1000-1999, columns
    1500-2599 (edges on multiples of 5, the factor it is drawn at), times the linear phase
    `exp(i (gx x + gy y))`; built from 1-D factors (one full-size array)."""
    gx, gy = ramp
    along_y = np.exp(1j * gy * np.arange(side)).astype(np.complex64)
    along_x = np.exp(1j * gx * np.arange(side)).astype(np.complex64)
    obj = along_y[:, None] * along_x[None, :]
    obj[1000:2000, 1500:2600] *= np.complex64(np.exp(0.7j))
    return obj


def test_display_factor_is_the_smallest_that_fits_the_limit():
    from janssen.plots import DISPLAY_LIMIT, display_factor

    assert DISPLAY_LIMIT == 1024
    cases = {(4936, 4932): 5, (4100, 4100): 5, (1024, 1024): 1, (1025, 10): 2, (3, 3072): 3, (2, 3073): 4}
    for shape, factor in cases.items():
        assert display_factor(shape) == factor
        assert max(shape) / factor <= DISPLAY_LIMIT < max(shape) / max(factor - 1, 1e-9)
    with pytest.raises(ValueError, match="`limit` must be an integer >= 1 pixel, got 0"):
        display_factor((10, 10), 0)


def test_decimate_takes_block_means_without_a_full_size_copy():
    """Block means equal the reshape-and-mean definition (to float32 rounding); the rows and columns
    left over are dropped; decimating a 4100 x 4100 complex64 image (134 MB) allocates at most a
    third of its size (measured: 0.22 with a ramp removed, 0.11 without; a full-size complex64
    copy would be 1, a complex128 one 2)."""
    import tracemalloc

    from janssen.plots import decimate

    rng = np.random.default_rng(1)
    small = (rng.normal(size=(2, 31, 20)) + 1j * rng.normal(size=(2, 31, 20))).astype(np.complex64)
    expected = small[:, :30, :18].astype(np.complex128).reshape(2, 10, 3, 6, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(decimate(small, 3), expected, rtol=1e-6)
    assert decimate(small, 3).dtype == np.complex64 and decimate(small, 1) is small
    assert decimate(np.arange(16).reshape(4, 4), 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]
    with pytest.raises(ValueError, match="`factor` must be an integer >= 1, got 0"):
        decimate(small, 0)

    big = _block_object()
    for ramp in ((0.0, 0.0), (0.5, 0.3)):
        tracemalloc.start()
        decimate(big, 3, ramp=ramp)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < big.nbytes / 3, (ramp, peak / big.nbytes)


def test_a_large_object_is_drawn_decimated_with_its_pattern_and_the_factor_named(monkeypatch, tmp_path):
    """A 4100 x 4100 object is drawn 820 x 820 (factor 5, <= DISPLAY_LIMIT); a block of phase 0.7 rad
    keeps it in the decimated phase image (measured: exactly 0.7 inside, 0 outside, amplitude 1 to
    6e-8), and with a steep linear ramp (0.5 and 0.3 rad per pixel) removed before the blocks are
    averaged: amplitude 1 to 3e-7 (averaged with the ramp on, the blocks drop to 0.89), the block
    0.69996 rad above its surroundings, flat to 2e-5 rad."""
    from janssen.plots import DISPLAY_LIMIT

    inside, outside = (slice(204, 396), slice(306, 516)), (slice(0, 180), slice(0, 240))  # of the 820^2 image
    obj = _block_object()
    (amplitude, phase), title = _drawn(monkeypatch, lambda: plot_object(obj, tmp_path / "o.png"))
    assert amplitude.shape == phase.shape == (820, 820) and max(phase.shape) <= DISPLAY_LIMIT
    np.testing.assert_allclose(phase[inside], 0.7, atol=1e-5)
    np.testing.assert_allclose(phase[outside], 0.0, atol=1e-5)
    np.testing.assert_allclose(amplitude, 1.0, atol=1e-5)
    assert title == (
        "decimated 5x for display: means of 5 x 5 pixel blocks of the 4100 x 4100 object;\n"
        "the saved arrays keep full resolution"
    )

    tilted = _block_object(ramp=(0.5, 0.3))
    (amplitude, phase), _ = _drawn(
        monkeypatch, lambda: plot_object(tilted, tmp_path / "t.png", remove_ramp=True, pixel_size=[1e-8, 1e-8])
    )
    np.testing.assert_allclose(amplitude[inside], 1.0, atol=1e-4)
    np.testing.assert_allclose(amplitude[outside], 1.0, atol=1e-4)
    step = np.median(phase[inside]) - np.median(phase[outside])
    assert abs(step - 0.7) < 1e-3 and np.ptp(phase[inside]) < 1e-3 and np.ptp(phase[outside]) < 1e-3


def test_objects_within_the_limit_are_drawn_pixel_for_pixel(monkeypatch, tmp_path):
    """At or below DISPLAY_LIMIT nothing changes: the drawn arrays are exactly |O| and the phase of
    `remove_linear_phase(O)` (no decimation, no note in the title)."""
    from janssen.invert import remove_linear_phase

    rng = np.random.default_rng(2)
    for shape in ((300, 200), (1024, 40)):
        obj = (np.exp(1j * rng.uniform(-1, 1, shape)) * rng.uniform(0.5, 1, shape)).astype(np.complex64)
        (amplitude, phase), title = _drawn(monkeypatch, lambda: plot_object(obj, tmp_path / "o.png", remove_ramp=True))
        flat = remove_linear_phase(obj)
        np.testing.assert_array_equal(amplitude, np.abs(flat))
        np.testing.assert_array_equal(phase, np.angle(flat))
        assert title == ""
        (amplitude, phase), _ = _drawn(monkeypatch, lambda: plot_object(obj, tmp_path / "o.png"))
        np.testing.assert_array_equal(amplitude, np.abs(obj))
        np.testing.assert_array_equal(phase, np.angle(obj))


def test_the_report_names_the_factor_of_a_decimated_object(tmp_path):
    """The report's object caption says the image is decimated 5x (a 4100 x 4100 object); the probe's
    (64 x 64) says nothing; the result file keeps the object at full size."""
    import janssen.io as jio
    from janssen.plots import write_report

    obj = _block_object()
    probe = np.ones((1, 64, 64), dtype=np.complex64)
    positions = np.stack(np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 4)), -1).reshape(-1, 2) * 1.5e-5
    jio.write_result(
        tmp_path / "big.h5",
        object=obj,
        probe=probe,
        positions=positions.astype(np.float32),
        loss=np.array([1.0, 0.5]),
        wavelength=1e-10,
        distance=1.0,
        object_pixel_size=np.array([1e-8, 1e-8]),
        attrs={"engine": "RPIE"},
    )
    page = write_report(tmp_path / "big.h5").read_text(encoding="utf-8")
    note = "decimated 5x for display: means of 5 x 5 pixel blocks of the 4100 x 4100 object"
    assert page.count(note) == 1 and "of the 64 x 64 probe" not in page
    assert jio.read_result(tmp_path / "big.h5")["object"].shape == (4100, 4100)
