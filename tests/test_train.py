"""The optical train: any element plugs into a microscope, and every engine works through it.

A method developer's element (`QuadraticPlate`, below: its whole definition) goes into a
`TrainMicroscope` with no other new code; the gradient, Gauss-Newton and optimistix
engines refine its parameter, and the PIE engines reconstruct object and probe through
the same train. The train's backward map is the adjoint of its forward map to 1e-10 in
float64, and a one-member train predicts exactly what the far- and near-field
microscopes predict.
"""

from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import gaussian_probe, random_complex
from jaxtyping import Array, Float

from janssen.invert import RPIE, GaussNewton, Gradient, illumination_map, object_error, optimistix_engine, reconstruct
from janssen.io import MicroscopeData
from janssen.optics import (
    AbstractElement,
    CircularAperture,
    Fraunhofer,
    Fresnel,
    OpticalTrain,
    OpticalZoom,
    PhaseScreen,
    Probe,
    SampleFunction,
    ScaledFraunhofer,
    ThinLens,
    ZernikeAberration,
    grid_coordinates,
)
from janssen.scopes import (
    AbstractTrainMicroscope,
    FarFieldMicroscope,
    NearFieldMicroscope,
    SimpleMicroscope,
    TrainMicroscope,
)


# ---- a new element: this is all a method developer writes ---------------------------------------
class QuadraticPlate(AbstractElement):
    """A thin plate of phase `strength * (r / r_edge)**2`: a weak lens whose power is learnt."""

    strength: Float[Array, ""]
    aliases: ClassVar[dict[str, str]] = {"strength": "strength"}

    def transmission(self, wavefront):
        x, y = grid_coordinates(wavefront)
        edge = wavefront.shape[-1] // 2 * wavefront.dx[0]
        return jnp.exp(1j * self.strength * (x**2 + y**2) / edge**2).astype(wavefront.field.dtype)


# -------------------------------------------------------------------------------------------------

N, DX, WAVELENGTH = 32, 1e-8, 1e-9


def _inner(a, b):
    return jnp.vdot(a.ravel(), b.ravel())


def _scene(dtype=None, *, n_side=4, step=6, seed=0):
    """A Gaussian probe with a quadratic phase, a random object, a raster of sub-pixel positions."""
    rng = np.random.default_rng(seed)
    probe = 30 * gaussian_probe((N, N), N / 6, phase_curvature=1.0)
    g = (np.arange(n_side) - (n_side - 1) / 2) * step
    pos = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-0.5, 0.5, (n_side * n_side, 2))
    size = int(np.ceil(np.ptp(pos))) + N + 6
    obj = (0.8 + 0.2 * rng.random((size, size))) * np.exp(0.5j * rng.random((size, size)))
    if dtype is not None:
        probe, obj = probe.astype(dtype), obj.astype(dtype)
    return Probe(probe, WAVELENGTH, DX), SampleFunction(obj, DX), pos * DX


def _data(microscope, camera_pixel=WAVELENGTH / (N * DX)):
    intensities = jax.jit(lambda m: m())(microscope)
    return MicroscopeData(intensities, microscope.positions, WAVELENGTH, camera_pixel, 1.0)


@pytest.mark.parametrize("moves", [True, False], ids=["moves", "fixed"])
def test_composed_train_backward_map_is_the_adjoint(x64, moves):
    """<A x, y> = <x, A^H y> for lens, zoom, Fresnel, screen, aperture, Zernike and a resampling far field.

    Measured: relative differences of 1.0e-15 to 1.4e-14 in float64.
    """
    probe, sample, positions = _scene(np.complex128)
    key_screen, key_x, key_y = jr.split(jr.PRNGKey(1), 3)
    members = (
        ThinLens(2e-4),
        OpticalZoom(1.25),
        Fresnel(3e-7),
        PhaseScreen(jnp.exp(1j * jr.uniform(key_screen, (N, N), jnp.float64))),
        CircularAperture(0.3 * N * DX, center=(1e-9, -2e-9), edge_width=0.05 * N * DX),
        ZernikeAberration(jnp.asarray([0.0, 0.0, 0.0, 0.2, -0.1]), pupil_radius=0.4 * N * DX),
        ScaledFraunhofer(1e-3, (2.1e-6, 1.7e-6), output_shape=(24, 40)),
    )
    scope = TrainMicroscope(probe, sample, positions, members, moves_with_object=moves)
    assert scope.detector_shape == (24, 40)
    subpixel = jnp.asarray([0.3, -0.2])
    x = random_complex(key_x, (2, N, N), jnp.float64)
    y = random_complex(key_y, (2, 24, 40), jnp.float64)
    forward = _inner(scope.propagate(x, subpixel), y)
    backward = _inner(x, scope.backpropagate(y, subpixel))
    assert abs(forward - backward) / abs(forward) < 1e-10
    # and through a Fraunhofer on the same grid shape
    far = TrainMicroscope(probe, sample, positions, (ThinLens(2e-4), Fresnel(3e-7), Fraunhofer(1e-3)))
    y = random_complex(key_y, (2, N, N), jnp.float64)
    forward = _inner(far.propagate(x, subpixel), y)
    assert abs(forward - _inner(x, far.backpropagate(y, subpixel))) / abs(forward) < 1e-10


def test_one_member_trains_predict_what_the_far_and_near_field_microscopes_do():
    """A Fraunhofer train is `FarFieldMicroscope`; a Fresnel train is `NearFieldMicroscope` (counts included).

    Measured: 3.2e-7 of the largest count (far field) and 0 (near field), float32.
    """
    probe, sample, positions = _scene()
    distance = N * DX * DX / WAVELENGTH  # the FFT's camera pixel equals the sample pixel here
    far = FarFieldMicroscope(probe, sample, positions)
    far_train = TrainMicroscope(probe, sample, positions, [Fraunhofer(distance)], moves_with_object=False)
    a, b = jax.jit(lambda m: m())(far), jax.jit(lambda m: m())(far_train)
    assert float(jnp.max(jnp.abs(a - b)) / jnp.max(a)) < 1e-5
    assert far_train.phase_ramp_gauge and far.phase_ramp_gauge
    near = NearFieldMicroscope(probe, sample, positions, distance=2e-6)
    near_train = TrainMicroscope(probe, sample, positions, [Fresnel(2e-6)])
    a, b = jax.jit(lambda m: m())(near), jax.jit(lambda m: m())(near_train)
    assert float(jnp.max(jnp.abs(a - b)) / jnp.max(a)) < 1e-5
    assert not near_train.phase_ramp_gauge
    assert not TrainMicroscope(probe, sample, positions, [Fresnel(2e-6), Fraunhofer(1.0)]).phase_ramp_gauge


def _named_microscopes(probe, sample, positions):
    """Every named microscope, each a thin final over `AbstractTrainMicroscope`."""
    return {
        "far": FarFieldMicroscope(probe, sample, positions),
        "far-scaled": FarFieldMicroscope(
            probe, sample, positions, ScaledFraunhofer(1e-3, (2.1e-6, 1.7e-6), output_shape=(24, 40))
        ),
        "near": NearFieldMicroscope(probe, sample, positions, distance=2e-6),
        "cone": NearFieldMicroscope(probe, sample, positions, distance=2e-6, focus_to_sample=1e-6),
        "simple": SimpleMicroscope(
            probe,
            sample,
            positions,
            zoom_factor=1.5,
            aperture_diameter=0.5 * 1.5 * N * DX,
            travel_distance=1e-3,
            camera_pixel_size=2e-6,
            detector_shape=(28, 30),
        ),
    }


@pytest.mark.parametrize("name", ["far", "far-scaled", "near", "cone", "simple"])
def test_named_microscopes_backward_map_is_the_adjoint(x64, name):
    """<A x, y> = <x, A^H y> at a sub-pixel position for every named microscope (measured 1.8e-16 to 8.5e-16)."""
    probe, sample, positions = _scene(np.complex128)
    scope = _named_microscopes(probe, sample, positions)[name]
    assert isinstance(scope, AbstractTrainMicroscope)
    key_x, key_y = jr.split(jr.PRNGKey(2))
    subpixel = jnp.asarray([0.3, -0.2])
    x = random_complex(key_x, (2, N, N), jnp.float64)
    y = random_complex(key_y, (2, *scope.detector_shape), jnp.float64)
    forward = _inner(scope.propagate(x, subpixel), y)
    backward = _inner(x, scope.backpropagate(y, subpixel))
    assert abs(forward - backward) / abs(forward) < 1e-10


@pytest.mark.parametrize("name", ["far", "far-scaled", "near", "cone", "simple"])
def test_named_microscopes_are_trainmicroscopes_over_their_members(name):
    """Each named microscope predicts exactly what a `TrainMicroscope` over its own train does.

    Whole-pixel positions: `SimpleMicroscope` moves its aperture with the beam's sub-pixel
    remainder, which a fixed train does not. Measured: bit-identical (0) in float32.
    """
    probe, sample, positions = _scene()
    positions = np.round(positions / DX) * DX
    scope = _named_microscopes(probe, sample, positions)[name]
    train = TrainMicroscope(probe, sample, positions, scope.train_at(None), moves_with_object=scope.moves_with_object)
    a, b = jax.jit(lambda m: m())(scope), jax.jit(lambda m: m())(train)
    assert float(jnp.max(jnp.abs(a - b)) / jnp.max(a)) < 1e-6
    assert scope.detector_shape == train.detector_shape
    np.testing.assert_allclose(scope.detector_pixel_size, train.detector_pixel_size, rtol=1e-7)
    assert scope.phase_ramp_gauge == train.phase_ramp_gauge == name.startswith("far")
    # Only the FFT far field may take the engines' FFT path; it says so through its member.
    assert scope.fourier_detector == (name == "far")
    if name == "cone":  # the Fresnel scaling theorem: the camera pixel is M * dx
        np.testing.assert_allclose(scope.detector_pixel_size, np.full(2, 3 * DX), rtol=1e-6)


def test_fourier_transform_member_is_the_unitary_dft(x64):
    """`FourierTransform` is `fft2c`, keeps the grid, and its adjoint is its inverse."""
    from janssen.optics import FourierTransform, OpticalWavefront, fft2c

    x = random_complex(jr.PRNGKey(3), (2, N, N + 4), jnp.float64)
    wave = OpticalWavefront(x, WAVELENGTH, DX)
    member = FourierTransform()
    out = member(wave)
    np.testing.assert_array_equal(out.field, fft2c(x))
    grid_dx, grid_shape = member.output_grid(wave.wavelength, wave.dx, (N, N + 4))
    assert grid_dx is wave.dx and grid_shape == (N, N + 4)
    np.testing.assert_allclose(member.adjoint(out).field, x, atol=1e-13)


def _plate_problem(strength=1.5):
    probe, sample, positions = _scene()
    train = (Fresnel(4e-7), QuadraticPlate(jnp.asarray(strength)), Fraunhofer(1.0))
    true = TrainMicroscope(probe, sample, positions, train)
    return true, _data(true)


@pytest.mark.parametrize(
    "engine,iterations",
    [
        (Gradient(learning_rates={"strength": 0.05}), 150),
        (GaussNewton(), 6),
        (optimistix_engine("levenberg-marquardt"), 10),
    ],
    ids=["adam", "gauss-newton", "optx-lm"],
)
def test_a_new_element_is_refined_by_every_engine_family(engine, iterations):
    """The plate's strength from half its value, noiseless data: recovered to 1 %.

    Measured: Adam 1.50027, Gauss-Newton 1.500004, optimistix Levenberg-Marquardt 1.500007.
    """
    true, data = _plate_problem()
    start = TrainMicroscope(
        true.probe, true.sample, true.positions, (Fresnel(4e-7), QuadraticPlate(jnp.asarray(0.75)), Fraunhofer(1.0))
    )
    solution = reconstruct(start, data, engine, trainable=["strength"], num_iterations=iterations)
    found = float(solution.microscope.train.members[1].strength)
    assert abs(found / 1.5 - 1) < 0.01, found


def test_pie_reconstructs_object_and_probe_through_the_train():
    """rPIE from a unit object and a probe with a phase error, through Fresnel -> plate -> Fraunhofer.

    Measured (noiseless, 60 iterations): object error 0.025, from 0.160 for the unit object.
    """
    true, data = _plate_problem()
    fields = true.probe.fields()
    phase_error = 0.3 * jnp.cos(jnp.linspace(0, 3 * jnp.pi, N))[None, :] * jnp.ones((N, 1))
    guess = Probe(fields * jnp.exp(1j * phase_error).astype(fields.dtype)[None], WAVELENGTH, DX)
    unit = SampleFunction(jnp.ones_like(true.sample.sample), DX)
    start = TrainMicroscope(guess, unit, true.positions, true.train)
    solution = reconstruct(start, data, RPIE(), num_iterations=60)
    illum = illumination_map(true)
    before = object_error(true.sample.sample, unit.sample, illum)
    after = object_error(true.sample.sample, solution.microscope.sample.sample, illum)
    assert after < 0.04 and after < 0.25 * before


def test_train_refuses_what_is_not_an_optical_member():
    with pytest.raises(ValueError, match=r"`members\[1\]` \(str\) is not an optical member"):
        OpticalTrain(Fresnel(1e-6), "lens")
    with pytest.raises(ValueError, match="at least one"):
        OpticalTrain()


def test_the_train_declares_its_names_and_scale_leaves():
    """The engines find a member's parameter and the dilation gauge from what the train declares."""
    probe, sample, positions = _scene()
    scope = TrainMicroscope(
        probe, sample, positions, [Fresnel(4e-7), QuadraticPlate(jnp.asarray(1.0)), Fraunhofer(1.0)]
    )
    names = scope.trainable_aliases()
    assert names["strength"] == ("train.members.1.strength",)
    assert names["distance"] == ("train.members.0.distance", "train.members.2.distance")
    assert scope.scale_leaves() == ("train.members.0.distance", "train.members.2.distance")
    assert scope.scan_gauges({"sample.sample", "positions", "train.members.2.distance"}) == (True, True)
    assert scope.scan_gauges({"sample.sample", "positions", "train.members.1.strength"}) == (True, False)
