"""Small shared helpers for the tests."""

import contextlib

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """True when two PyTrees have the same structure and all leaves are close."""
    xl, xs = jtu.tree_flatten(x)
    yl, ys = jtu.tree_flatten(y)
    if xs != ys:
        return False
    return all(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol) for a, b in zip(xl, yl))


def random_complex(key, shape, dtype=None):
    """A complex Gaussian random array."""
    kr, ki = jax.random.split(key)
    dtype = dtype or jnp.result_type(float)
    return jax.random.normal(kr, shape, dtype) + 1j * jax.random.normal(ki, shape, dtype)


def gaussian_probe(shape, sigma_px, phase_curvature=0.0):
    """A Gaussian probe with an optional quadratic phase, on a centred grid."""
    y = jnp.arange(shape[0]) - shape[0] // 2
    x = jnp.arange(shape[1]) - shape[1] // 2
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    return jnp.exp(-r2 / (2 * sigma_px**2)) * jnp.exp(1j * phase_curvature * r2)


# DESIGN.md's accuracy measures live in the library; the tests use the same code.
from janssen.invert import illumination_map as illumination_map, object_error as object_error  # noqa: E402


def tiny_far_field_problem(key, *, n=32, grid=5, step=5, photons=1e5, subpixel=False):
    """A small far-field dataset with known truth: (data, true microscope, start microscope).

    A defocused disk probe, a smooth complex object (amplitude 0.6-1, phase up to 1 rad),
    a jittered raster scan, Poisson noise. The start has a unit object and a probe with
    about 0.3 rad of phase error.
    """
    from janssen.io import MicroscopeData
    from janssen.optics import Probe, SampleFunction, ifft2c
    from janssen.scopes import FarFieldMicroscope

    k_obj1, k_obj2, k_jit, k_noise = jax.random.split(key, 4)
    dx, wavelength = 1e-8, 1e-9
    c = jnp.arange(n) - n // 2
    r2 = (c[None, :] ** 2 + c[:, None] ** 2) / (n / 2) ** 2
    pupil = (r2 < 0.35**2) * jnp.exp(1j * 12 * r2)
    probe = ifft2c(pupil.astype(jnp.complex64))
    g = (np.arange(grid) - (grid - 1) / 2) * step
    pos = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    jitter = np.asarray(jax.random.uniform(k_jit, pos.shape, minval=-1.0, maxval=1.0))
    pos = pos + jitter if subpixel else np.round(pos + jitter)
    size = int(np.ceil(np.ptp(pos))) + n + 6
    size += size % 2

    def smooth(k, width):
        f = jnp.fft.fft2(jax.random.normal(k, (size, size)))
        fr = jnp.fft.fftfreq(size)
        r = jnp.real(jnp.fft.ifft2(f * jnp.exp(-(fr[None, :] ** 2 + fr[:, None] ** 2) / (2 * width**2))))
        return (r - r.min()) / (r.max() - r.min())

    obj = (0.6 + 0.4 * smooth(k_obj1, 0.08)) * jnp.exp(1j * smooth(k_obj2, 0.1))
    positions = jnp.asarray(pos * dx, dtype=jnp.result_type(float))
    unit = FarFieldMicroscope(Probe(probe, wavelength, dx), SampleFunction(obj, dx), positions)
    predict = jax.jit(lambda microscope: microscope())  # op-by-op dispatch costs seconds here
    scale = jnp.sqrt(photons / jnp.mean(jnp.sum(predict(unit), axis=(1, 2))))
    true = FarFieldMicroscope(Probe(probe * scale, wavelength, dx), SampleFunction(obj, dx), positions)
    counts = jax.random.poisson(k_noise, predict(true)).astype(jnp.result_type(float))
    data = MicroscopeData(counts, positions, wavelength, wavelength * 1.0 / (n * dx), 1.0)
    guess = ifft2c((pupil * jnp.exp(0.3j * jnp.cos(3 * jnp.pi * r2))).astype(jnp.complex64)) * scale
    start = FarFieldMicroscope(Probe(guess, wavelength, dx), SampleFunction(jnp.ones_like(obj), dx), positions)
    return data, true, start


def noiseless_far_field_problem(*, n=32, grid=4, step=6, seed=0):
    """A quick noiseless far-field problem (NumPy object, one jitted prediction): (data, true, start).

    A Gaussian probe with quadratic phase, a random complex object, a jittered raster of
    `grid**2` whole-pixel positions. The start has a unit object and the true probe.
    """
    from janssen.io import MicroscopeData
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    rng = np.random.default_rng(seed)
    dx, wavelength = 1e-8, 1e-9
    c = np.arange(n) - n // 2
    r2 = (c[None, :] ** 2 + c[:, None] ** 2) / (n / 4) ** 2
    probe = 30 * np.exp(-r2) * np.exp(1j * r2)
    g = (np.arange(grid) - (grid - 1) / 2) * step
    pos = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.integers(-1, 2, (grid * grid, 2))
    size = int(np.ptp(pos)) + n + 4
    obj = (0.8 + 0.2 * rng.random((size, size))) * np.exp(0.5j * rng.random((size, size)))
    true = FarFieldMicroscope(Probe(probe, wavelength, dx), SampleFunction(obj, dx), pos * dx)
    intensities = jax.jit(lambda microscope: microscope())(true)
    data = MicroscopeData(intensities, pos * dx, wavelength, wavelength / (n * dx), 1.0)
    start = FarFieldMicroscope(true.probe, SampleFunction(np.ones_like(obj), dx), true.positions)
    return data, true, start


def counting_engine(inner):
    """`(engine, traces)`: `inner` wrapped so that every trace of its `step` appends to `traces`.

    The append is a Python side effect, so it runs only while JAX traces the step:
    `len(traces)` counts the compilations of the step.
    """
    from janssen.invert import AbstractEngine

    traces = []

    class Counting(AbstractEngine):
        inner: AbstractEngine

        @property
        def holds_phase_ramp(self):
            return self.inner.holds_phase_ramp

        def init(self, microscope, data, trainable):
            return self.inner.init(microscope, data, trainable)

        def step(self, microscope, state, data, trainable, key):
            traces.append(1)
            return self.inner.step(microscope, state, data, trainable, key)

        def terminate(self, state, losses):
            return self.inner.terminate(state, losses)

        def postprocess(self, microscope, state):
            return self.inner.postprocess(microscope, state)

    return Counting(inner), traces


@contextlib.contextmanager
def compilations():
    """Collects the duration of every XLA compilation inside the `with` block (a list)."""
    compiled = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def jittered(microscope, key, pixels):
    """`microscope` with every position moved by a uniform offset of up to `pixels` object pixels in x and y."""
    import equinox as eqx

    dx = np.asarray(microscope.sample.dx)
    jitter = np.asarray(jax.random.uniform(key, microscope.positions.shape, minval=-pixels, maxval=pixels)) * dx
    return eqx.tree_at(lambda m: m.positions, microscope, microscope.positions + jitter)


def rms_px(microscope, true, *, offset=True):
    """RMS position error in the truth's pixels; the common offset (a gauge when the object is
    refined) is removed unless `offset=False`."""
    err = (np.asarray(microscope.positions) - np.asarray(true.positions)) / np.asarray(true.sample.dx)
    if offset:
        err = err - err.mean(0)
    return float(np.sqrt(np.mean(np.sum(err**2, 1))))
