"""Microscopes: energy, equivalences, sub-pixel exactness, gradients, adjoints, validation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_probe, random_complex

import janssen.io as jio
import janssen.optics as jo
import janssen.scopes as js

N = 32  # probe grid
DX = np.array([1.0e-6, 1.2e-6])  # sample pitch (x, y), deliberately anisotropic
LAM = 500e-9
Z = 0.05  # far-field travel distance
ZOOM = 1.5
KINDS = ["far_field", "scaled_far_field", "simple", "fresnel", "angular_spectrum", "cone"]


def _probe(sigma_px=2.5, modes=1):
    fields = jnp.stack([gaussian_probe((N, N), sigma_px, 0.02) * (0.8**m) for m in range(modes)])
    return jo.Probe(fields, LAM, DX)


def _object_array(shape=(64, 64)):
    # Band-limited and periodic on the object grid, so Fourier shifts of it are exact.
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    phase = 0.6 * np.cos(2 * np.pi * 2 * xx / shape[1]) + 0.4 * np.sin(2 * np.pi * (3 * yy + xx) / shape[0] + 0.4)
    return jnp.asarray((1 + 0.2 * np.cos(2 * np.pi * yy / shape[0])) * np.exp(1j * phase))


def _nyquist_camera(zoom):
    # The camera pitch on which the scaled Fraunhofer transform is the plain unitary FFT.
    return LAM * Z / (N * DX * zoom)


def _microscope(kind, sample, positions, probe=None, **overrides):
    probe = _probe() if probe is None else probe
    if kind == "far_field":
        return js.FarFieldMicroscope(probe, sample, positions)
    if kind == "scaled_far_field":
        propagator = jo.ScaledFraunhofer(Z, 0.9 * _nyquist_camera(1.0), (36, 34))
        return js.FarFieldMicroscope(probe, sample, positions, propagator)
    if kind == "simple":
        options = dict(
            zoom_factor=ZOOM,
            aperture_diameter=20e-6,
            aperture_center=np.array([0.7e-6, -0.5e-6]),
            aperture_edge_width=6e-6,
            travel_distance=Z,
            camera_pixel_size=0.9 * _nyquist_camera(ZOOM),
            detector_shape=(36, 34),
        )
        options.update(overrides)
        return js.SimpleMicroscope(probe, sample, positions, **options)
    if kind == "cone":
        return js.NearFieldMicroscope(probe, sample, positions, distance=2e-4, focus_to_sample=1e-3)
    return js.NearFieldMicroscope(probe, sample, positions, distance=5e-5, propagator=kind)


# Compiled once per microscope structure; eager evaluation compiles every primitive separately.
predict = eqx.filter_jit(lambda microscope: microscope())
exit_waves = eqx.filter_jit(lambda microscope, position: microscope.exit_waves(position))

POSITIONS = np.array([[1.0e-6, -2.4e-6], [-3.3e-6, 4.1e-6], [0.0, 0.0]])


# ---- energy and equivalences -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["far_field", "fresnel", "angular_spectrum", "cone"])
def test_unitary_microscopes_conserve_energy(x64, kind):
    m = _microscope(kind, jo.SampleFunction(_object_array(), DX), POSITIONS)
    frames = predict(m)
    for j, p in enumerate(POSITIONS):
        exit_power = jnp.sum(jnp.abs(exit_waves(m, jnp.asarray(p))) ** 2)
        np.testing.assert_allclose(jnp.sum(frames[j]), exit_power, rtol=1e-12)


def test_simple_microscope_frame_sums_to_transmitted_power(x64):
    # Camera at the Nyquist pitch and as large as the probe grid: nothing is lost, so a
    # frame sums to the power the (beam-fixed) aperture lets through, in probe units.
    m = _microscope(
        "simple",
        jo.SampleFunction(_object_array(), DX),
        POSITIONS,
        camera_pixel_size=_nyquist_camera(ZOOM),
        detector_shape=(N, N),
    )
    frames = predict(m)
    for j, p in enumerate(POSITIONS):
        _, subpixel = m.locate(jnp.asarray(p))
        waves = exit_waves(m, jnp.asarray(p))
        zoomed = m.zoom(jo.OpticalWavefront(waves, LAM, DX))
        aperture = eqx.tree_at(lambda a: a.center, m.aperture, m.aperture.center + subpixel * zoomed.dx)
        t = aperture.transmission(zoomed)
        transmitted = jnp.sum(jnp.abs(waves * t[None]) ** 2)
        assert 0.3 < float(transmitted / jnp.sum(jnp.abs(waves) ** 2)) < 0.95  # the aperture cuts
        np.testing.assert_allclose(jnp.sum(frames[j]), transmitted, rtol=1e-12)


def test_simple_microscope_reduces_to_far_field(x64):
    # zoom 1, an aperture far larger than the grid and the Nyquist camera pitch: scale factor 1
    # (both predict photons per camera pixel when |P|**2 is photons per sample pixel).
    sample = jo.SampleFunction(_object_array(), DX)
    far = js.FarFieldMicroscope(_probe(modes=2), sample, POSITIONS)
    simple = js.SimpleMicroscope(
        _probe(modes=2),
        sample,
        POSITIONS,
        zoom_factor=1.0,
        aperture_diameter=1.0,
        travel_distance=Z,
        camera_pixel_size=_nyquist_camera(1.0),
    )
    expected = predict(far)
    np.testing.assert_allclose(predict(simple), expected, rtol=0, atol=1e-12 * float(jnp.max(expected)))


def test_scaled_far_field_equals_fft_far_field(x64):
    """At the Nyquist camera pitch the ScaledFraunhofer far field is the FFT's, and its
    distance is a differentiable parameter (gradient vs central difference)."""
    sample = jo.SampleFunction(_object_array(), DX)
    far = js.FarFieldMicroscope(_probe(modes=2), sample, POSITIONS)
    scaled = js.FarFieldMicroscope(
        _probe(modes=2), sample, POSITIONS, jo.ScaledFraunhofer(Z, _nyquist_camera(1.0), (N, N))
    )
    expected = predict(far)
    np.testing.assert_allclose(predict(scaled), expected, rtol=0, atol=1e-12 * float(jnp.max(expected)))
    loss = eqx.filter_jit(lambda z: jnp.sum(predict(eqx.tree_at(lambda m: m.propagator.distance, scaled, z)) ** 0.5))
    grad = jax.grad(loss)(jnp.asarray(Z))
    h = 1e-6 * Z
    numeric = (loss(jnp.asarray(Z + h)) - loss(jnp.asarray(Z - h))) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)
    with pytest.raises(ValueError, match="propagator"):
        js.FarFieldMicroscope(_probe(), sample, POSITIONS, jo.Fraunhofer(Z))


def test_simple_microscope_function_returns_data(x64):
    sample = jo.SampleFunction(_object_array(), DX)
    probe = _probe()
    light = jo.OpticalWavefront(probe.modes[0], LAM, DX)
    camera = _nyquist_camera(ZOOM)
    data = js.simple_microscope(sample, jnp.asarray(POSITIONS), light, 1.5, 20e-6, Z, camera)
    assert isinstance(data, jio.MicroscopeData)
    m = js.SimpleMicroscope(
        probe, sample, POSITIONS, zoom_factor=1.5, aperture_diameter=20e-6, travel_distance=Z, camera_pixel_size=camera
    )
    np.testing.assert_allclose(data.intensities, predict(m), rtol=1e-12)
    np.testing.assert_allclose(data.positions, POSITIONS, rtol=0)
    np.testing.assert_allclose(data.camera_pixel_size, camera, rtol=1e-15)
    assert float(data.wavelength) == LAM and float(data.distance) == Z
    # The default soft edge is one zoomed pixel.
    np.testing.assert_allclose(m.aperture.edge_width, 1.5 * DX.max(), rtol=1e-15)


def test_cone_beam_obeys_fresnel_scaling_theorem(x64):
    # Point focus z1 before the sample, detector z2 after it, with z1 = z2: M = 2, so the
    # prediction's pixel k (pitch 2 dx) is the direct propagation's pixel 2k (pitch dx).
    z1 = z2 = 1e-4
    probe = jo.Probe(gaussian_probe((N, N), 2.5), LAM, 1e-6)
    sample = jo.SampleFunction(_object_array((48, 48)), 1e-6)
    position = np.array([[2.0e-6, -3.0e-6]])
    m = js.NearFieldMicroscope(probe, sample, position, distance=z2, focus_to_sample=z1)
    assert float(m.magnification) == 2.0
    predicted = np.asarray(predict(m)[0])
    # Direct: the exit wave times the diverging spherical phase, on a 4x larger grid.
    big = (
        jnp.zeros((4 * N, 4 * N), complex)
        .at[3 * N // 2 : 5 * N // 2, 3 * N // 2 : 5 * N // 2]
        .set(exit_waves(m, jnp.asarray(position[0]))[0])
    )
    wave = jo.OpticalWavefront(big, LAM, 1e-6)
    direct = np.asarray(jax.jit(lambda w: jo.Fresnel(z2)(jo.ThinLens(-z1)(w)).intensity)(wave))
    # Counts per detector pixel: (M dx)**2 / dx**2 = 4 direct pixels' worth of irradiance.
    resampled = 4 * direct[N : 3 * N : 2, N : 3 * N : 2]
    np.testing.assert_allclose(resampled, predicted, rtol=0, atol=1e-5 * predicted.max())
    plane = np.asarray(predict(js.NearFieldMicroscope(probe, sample, position, distance=z2))[0])
    assert np.abs(plane - predicted).max() > 0.1 * predicted.max()  # the geometry matters


# ---- sub-pixel exactness ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_subpixel_position_equals_shifted_object(x64, kind):
    # Position p + s (s a fraction of a pixel) must predict what the object moved by -s
    # predicts at p: the microscope sees only the object in the beam's frame.
    s = np.array([0.3, -0.3])
    obj = _object_array()
    base = POSITIONS[:1]
    moved = predict(_microscope(kind, jo.SampleFunction(obj, DX), base + s * DX))
    shifted = predict(_microscope(kind, jo.SampleFunction(jo.fourier_shift(obj, -jnp.asarray(s)), DX), base))
    unshifted = predict(_microscope(kind, jo.SampleFunction(obj, DX), base))
    scale = float(jnp.max(shifted))
    # Limited by how band-limited the exit wave (and the aperture's soft edge) are: ~1e-8 here.
    np.testing.assert_allclose(moved, shifted, rtol=0, atol=1e-6 * scale)
    assert float(jnp.max(jnp.abs(moved - unshifted))) > 1e-3 * scale  # the test can fail


def test_simple_microscope_aperture_must_move_with_the_beam(x64):
    # Control: an aperture left fixed on the patch grid instead breaks sub-pixel exactness.
    s = np.array([0.3, -0.3])
    obj = _object_array()
    centre = np.array([0.7e-6, -0.5e-6])
    fixed = predict(
        _microscope(
            "simple", jo.SampleFunction(obj, DX), POSITIONS[:1] + s * DX, aperture_center=centre - s * DX * ZOOM
        )
    )
    shifted = predict(
        _microscope("simple", jo.SampleFunction(jo.fourier_shift(obj, -jnp.asarray(s)), DX), POSITIONS[:1])
    )
    assert float(jnp.max(jnp.abs(fixed - shifted))) > 1e-3 * float(jnp.max(shifted))


# ---- gradients -------------------------------------------------------------------------------


def _check_gradients(m, leaves, getkey, rtol=1e-5):
    weights = jax.random.uniform(getkey(), (m.num_positions, *m.detector_shape), jnp.float64)
    loss = eqx.filter_jit(lambda mic: jnp.sum(weights * mic()))
    grads = eqx.filter_grad(loss)(m)
    for where, index, step in leaves:

        def at(delta, where=where, index=index):
            return eqx.tree_at(where, m, where(m).at[index].add(delta))

        fd = (loss(at(step)) - loss(at(-step))) / (2 * step)
        got = where(grads)[index]
        assert abs(float(fd)) > 1e-6 * abs(float(loss(m))) / step * 1e-3, "parameter has no effect"
        np.testing.assert_allclose(got, fd, rtol=rtol, err_msg=f"leaf {where}, index {index}")


def test_simple_microscope_gradients_match_finite_differences(x64, getkey):
    m = _microscope("simple", jo.SampleFunction(_object_array(), DX), POSITIONS[:2])
    leaves = [
        (lambda t: t.propagator.distance, (), 1e-8),
        (lambda t: t.zoom.zoom_factor, (), 1e-7),
        (lambda t: t.aperture.diameter, (), 1e-11),
        (lambda t: t.aperture.center, 0, 1e-11),
        (lambda t: t.aperture.center, 1, 1e-11),
        (lambda t: t.positions, (0, 0), 1e-11),
        (lambda t: t.positions, (1, 1), 1e-11),
    ]
    _check_gradients(m, leaves, getkey)


def test_near_field_gradients_match_finite_differences(x64, getkey):
    m = _microscope("cone", jo.SampleFunction(_object_array(), DX), POSITIONS[:2])
    leaves = [
        (lambda t: t.propagator.distance, (), 1e-10),
        (lambda t: t.focus_to_sample, (), 1e-9),
        (lambda t: t.positions, (0, 1), 1e-11),
        (lambda t: t.positions, (1, 0), 1e-11),
    ]
    _check_gradients(m, leaves, getkey)


# ---- jit, vmap, adjoint ----------------------------------------------------------------------


def test_jit_equals_eager_and_vmap_equals_loop():
    m = _microscope("simple", jo.SampleFunction(_object_array(), DX), POSITIONS, probe=_probe(modes=2))
    batched = predict(m)  # jit of a vmap over positions
    single = eqx.filter_jit(lambda mic, p: mic.intensity(p))
    looped = jnp.stack([single(m, jnp.asarray(p)) for p in POSITIONS])
    eager = m.intensity(jnp.asarray(POSITIONS[1]))  # no jit, no vmap (one position: eager is slow)
    scale = float(jnp.max(batched))
    # float32: agreement to a few ulps of the frame's peak.
    np.testing.assert_allclose(looped, batched, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(eager, batched[1], rtol=0, atol=1e-5 * scale)


def test_blocked_prediction_equals_a_loop_over_frames():
    # 37 frames: on a CPU `microscope()` runs blocks of 16 (the last one short), each block
    # vectorised, with the probe transformed once; per-frame scales make the frame index count.
    rng = np.random.default_rng(5)
    positions = rng.uniform(-6e-6, 6e-6, (37, 2))
    m = _microscope("far_field", jo.SampleFunction(_object_array(), DX), positions, probe=_probe(modes=2))
    scales = jnp.asarray(rng.uniform(0.5, 1.5, 37), jnp.float32)
    m = js.with_detector(m, js.DetectorResponse(background=jnp.float32(0.01), frame_scale=scales))
    blocked = predict(m)
    single = eqx.filter_jit(lambda mic, p, i: mic.intensity(p, i))
    looped = jnp.stack([single(m, m.positions[i], jnp.asarray(i)) for i in range(37)])
    indices = jnp.array([3, 36, 17])
    picked = eqx.filter_jit(lambda mic, i: mic.predict(i))(m, indices)
    scale = float(jnp.max(looped))
    # float32: measured agreement 1e-7 of the peak; a wrong frame index or block would be O(1).
    np.testing.assert_allclose(blocked, looped, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(picked, looped[indices], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_backpropagate_is_adjoint_of_propagate(x64, getkey, kind):
    m = _microscope(kind, jo.SampleFunction(_object_array(), DX), POSITIONS)
    x = random_complex(getkey(), (2, N, N))
    y = random_complex(getkey(), (2, *m.detector_shape))
    subpixel = jnp.array([0.27, -0.41])
    lhs = jnp.vdot(eqx.filter_jit(lambda mic: mic.propagate(x, subpixel))(m), y)
    rhs = jnp.vdot(x, eqx.filter_jit(lambda mic: mic.backpropagate(y, subpixel))(m))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-11)


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_positions_off_the_object_raise(kind):
    outside = np.array([[0.0, 0.0], [20e-6, 0.0]])  # 20 px right: the 32-px patch leaves the 64-px object
    with pytest.raises(ValueError, match="`positions`.*off the object"):
        _microscope(kind, jo.SampleFunction(_object_array(), DX), outside)


@pytest.mark.parametrize("kind", KINDS)
def test_microscope_stores_the_pitch_once(kind):
    """Every microscope keeps its probe without a pitch: the sample's `dx` is the one leaf that
    holds it (so no step has to keep two copies equal), and `sample_plane_probe` gives it back."""
    m = _microscope(kind, jo.SampleFunction(_object_array(), DX), POSITIONS)
    assert m.probe.dx is None
    pitch_leaves = [leaf for leaf in jax.tree_util.tree_leaves(m) if np.shape(leaf) == (2,) and np.allclose(leaf, DX)]
    assert len(pitch_leaves) == 1
    np.testing.assert_array_equal(np.asarray(m.sample_plane_probe().dx), np.asarray(m.sample.dx))
    finer = m.with_pixel_size(m.sample.dx * 0.5)
    np.testing.assert_allclose(np.asarray(finer.sample_plane_probe().dx), DX * 0.5, rtol=1e-7)


def test_probe_with_another_pitch_raises():
    probe = jo.Probe(_probe().modes, LAM, DX * 1.01)
    with pytest.raises(ValueError, match=r"`probe.dx` and `sample.dx` must be equal"):
        js.FarFieldMicroscope(probe, jo.SampleFunction(_object_array(), DX), POSITIONS)
    # A probe without a pitch takes the sample's.
    m = js.FarFieldMicroscope(jo.Probe(_probe().modes, LAM, None), jo.SampleFunction(_object_array(), DX), POSITIONS)
    np.testing.assert_allclose(np.asarray(m.sample_plane_probe().dx), DX, rtol=1e-7)


@pytest.mark.parametrize("shape", [(0, 16), (16, -2)])
def test_bad_detector_shape_raises(shape):
    with pytest.raises(ValueError, match="`detector_shape`"):
        _microscope("simple", jo.SampleFunction(_object_array(), DX), POSITIONS, detector_shape=shape)


@pytest.mark.parametrize("kind", ["simple", "fresnel"])
def test_wrong_field_shapes_raise(kind):
    m = _microscope(kind, jo.SampleFunction(_object_array(), DX), POSITIONS)
    with pytest.raises(ValueError, match="`detector_fields`"):
        m.backpropagate(jnp.zeros((1, 8, 8), complex), jnp.zeros(2))
    with pytest.raises(ValueError, match="`exit_waves`"):
        m.propagate(jnp.zeros((1, 8, 8), complex), jnp.zeros(2))


@pytest.mark.parametrize(
    "override, name",
    [
        (dict(zoom_factor=0.0), "zoom_factor"),
        (dict(aperture_diameter=-1e-6), "aperture_diameter"),
        (dict(travel_distance=0.0), "travel_distance"),
        (dict(camera_pixel_size=np.array([1e-6, 0.0])), "camera_pixel_size"),
        (dict(aperture_edge_width=0.0), "aperture_edge_width"),
        (dict(aperture_edge_width="wide"), "aperture_edge_width"),
        (dict(aperture_center=np.array([np.inf, 0.0])), "aperture_center"),
    ],
)
def test_simple_microscope_validation(override, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        _microscope("simple", jo.SampleFunction(_object_array(), DX), POSITIONS, **override)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(distance=1e-4, propagator="fraunhofer"), "propagator"),
        (dict(propagator="fresnel"), "distance"),
        (dict(distance=1e-4, propagator=jo.Fresnel(1e-4)), "distance"),
        (dict(propagator=jo.Fraunhofer(1.0)), "propagator"),
        (dict(distance=-1e-4), "distance"),
        (dict(distance=1e-4, focus_to_sample=0.0), "focus_to_sample"),
    ],
)
def test_near_field_validation(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        js.NearFieldMicroscope(_probe(), jo.SampleFunction(_object_array(), DX), POSITIONS, **kwargs)


def test_near_field_accepts_a_propagator_module(x64):
    sample = jo.SampleFunction(_object_array(), DX)
    by_name = js.NearFieldMicroscope(_probe(), sample, POSITIONS, distance=5e-5, propagator="angular_spectrum")
    by_module = js.NearFieldMicroscope(_probe(), sample, POSITIONS, propagator=jo.AngularSpectrum(5e-5))
    np.testing.assert_allclose(predict(by_module), predict(by_name), rtol=1e-14)
    np.testing.assert_allclose(by_name.detector_pixel_size, DX, rtol=0)
