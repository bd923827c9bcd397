"""The verdict: R against a hand computation, the Poisson floor against Monte Carlo, the judgement."""

import math

import jax
import jax.random as jr
import numpy as np
import pytest
from helpers import noiseless_far_field_problem, tiny_far_field_problem

from janssen.invert import Verdict, compute_verdict, poisson_floor, r_factor
from janssen.invert._verdict import _one_minus_gamma_ratio
from janssen.io import MicroscopeData


def _with_counts(data, counts, bad_pixels=None):
    return MicroscopeData(
        counts, data.positions, data.wavelength, data.camera_pixel_size, data.distance, bad_pixels=bad_pixels
    )


def test_r_per_frame_and_per_pixel_match_numpy():
    data, true, start = noiseless_far_field_problem(n=16, grid=3, step=4)
    counts = np.random.default_rng(1).poisson(np.asarray(data.intensities)).astype(np.float32)
    bad = np.zeros(data.frame_shape, bool)
    bad[0, :3] = bad[5, 7] = True
    data = _with_counts(data, counts, bad)
    predicted = np.asarray(jax.jit(lambda m: m())(start), np.float64)
    squared = (np.sqrt(predicted) - np.sqrt(counts.astype(np.float64))) ** 2 * ~bad
    expected_r = squared.sum() / (counts * ~bad).sum()
    # 9 positions in batches of 4: the last batch is padded.
    verdict = compute_verdict(start, data, batch_size=4)
    assert verdict.r == pytest.approx(expected_r, rel=1e-5)
    assert r_factor(start, data, batch_size=9) == pytest.approx(expected_r, rel=1e-5)
    per_frame = squared.sum((1, 2)) / (counts * ~bad).sum((1, 2))
    np.testing.assert_allclose(verdict.per_frame, per_frame, rtol=1e-5)
    per_pixel = squared.mean(0)
    assert np.all(np.isnan(verdict.per_pixel[bad]))
    np.testing.assert_allclose(verdict.per_pixel[~bad], per_pixel[~bad], rtol=1e-5, atol=1e-6 * per_pixel.max())


def test_batches_capped_by_pixels_give_the_same_verdict(monkeypatch):
    """`BATCH_PIXELS` caps the frames handled at once; the sums, hence the verdict, do not change.

    16 x 16 frames: a cap of 3 frames' pixels (plus a few) splits the 9 positions 3, 3, 3
    where `batch_size=64` takes them at once.
    """
    from janssen.invert import _verdict

    data, _, start = noiseless_far_field_problem(n=16, grid=3, step=4)
    counts = np.random.default_rng(2).poisson(np.asarray(data.intensities)).astype(np.float32)
    data = _with_counts(data, counts)
    whole = compute_verdict(start, data, batch_size=64)
    assert _verdict._batches(9, 64, (16, 16)) == [(0, 9)]
    monkeypatch.setattr(_verdict, "BATCH_PIXELS", 3 * 16 * 16 + 5)
    assert _verdict._batches(9, 64, (16, 16)) == [(0, 3), (3, 6), (6, 9)]
    assert _verdict._batches(9, 2, (16, 16)) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    capped = compute_verdict(start, data, batch_size=64)
    assert capped.r == pytest.approx(whole.r, rel=1e-6) and capped.floor == pytest.approx(whole.floor, rel=1e-12)
    np.testing.assert_allclose(capped.per_frame, whole.per_frame, rtol=1e-6)
    np.testing.assert_allclose(capped.per_pixel, whole.per_pixel, rtol=1e-5, atol=1e-7 * np.nanmax(whole.per_pixel))


def test_r_is_zero_for_noise_free_data_of_the_truth():
    data, true, start = noiseless_far_field_problem(n=16, grid=3, step=4)
    assert r_factor(true, data) < 1e-10
    assert r_factor(start, data) > 1e-2


def test_mismatched_microscope_is_refused():
    data, true, _ = noiseless_far_field_problem(n=16, grid=3, step=4)
    fewer = MicroscopeData(
        data.intensities[:4], data.positions[:4], data.wavelength, data.camera_pixel_size, data.distance
    )
    with pytest.raises(ValueError, match="9 scan positions but the data have 4 frames"):
        r_factor(true, fewer)
    with pytest.raises(ValueError, match="batch_size"):
        r_factor(true, data, batch_size=0)


def test_gamma_ratio_against_lgamma():
    x = np.array([1e-3, 0.3, 1.0, 7.5, 49.9, 50.0, 51.0, 300.0])
    reference = [1 - math.exp(math.lgamma(v + 0.5) - math.lgamma(v) - 0.5 * math.log(v)) for v in x]
    np.testing.assert_allclose(_one_minus_gamma_ratio(x), reference, rtol=1e-8)
    # Large x: the series, 1/(8x) to leading order (lgamma loses the digits there).
    assert _one_minus_gamma_ratio(np.array([1e6]))[0] == pytest.approx(1 / 8e6, rel=1e-6)


def _scan_intensities(rng, spread):
    """300 frames of 24 x 24 mean intensities: a bright centre (3000), a dim halo down to 0.02, dark corners.

    `spread` is the Gamma shape of the frame-to-frame speckle (None: the same intensity in every frame).
    """
    y, x = np.mgrid[:24, :24] - 12.0
    radius = np.hypot(y, x)
    envelope = 3000 * np.exp(-(radius**2) / 4) + 0.3 * np.exp(-radius / 6) + 0.02
    envelope[radius > 11] = 0.0
    if spread is None:
        return np.broadcast_to(envelope, (300, 24, 24)).copy()
    return envelope * rng.gamma(spread, 1 / spread, (300, 24, 24))


# Measured: +0.6 %, -0.8 %, +0.3 % and -3.5 %.
@pytest.mark.parametrize("spread, tolerance", [(1.0, 0.02), (3.0, 0.02), (0.5, 0.02), (None, 0.05)])
def test_floor_matches_the_truths_r_on_poisson_draws(spread, tolerance):
    rng = np.random.default_rng(0)
    lam = _scan_intensities(rng, spread)
    counts = rng.poisson(lam).astype(np.float64)
    assert (counts == 0).mean() > 0.5  # most pixels count nothing, as on the real Siemens star
    truth_r = np.sum((np.sqrt(counts) - np.sqrt(lam)) ** 2) / counts.sum()
    data = MicroscopeData(counts.astype(np.float32), np.zeros((300, 2)), 1e-10, 75e-6, 1.0)
    floor = poisson_floor(data, batch_size=128)
    assert floor == pytest.approx(truth_r, rel=tolerance)
    # The textbook 1/4 per counting pixel misses the low-count pixels: this test can tell.
    naive = 0.25 * np.count_nonzero(counts) / counts.sum()
    assert abs(naive / truth_r - 1) > 0.3


def test_floor_leaves_out_bad_pixels():
    rng = np.random.default_rng(2)
    counts = rng.poisson(_scan_intensities(rng, 1.0)[:50]).astype(np.float32)
    bad = np.zeros((24, 24), bool)
    bad[10:14, 10:14] = True  # the bright centre
    hot = counts.copy()
    hot[:, bad] = 1e6
    data = MicroscopeData(counts, np.zeros((50, 2)), 1e-10, 75e-6, 1.0, bad_pixels=bad)
    data_hot = MicroscopeData(hot, np.zeros((50, 2)), 1e-10, 75e-6, 1.0, bad_pixels=bad)
    assert poisson_floor(data_hot) == pytest.approx(poisson_floor(data), rel=1e-12)
    assert poisson_floor(data) != pytest.approx(
        poisson_floor(MicroscopeData(counts, np.zeros((50, 2)), 1e-10, 75e-6, 1.0))
    )


def test_judgement_truth_near_floor_wrong_model_far_above():
    data, true, start = tiny_far_field_problem(jr.PRNGKey(0), n=32, grid=4, photons=1e5)
    good = compute_verdict(true, data)
    assert good.ratio == pytest.approx(1.0, abs=0.1)  # 1.003
    assert good.judgement == "fits to the noise"
    assert good.verdict_line().startswith(f"R = {good.r:.4g} (Poisson floor {good.floor:.4g}, ")
    bad = compute_verdict(start, data)
    assert bad.floor == good.floor
    assert bad.ratio > 20  # 54x
    assert "poor fit" in bad.judgement and "orientation" in bad.judgement and "probe" in bad.judgement
    # Frames transposed against the scan: a wrong geometry.
    transposed = _with_counts(data, np.swapaxes(np.asarray(data.intensities), 1, 2))
    assert compute_verdict(true, transposed).ratio > 4  # 5.7x


def test_judgement_thresholds():
    def verdict(r):
        return Verdict(r=r, floor=0.01, per_frame=np.zeros(1), per_pixel=np.zeros((2, 2)))

    assert verdict(0.012).judgement == "fits to the noise"
    assert verdict(0.016).judgement.startswith("acceptable fit")
    assert verdict(0.034).judgement.startswith("acceptable fit")
    assert verdict(0.036).judgement.startswith("poor fit, R is 4x")
    assert verdict(0.2).judgement.startswith("poor fit, R is 20x")
    assert "diverged" in verdict(math.nan).judgement


def test_result_file_stores_the_verdict_and_old_files_still_read(tmp_path):
    import h5py

    from janssen.invert import RPIE, reconstruct, save_solution
    from janssen.io import read_result

    data, true, start = noiseless_far_field_problem(n=16, grid=3, step=4)
    engine = RPIE()
    solution = reconstruct(start, data, engine, num_iterations=0)
    verdict = compute_verdict(solution.microscope, data)
    save_solution(tmp_path / "with.h5", solution, data, engine, verdict=verdict)
    saved = read_result(tmp_path / "with.h5")
    assert saved["attrs"]["r_factor"] == verdict.r and saved["attrs"]["r_floor"] == verdict.floor
    assert saved["verdict"]["r"] == verdict.r and saved["verdict"]["floor"] == verdict.floor
    np.testing.assert_array_equal(saved["verdict"]["per_frame"], verdict.per_frame)
    np.testing.assert_array_equal(saved["verdict"]["per_pixel"], verdict.per_pixel)
    with h5py.File(tmp_path / "with.h5") as handle:
        assert handle["verdict/per_pixel"].shape == data.frame_shape
    # A file written before verdicts existed (none of the verdict's paths): read as before.
    save_solution(tmp_path / "without.h5", solution, data, engine)
    old = read_result(tmp_path / "without.h5")
    assert old["verdict"] is None and "r_factor" not in old["attrs"]
    np.testing.assert_array_equal(old["object"], saved["object"])
    # A verdict of another scan is refused before anything is written.
    wrong = Verdict(r=verdict.r, floor=verdict.floor, per_frame=verdict.per_frame[:3], per_pixel=verdict.per_pixel)
    with pytest.raises(ValueError, match="per_frame of shape"):
        save_solution(tmp_path / "wrong.h5", solution, data, engine, verdict=wrong)
    assert not (tmp_path / "wrong.h5").exists()


def test_cli_prints_stores_and_draws_the_verdict(cxi_file, tmp_path, capsys):
    from janssen.cli import main
    from janssen.io import read_result

    pytest.importorskip("matplotlib")
    out = tmp_path / "run.h5"
    assert main(["reconstruct", str(cxi_file), "--iterations", "3", "--out", str(out), "--engine", "epie"]) == 0
    text = capsys.readouterr().out
    saved = read_result(out)
    verdict = saved["verdict"]
    line = next(line for line in text.splitlines() if line.startswith("R = "))
    assert line.startswith(f"R = {verdict['r']:.4g} (Poisson floor {verdict['floor']:.4g}, ")
    assert saved["attrs"]["r_factor"] == verdict["r"] and 0 < verdict["floor"] < verdict["r"] < 1
    assert verdict["per_frame"].shape == (16,) and verdict["per_pixel"].shape == (32, 32)
    assert (tmp_path / "run_residual.png").stat().st_size > 1000
    assert saved["attrs"]["cli"]  # the CLI's records survive the rewrite
    # The stored R is that of the stored reconstruction.
    from janssen.io import read_cxi
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    dx = saved["object_pixel_size"]
    probe = Probe(saved["probe"], saved["wavelength"], dx)
    microscope = FarFieldMicroscope(probe, SampleFunction(saved["object"], dx), saved["positions"])
    assert r_factor(microscope, read_cxi(cxi_file)) == pytest.approx(verdict["r"], rel=1e-4)


def test_cli_keeps_the_result_when_the_verdict_fails(cxi_file, tmp_path, capsys, monkeypatch):
    import janssen.invert as jinv
    from janssen.cli import main
    from janssen.io import read_result

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(jinv, "compute_verdict", broken)
    out = tmp_path / "run.h5"
    assert main(["reconstruct", str(cxi_file), "--iterations", "2", "--out", str(out), "--engine", "epie"]) == 0
    captured = capsys.readouterr()
    assert "no verdict (R and its Poisson floor): out of memory" in captured.err
    assert "R: not computed" in captured.out
    saved = read_result(out)
    assert saved["attrs"]["iteration"] == 2 and saved["verdict"] is None
