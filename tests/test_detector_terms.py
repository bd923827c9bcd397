"""Detector terms: a learned background and per-frame scales in the one forward model."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import illumination_map, noiseless_far_field_problem, object_error, tiny_far_field_problem

from janssen.invert import (
    RPIE,
    GaussNewton,
    Gradient,
    PoissonLoss,
    PositionLM,
    estimate_background,
    load_solution,
    optimistix_engine,
    reconstruct,
    save_solution,
    trainable_spec,
)
from janssen.invert._constraints import constrain_step
from janssen.io import MicroscopeData, read_result
from janssen.scopes import DetectorResponse, NearFieldMicroscope, with_detector

_predict = jax.jit(lambda m: m())


def _with_data(data, intensities):
    return MicroscopeData(intensities, data.positions, data.wavelength, data.camera_pixel_size, data.distance)


# ---- the forward model -------------------------------------------------------------------


def _microscopes():
    # The detector term sits in the shared `intensity`: the far field and one microscope with other optics.
    _, true, _ = noiseless_far_field_problem(grid=2)
    near = NearFieldMicroscope(true.probe, true.sample, true.positions, distance=1e-4)
    return {"far": true, "near": near}


@pytest.mark.parametrize("kind", ["far", "near"])
def test_zero_background_and_unit_scales_predict_exactly_as_without(kind):
    microscope = _microscopes()[kind]
    npos = microscope.num_positions
    with_terms = with_detector(microscope, DetectorResponse(jnp.zeros(microscope.detector_shape), jnp.ones(npos)))
    np.testing.assert_array_equal(np.asarray(_predict(with_terms)), np.asarray(_predict(microscope)))
    single = with_terms.intensity(microscope.positions[1], jnp.int32(1))
    np.testing.assert_array_equal(np.asarray(single), np.asarray(microscope.intensity(microscope.positions[1])))


def test_terms_enter_as_scale_times_coherent_plus_background():
    microscope = _microscopes()["far"]
    npos = microscope.num_positions
    scales, background = jnp.linspace(0.8, 1.2, npos), jnp.full(microscope.detector_shape, 3.0)
    predicted = _predict(with_detector(microscope, DetectorResponse(background, scales)))
    expected = scales[:, None, None] * _predict(microscope) + background[None]
    np.testing.assert_allclose(np.asarray(predicted), np.asarray(expected), rtol=1e-6, atol=1e-4)
    # The subset the Gradient engine's minibatches predict: the frames' own scales.
    indices = jnp.array([2, 0])
    scaled_only = with_detector(microscope, DetectorResponse(0.0, scales))
    subset = eqx.filter_jit(lambda m, i: m.predict(i))(scaled_only, indices)
    scaled = scales[:, None, None] * _predict(microscope)
    np.testing.assert_allclose(np.asarray(subset), np.asarray(scaled)[np.asarray(indices)], rtol=1e-6, atol=1e-6)


def test_invalid_terms_are_refused_naming_them():
    microscope = _microscopes()["far"]
    with pytest.raises(ValueError, match="`background` must be non-negative"):
        DetectorResponse(-1.0)
    with pytest.raises(ValueError, match="`frame_scale` must be finite and positive"):
        DetectorResponse(frame_scale=jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`detector.background` .* shape \(32, 32\), got shape \(3, 3\)"):
        with_detector(microscope, DetectorResponse(jnp.zeros((3, 3))))
    with pytest.raises(ValueError, match=r"`detector.frame_scale` .* shape \(4,\), got shape \(5,\)"):
        with_detector(microscope, DetectorResponse(frame_scale=jnp.ones(5)))
    with pytest.raises(ValueError, match="`index`"):
        with_detector(microscope, DetectorResponse(frame_scale=jnp.ones(4))).intensity(microscope.positions[0])


def test_names_are_declared_by_the_microscope():
    microscope = _microscopes()["far"]
    terms = with_detector(microscope, DetectorResponse(1.0, jnp.ones(4)))
    spec = trainable_spec(terms, ["background", "frame_scale"])
    assert spec.detector.background is True and spec.detector.frame_scale is True
    assert spec.sample.sample is False
    with pytest.raises(ValueError, match="'detector' is None"):
        trainable_spec(microscope, ["background"])
    with pytest.raises(ValueError, match="'detector.frame_scale' is None"):
        trainable_spec(with_detector(microscope, DetectorResponse(1.0)), ["frame_scale"])


def test_loss_gradients_match_finite_differences(x64):
    data, true, _ = noiseless_far_field_problem(grid=2)
    npos = data.num_positions
    rng = np.random.default_rng(1)
    measured = jnp.asarray(rng.poisson(np.asarray(_predict(true)) + 2.0), jnp.float64)
    loss = PoissonLoss()
    for background in (jnp.asarray(1.5), jnp.full(data.frame_shape, 1.5)):
        terms = with_detector(true, DetectorResponse(background, jnp.linspace(0.9, 1.1, npos)))
        params, static = eqx.partition(terms, trainable_spec(terms, ["background", "frame_scale"]))

        f = eqx.filter_jit(lambda p: loss(eqx.combine(p, static)(), measured))  # noqa: B023
        grads = eqx.filter_jit(jax.grad(f))(params)
        for where in (lambda t: t.detector.frame_scale, lambda t: t.detector.background):
            leaf, grad = np.asarray(where(params)), np.asarray(where(grads))
            flat = np.ravel(leaf)
            for k in (0, flat.size - 1):
                h = 1e-5
                up, down = flat.copy(), flat.copy()
                up[k] += h
                down[k] -= h
                shift = lambda v: eqx.tree_at(where, params, jnp.asarray(v.reshape(leaf.shape)))  # noqa: B023,E731
                numeric = (float(f(shift(up))) - float(f(shift(down)))) / (2 * h)
                np.testing.assert_allclose(np.ravel(grad)[k], numeric, rtol=1e-6, atol=1e-12)


def test_step_constraints_hold_the_scale_gauge_and_the_sign():
    microscope = _microscopes()["far"]
    start = with_detector(microscope, DetectorResponse(jnp.ones(microscope.detector_shape), jnp.ones(4)))
    # An engine's step may leave the domain (a negative background): built past the checks.
    stepped = eqx.tree_at(
        lambda m: (m.detector.background, m.detector.frame_scale),
        start,
        (jnp.full(microscope.detector_shape, -0.5), jnp.array([1.1, 1.3, 1.2, 1.4])),
    )
    spec = trainable_spec(start, ["probe", "background", "frame_scale"])
    held = constrain_step(stepped, start, spec)
    np.testing.assert_allclose(float(jnp.mean(held.detector.frame_scale)), 1.0, rtol=1e-6)
    assert float(jnp.min(held.detector.background)) == 0.0
    # The mean (1.25) goes to the probe's power: the coherent part of the prediction is unchanged.
    unclipped = eqx.tree_at(lambda m: m.detector.background, held, stepped.detector.background)
    np.testing.assert_allclose(np.asarray(_predict(unclipped)), np.asarray(_predict(stepped)), rtol=1e-5, atol=1e-3)
    # With object and probe known, the scales' mean is measured, not a gauge: kept.
    known = constrain_step(stepped, start, trainable_spec(start, ["frame_scale"]))
    np.testing.assert_allclose(float(jnp.mean(known.detector.frame_scale)), 1.25, rtol=1e-6)


def test_pie_refuses_refined_terms_and_frame_scales():
    data, true, start = noiseless_far_field_problem(grid=2)
    terms = with_detector(start, DetectorResponse(1.0, jnp.ones(4)))
    with pytest.raises(ValueError, match=r"do not refine the detector's \['background'\]: use Gradient"):
        reconstruct(terms, data, RPIE(), trainable=["object", "background"], num_iterations=1)
    with pytest.raises(ValueError, match=r"do not model per-frame scales \(`detector.frame_scale`\)"):
        reconstruct(terms, data, RPIE(), trainable=["object"], num_iterations=1)


def test_pie_models_a_fixed_background_exactly():
    """From the truth, on noiseless data with a background: the modulus step leaves everything in place."""
    data, true, _ = noiseless_far_field_problem(grid=2)
    b = 0.05 * float(jnp.mean(_predict(true)))
    with_b = _with_data(data, _predict(true) + b)
    modelled = reconstruct(with_detector(true, DetectorResponse(b)), with_b, RPIE(), num_iterations=2)
    unmodelled = reconstruct(true, with_b, RPIE(), num_iterations=2)
    scale = float(jnp.sqrt(jnp.mean(with_b.intensities)))
    # Measured: a residual of ~1e-6 of the amplitudes (float32 rounding) against 0.1 without the term.
    assert float(modelled.losses[0]) < 1e-4 * scale
    assert float(unmodelled.losses[0]) > 0.02 * scale
    assert object_error(true.sample.sample, modelled.microscope.sample.sample, illumination_map(true)) < 1e-3


# ---- recovery ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scan():
    """High-overlap far-field scan (100 frames of 32 x 32, 1e6 photons a frame), its truth and start."""
    data, true, start = tiny_far_field_problem(jr.PRNGKey(3), grid=10, step=3, photons=1e6)
    expected = _predict(true)
    background = 0.05 * float(jnp.mean(expected))  # 5 % of the mean counts: 48.8 per pixel
    k_scale, k_clean, k_noisy = jr.split(jr.PRNGKey(7), 3)
    scales = 1 + 0.1 * jr.uniform(k_scale, (data.num_positions,), minval=-1, maxval=1)
    scales = scales / jnp.mean(scales)
    clean = _with_data(data, jr.poisson(k_clean, expected).astype(expected.dtype))
    only_bg = _with_data(data, jr.poisson(k_noisy, expected + background).astype(expected.dtype))
    both = _with_data(data, jr.poisson(k_noisy, scales[:, None, None] * expected + background).astype(expected.dtype))
    return {"true": true, "start": start, "b": background, "scales": scales, "clean": clean, "bg": only_bg,
            "both": both, "illum": illumination_map(true)}  # fmt: skip


def _adam(rates):
    return Gradient(loss="poisson", learning_rates=rates)


def _error(scan, solution):
    return object_error(scan["true"].sample.sample, solution.microscope.sample.sample, scan["illum"])


def test_background_estimate_from_the_data(scan):
    # Measured: 0.994 b (0.989 b choosing and measuring the dark pixels on the same frames,
    # 0.961 b from the darkest tenth's mean alone); 0 on the scan without a background.
    assert abs(estimate_background(scan["bg"]) / scan["b"] - 1) < 0.01
    assert estimate_background(scan["clean"]) < 1e-3 * scan["b"]
    with pytest.raises(ValueError, match="`percentile`"):
        estimate_background(scan["bg"], percentile=100.0)


def test_adam_recovers_a_background(scan):
    """The target: a background of 5 % of the mean counts, recovered within 10 %.

    Measured (150 Adam iterations, Poisson loss, from the unit object and a probe with 0.3 rad
    of phase error): background -0.5 %; object error 0.0110, against 0.0110 with the true
    background known and fixed, and 0.0079 on the same scan without a background (its counts'
    noise hides the dark field, which no model recovers; refining the level costs little).

    The run without a background depends on `PoissonLoss`'s floor: from the unit object the
    predicted far field outside the probe's pupil is rounding noise, and where the clean
    scan has counts there a floor of 1e-6 counts let those pixels' gradient (`1 - n / lam`)
    dominate: 0.0085 from this start, 0.0070 after a change of rounding (the on-grid
    prediction), 0.113 from the start perturbed by 1e-6. With the default floor of 1e-2
    counts: 0.0079 from both starts.
    """
    data, start, b = scan["bg"], scan["start"], scan["b"]
    engine = _adam({"background": 30.0})
    guess = with_detector(start, DetectorResponse(estimate_background(data)))
    refined = reconstruct(guess, data, engine, trainable=["object", "probe", "background"], num_iterations=150)
    known = reconstruct(with_detector(start, DetectorResponse(b)), data, engine, num_iterations=150)
    clean = reconstruct(start, scan["clean"], Gradient(loss="poisson"), num_iterations=150)
    level = float(refined.microscope.detector.background)
    error, error_known, error_clean = _error(scan, refined), _error(scan, known), _error(scan, clean)
    print(level / b - 1, error, error_known, error_clean)
    assert abs(level / b - 1) < 0.10, level / b
    assert error < 1.10 * error_known, (error, error_known)
    assert error < 1.5 * error_clean, (error, error_clean)


def test_poisson_adam_does_not_hang_on_the_start_s_rounding(scan):
    """A start perturbed by 1e-6 ends where the exact unit object does (measured 0.0079 both).

    With a floor of 1e-6 counts (the old default) the two ended at 0.0070 and 0.113: the
    dark field's rounding noise drove the gradient (see `PoissonLoss`).
    """
    start = scan["start"]
    noise = 1e-6 * jr.normal(jr.PRNGKey(11), start.sample.sample.shape)
    nudged = eqx.tree_at(lambda m: m.sample.sample, start, start.sample.sample * (1 + noise))
    runs = [reconstruct(s, scan["clean"], Gradient(loss="poisson"), num_iterations=150) for s in (start, nudged)]
    errors = [_error(scan, run) for run in runs]
    print(errors)
    assert max(errors) < 0.012
    assert abs(errors[0] - errors[1]) < 0.1 * errors[0]


def _cropped_error(scan, microscope):
    obj = microscope.sample.sample
    truth = scan["true"].sample.sample
    margin = [(a - b) // 2 for a, b in zip(obj.shape, truth.shape)]
    cropped = obj[margin[0] : margin[0] + truth.shape[0], margin[1] : margin[1] + truth.shape[1]]
    return object_error(truth, cropped, scan["illum"])


@pytest.fixture(scope="module")
def oracle(scan):
    """Object error of Gauss-Newton from the truth, object only, probe and background known (8 iterations).

    Near the best any estimator does on these counts (amplitude least squares is close
    to Poisson maximum likelihood at these levels). Measured: 0.0031 on the clean scan,
    0.0139 with the background: the background's own Poisson noise makes the object
    four times worse for an estimator given everything else.
    """
    names = ["object"]
    clean = reconstruct(scan["true"], scan["clean"], GaussNewton(), trainable=names, num_iterations=8)
    known = with_detector(scan["true"], DetectorResponse(scan["b"]))
    noisy = reconstruct(known, scan["bg"], GaussNewton(), trainable=names, num_iterations=8)
    return {"clean": _error(scan, clean), "bg": _error(scan, noisy)}


def test_background_start_and_the_default_schedule(scan, oracle):
    """The default far-field start models a background where the data hold one.

    Measured (the default schedule, data-derived start): object error 0.0163 with the
    background estimated (0.0169 with the estimate of before, 1.1 % low), 0.072 with it
    ignored (the object takes up the dark counts), 0.0049 on the same scan without a
    background. The issue's target "within 10 % of the background-free run" is not
    reachable on these counts by any estimator: given the true probe and background,
    Gauss-Newton from the truth itself reaches 0.0139 against 0.0031 without the
    background (`oracle`); the default path (1.17 times it) is held to that oracle.
    """
    from janssen.invert import background_start, default_schedule, init_far_field_microscope, run_schedule

    assert background_start(scan["clean"]) is None
    level = background_start(scan["bg"])
    assert abs(level / scan["b"] - 1) < 0.01  # measured -0.55 %
    start = init_far_field_microscope(scan["bg"])
    assert float(start.detector.background) == pytest.approx(level)
    # The probe search estimates it once and hands it on (the start reuses it).
    from janssen.invert import search_probe

    assert search_probe(scan["bg"], factors=(1.0,), iterations=1).background == level
    assert search_probe(scan["clean"], factors=(1.0,), iterations=1).background is None
    run = run_schedule(start, scan["bg"], default_schedule(start))
    error = _cropped_error(scan, run.solution.microscope)
    assert oracle["bg"] > 3 * oracle["clean"]  # the background's noise, not the method
    assert error < 1.25 * oracle["bg"]


def test_adam_recovers_frame_scales_and_a_background_map(scan):
    """Per-frame scales of +-10 % with a (H, W) background map.

    Measured (150 iterations): scales 1.8 % RMS, 4.9 % at most off; the map's mean -0.1 %, each
    pixel 6.5 % RMS off; object error 0.0194 (0.0079 without either term).
    """
    data, start, b, scales = scan["both"], scan["start"], scan["b"], scan["scales"]
    guess = with_detector(
        start, DetectorResponse(jnp.full(data.frame_shape, estimate_background(data)), jnp.ones(data.num_positions))
    )
    engine = _adam({"background": 30.0, "frame_scale": 0.3})
    names = ["object", "probe", "background", "frame_scale"]
    solution = reconstruct(guess, data, engine, trainable=names, num_iterations=150)
    detector = solution.microscope.detector
    off = np.asarray(detector.frame_scale - scales)
    background = np.asarray(detector.background)
    print(np.sqrt(np.mean(off**2)), np.max(np.abs(off)), background.mean() / b - 1, _error(scan, solution))
    assert abs(float(jnp.mean(detector.frame_scale)) - 1) < 1e-5  # the gauge
    assert np.sqrt(np.mean(off**2)) < 0.03 and np.max(np.abs(off)) < 0.07
    assert abs(background.mean() / b - 1) < 0.10
    assert np.sqrt(np.mean((background - b) ** 2)) / b < 0.15
    assert _error(scan, solution) < 0.03


@pytest.mark.slow
def test_gauss_newton_recovers_frame_scales_and_a_background(scan):
    """Measured (20 iterations, ~10 s): background -3.4 %, scales 1.6 % RMS (3.7 % at most) off."""
    data, start, b, scales = scan["both"], scan["start"], scan["b"], scan["scales"]
    guess = with_detector(start, DetectorResponse(estimate_background(data), jnp.ones(data.num_positions)))
    names = ["object", "probe", "background", "frame_scale"]
    solution = reconstruct(guess, data, GaussNewton(), trainable=names, num_iterations=20)
    detector = solution.microscope.detector
    off = np.asarray(detector.frame_scale - scales)
    print(float(detector.background) / b - 1, np.sqrt(np.mean(off**2)), np.max(np.abs(off)))
    assert abs(float(detector.background) / b - 1) < 0.10
    assert np.sqrt(np.mean(off**2)) < 0.03 and np.max(np.abs(off)) < 0.06


# ---- the least-squares engines and result files ----------------------------------------------------


@pytest.fixture(scope="module")
def small(scan):
    """The scan with both terms, from the true object and probe, half the background and unit scales."""
    data, b = scan["both"], scan["b"]
    start = with_detector(scan["true"], DetectorResponse(0.5 * b, jnp.ones(data.num_positions)))
    return data, start, b, scan["scales"]


@pytest.mark.parametrize("engine", [GaussNewton(), optimistix_engine("levenberg-marquardt")], ids=["gn", "optx-lm"])
def test_least_squares_engines_refine_the_terms(small, engine):
    # Object and probe known: background and scales alone, from half the background. Measured:
    # GaussNewton -0.46 % and 0.10 % RMS in 5 iterations; optx LevenbergMarquardt (its first
    # iteration only evaluates) the same. Both fit amplitudes, whose least squares put a background
    # of a few counts low (the sqrt of Poisson counts is biased): on 25 frames of 1e5 photons (a
    # background of 4.9 counts) both found -5.3 %.
    data, start, b, scales = small
    solution = reconstruct(start, data, engine, trainable=["background", "frame_scale"], num_iterations=5)
    detector = solution.microscope.detector
    off = np.asarray(detector.frame_scale - scales)
    print(float(detector.background) / b - 1, np.sqrt(np.mean(off**2)))
    assert abs(float(detector.background) / b - 1) < 0.05
    assert np.sqrt(np.mean(off**2)) < 0.01
    assert solution.final_loss < float(solution.losses[0]) - 0.03  # the floor of the amplitude residual: about 0.5


def test_position_engine_models_the_terms(small):
    data, start, _, _ = small
    solution = reconstruct(start, data, PositionLM(), trainable="positions", num_iterations=2)
    assert solution.final_loss <= float(solution.losses[0])


def test_refined_terms_are_saved_and_resume(small, tmp_path):
    data, start, _, _ = small
    engine, names = GaussNewton(), ["background", "frame_scale"]
    whole = reconstruct(start, data, engine, trainable=names, num_iterations=3)
    first = reconstruct(start, data, engine, trainable=names, num_iterations=2)
    path = tmp_path / "run.h5"
    save_solution(path, first, data, engine)
    refined, detector = read_result(path)["extra"]["refined"], first.microscope.detector
    np.testing.assert_array_equal(refined["detector.background"], np.asarray(detector.background))
    np.testing.assert_array_equal(refined["detector.frame_scale"], np.asarray(detector.frame_scale))
    like = reconstruct(start, data, engine, trainable=names, num_iterations=0)
    resumed = reconstruct(load_solution(path, like), data, engine, num_iterations=1)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(resumed.microscope), leaves(whole.microscope), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
