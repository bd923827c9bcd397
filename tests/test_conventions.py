"""The conventions of docs/conventions.md, pinned to numbers.

If one of these tests has to change, the conventions page changes with it: users port
code and data against these rules.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_complex

from janssen.io import MicroscopeData
from janssen.optics import (
    Probe,
    SampleFunction,
    extract_patch,
    fft2c,
    fft2u,
    fourier_shift,
    ifft2c,
    ifft2u,
    patch_corner,
    shift_probe,
    split_corner,
)
from janssen.scopes import FarFieldMicroscope

REPO = pathlib.Path(__file__).resolve().parents[1]
# Odd and even sizes on both axes, never square, so that a swapped axis shows.
SHAPES = [(8, 10), (7, 9), (6, 9), (9, 4)]


def _centred_grid(shape):
    """Integer pixel offsets `(x, y)` from the centre pixel `(H // 2, W // 2)`."""
    y = np.arange(shape[0])[:, None] - shape[0] // 2
    x = np.arange(shape[1])[None, :] - shape[1] // 2
    return x, y


def _gaussian(shape, centre, sigma):
    x, y = _centred_grid(shape)
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2))


def _centroid(intensity):
    """Centroid `(x, y)` of an image, in pixels from its centre pixel."""
    x, y = _centred_grid(intensity.shape)
    total = intensity.sum()
    return np.array([(x * intensity).sum() / total, (y * intensity).sum() / total])


# ---- FFT conventions -----------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_of_centred_delta_is_flat_with_zero_phase(shape):
    h, w = shape
    delta = jnp.zeros(shape, jnp.complex64).at[h // 2, w // 2].set(1.0)
    spectrum = np.asarray(fft2c(delta))
    # Unitary scaling: a unit delta spreads into H*W samples of 1/sqrt(H*W).
    np.testing.assert_allclose(spectrum.real, 1 / np.sqrt(h * w), rtol=0, atol=1e-6)
    np.testing.assert_allclose(spectrum.imag, 0.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_zero_frequency_of_constant_is_at_centre_pixel(shape):
    h, w = shape
    spectrum = np.asarray(fft2c(jnp.ones(shape, jnp.complex64)))
    expected = np.zeros(shape, complex)
    expected[h // 2, w // 2] = np.sqrt(h * w)
    np.testing.assert_allclose(spectrum, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_fft2c_sign_puts_positive_frequency_right_of_and_below_centre(shape):
    # Forward kernel exp(-2 pi i k.r): the wave exp(+2 pi i (m x / W + n y / H)) lands
    # on pixel (H // 2 + n, W // 2 + m).
    h, w = shape
    m, n = 1, 2
    x, y = _centred_grid(shape)
    wave = jnp.asarray(np.exp(2j * np.pi * (m * x / w + n * y / h)), jnp.complex64)
    spectrum = np.asarray(fft2c(wave))
    expected = np.zeros(shape, complex)
    expected[h // 2 + n, w // 2 + m] = np.sqrt(h * w)
    np.testing.assert_allclose(spectrum, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("forward, inverse", [(fft2c, ifft2c), (fft2u, ifft2u)])
@pytest.mark.parametrize("shape", [(3, 8, 10), (7, 9)])
def test_fft_is_unitary_and_inverse_is_adjoint(forward, inverse, shape, x64, getkey):
    u = random_complex(getkey(), shape)
    v = random_complex(getkey(), shape)
    fu = forward(u)
    assert fu.dtype == jnp.complex128
    energy_u = float(jnp.sum(jnp.abs(u) ** 2))
    # Energy conservation: sum |F u|^2 == sum |u|^2.
    assert abs(float(jnp.sum(jnp.abs(fu) ** 2)) - energy_u) <= 1e-12 * energy_u
    # Adjoint identity <F u, v> == <u, F^H v>, and F^H F == identity.
    lhs = complex(jnp.vdot(fu, v))
    rhs = complex(jnp.vdot(u, inverse(v)))
    assert abs(lhs - rhs) <= 1e-12 * float(jnp.linalg.norm(u) * jnp.linalg.norm(v))
    assert float(jnp.max(jnp.abs(inverse(fu) - u))) <= 1e-12


# ---- sub-pixel shifts ----------------------------------------------------------------


def test_fourier_shift_matches_analytic_gaussian(x64):
    shape = (48, 64)
    shift = (2.3, -1.6)  # (sx, sy): sx moves along x (columns), sy along y (rows)
    # sigma = 2.5 px: the spectrum at Nyquist is exp(-31) ~ 4e-14 and the tails at the
    # edge below 1e-17, so the sampled Gaussian is band-limited and periodic to 1e-13.
    gaussian = jnp.asarray(_gaussian(shape, (0.0, 0.0), 2.5), jnp.complex128)
    moved = np.asarray(fourier_shift(gaussian, jnp.array(shift)))
    expected = _gaussian(shape, shift, 2.5)
    assert np.max(np.abs(moved - expected)) <= 1e-12
    np.testing.assert_allclose(_centroid(np.abs(moved) ** 2), shift, rtol=0, atol=1e-10)


def test_fourier_shift_by_whole_pixels_is_a_roll(getkey):
    # (sx, sy) = (3, -2) is u(r - s): a roll by +3 columns and -2 rows, for any field.
    field = random_complex(getkey(), (9, 12))
    moved = fourier_shift(field, jnp.array([3.0, -2.0]))
    rolled = jnp.roll(field, shift=(-2, 3), axis=(0, 1))
    assert float(jnp.max(jnp.abs(moved - rolled))) <= 1e-5


# ---- scan geometry -------------------------------------------------------------------

OBJECT_SHAPE = (20, 26)
PROBE_SHAPE = (7, 10)
BRIGHT = (13, 6)  # (row, column) of the object's single bright pixel
DX = (2e-8, 3e-8)  # (x, y) pixel pitch in metres; unequal so that a swap shows


def _bright_object():
    return jnp.zeros(OBJECT_SHAPE, jnp.complex64).at[BRIGHT].set(5.0)


def _position_of(pixel, *, offset_px=(0.0, 0.0)):
    """`(x, y)` in metres of object pixel `(row, column)`, from the centre pixel."""
    x = (pixel[1] - OBJECT_SHAPE[1] // 2 + offset_px[0]) * DX[0]
    y = (pixel[0] - OBJECT_SHAPE[0] // 2 + offset_px[1]) * DX[1]
    return jnp.array([x, y])


def test_patch_puts_probe_centre_on_position():
    position = _position_of(BRIGHT)
    corner = patch_corner(position, jnp.array(DX), OBJECT_SHAPE, PROBE_SHAPE)
    whole, remainder = split_corner(corner)
    # corner = (W_obj // 2 - W // 2 + x / dx_x, H_obj // 2 - H // 2 + y / dx_y)
    #        = (13 - 5 - 7, 10 - 3 + 3)
    assert np.asarray(whole).tolist() == [1, 10]
    np.testing.assert_allclose(np.asarray(remainder), 0.0, rtol=0, atol=1e-5)
    patch = np.asarray(extract_patch(_bright_object(), whole, PROBE_SHAPE))
    expected = np.zeros(PROBE_SHAPE, complex)
    expected[PROBE_SHAPE[0] // 2, PROBE_SHAPE[1] // 2] = 5.0
    np.testing.assert_array_equal(patch, expected)


def test_microscope_exit_wave_centres_object_point_under_probe_centre():
    probe = Probe(jnp.ones(PROBE_SHAPE, jnp.complex64), 1e-9, jnp.array(DX))
    sample = SampleFunction(_bright_object(), jnp.array(DX))
    positions = jnp.stack([_position_of(BRIGHT), _position_of((10, 13))])
    scope = FarFieldMicroscope(probe, sample, positions)
    exit_wave = np.asarray(scope.exit_waves(positions[0]))[0]
    assert np.unravel_index(np.argmax(np.abs(exit_wave)), PROBE_SHAPE) == (3, 5)
    np.testing.assert_allclose(np.abs(exit_wave).sum(), 5.0, rtol=1e-5)
    # Position (0, 0) is the object's centre pixel (10, 13), which is dark.
    np.testing.assert_allclose(np.abs(scope.exit_waves(positions[1])), 0.0, atol=0)


def test_subpixel_remainder_moves_probe_onto_exact_position(x64):
    probe_shape = (32, 32)
    offset = (0.3, -0.2)  # fractions of a pixel, (x, y)
    position = _position_of(BRIGHT, offset_px=offset)
    corner = patch_corner(position, jnp.array(DX), OBJECT_SHAPE, probe_shape)
    whole, remainder = split_corner(corner)
    np.testing.assert_allclose(np.asarray(remainder), offset, rtol=0, atol=1e-9)
    assert np.all(np.abs(np.asarray(remainder)) <= 0.5)
    # sigma = 2.5 px keeps the probe band-limited (see the Gaussian shift test).
    probe = jnp.asarray(_gaussian(probe_shape, (0.0, 0.0), 2.5), jnp.complex128)
    moved = np.asarray(shift_probe(probe[None], remainder))[0]
    centre_in_patch = np.array([probe_shape[1] // 2, probe_shape[0] // 2])
    centroid = _centroid(np.abs(moved) ** 2)
    centre_on_object = np.asarray(whole) + centre_in_patch + centroid
    expected = np.array([BRIGHT[1] + offset[0], BRIGHT[0] + offset[1]])
    np.testing.assert_allclose(centre_on_object, expected, rtol=0, atol=1e-9)


# ---- validation of measured data -----------------------------------------------------


def _data_kwargs(npos=3, frame=(8, 8)):
    return dict(
        intensities=jnp.ones((npos, *frame)),
        positions=jnp.zeros((npos, 2)),
        wavelength=1e-9,
        camera_pixel_size=5e-5,
        distance=1.0,
    )


def _one_nan():
    return jnp.ones((3, 8, 8)).at[1, 2, 3].set(jnp.nan)


def _one_negative():
    return jnp.ones((3, 8, 8)).at[2, 4, 4].set(-0.5)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("wavelength", -1e-9),
        ("intensities", _one_nan()),
        ("intensities", jnp.full((3, 8, 8), jnp.nan)),
        ("intensities", _one_negative()),
        ("bad_pixels", jnp.ones((8, 8), bool)),
    ],
    ids=["negative wavelength", "one NaN", "all NaN", "negative intensity", "all bad"],
)
def test_microscope_data_rejects_bad_values(argument, value):
    kwargs = _data_kwargs() | {argument: value}
    with pytest.raises(ValueError, match=f"`{argument}`"):
        MicroscopeData(**kwargs)


def test_microscope_data_bad_pixels_true_means_bad():
    mask = jnp.zeros((8, 8), bool).at[0, 1].set(True)
    data = MicroscopeData(**_data_kwargs(), bad_pixels=mask)
    assert float(data.valid[0, 1]) == 0.0
    assert float(data.valid.sum()) == 63.0


# ---- global configuration, default precision and errors as users see them ------------

# Runs in a fresh interpreter: no pytest, no conftest, no runtime type-checking hook,
# none of the caller's JAX_* / XLA_* variables.
_PLAIN_PYTHON = r"""
import json
import jax
import numpy as np

before = {k: repr(v) for k, v in getattr(jax.config, "values", {}).items()}
import janssen, janssen.cli, janssen.plots  # noqa: E401
from janssen.io import MicroscopeData
from janssen.optics import OpticalWavefront, Probe, SampleFunction, fft2c

after = {k: repr(v) for k, v in getattr(jax.config, "values", {}).items()}
wave = OpticalWavefront(np.ones((4, 4)), 1e-9, 1e-6)
data = MicroscopeData(np.ones((2, 4, 4)), np.zeros((2, 2)), 1e-9, 5e-5, 1.0)
report = {
    "x64": bool(jax.config.jax_enable_x64),
    "changed": sorted(k for k in before if before[k] != after.get(k)),
    "dtypes": {
        "probe.modes": str(Probe(np.ones((4, 4)), 1e-9, 1e-6).modes.dtype),
        "probe.dx": str(Probe(np.ones((4, 4)), 1e-9, 1e-6).dx.dtype),
        "sample.sample": str(SampleFunction(np.ones((4, 4)), 1e-6).sample.dtype),
        "wavefront.field": str(wave.field.dtype),
        "wavefront.wavelength": str(wave.wavelength.dtype),
        "data.intensities": str(data.intensities.dtype),
        "data.positions": str(data.positions.dtype),
        "fft2c": str(fft2c(wave.field).dtype),
    },
}

ones = np.ones((3, 8, 8))
one_nan = ones.copy()
one_nan[1, 2, 3] = np.nan
# "argument: what is wrong" -> the bad value
cases = {
    "wavelength: negative": dict(wavelength=-1e-9),
    "intensities: one NaN": dict(intensities=one_nan),
    "intensities: negative": dict(intensities=-ones),
    "positions: 3 columns": dict(positions=np.zeros((3, 3))),
    "positions: 4 rows for 3 frames": dict(positions=np.zeros((4, 2))),
    "bad_pixels: wrong shape": dict(bad_pixels=np.zeros((8, 7), bool)),
    "bad_pixels: all bad": dict(bad_pixels=np.ones((8, 8), bool)),
}
errors = {}
for name, change in cases.items():
    kwargs = dict(intensities=ones, positions=np.zeros((3, 2)), wavelength=1e-9,
                  camera_pixel_size=5e-5, distance=1.0) | change
    try:
        MicroscopeData(**kwargs)
        errors[name] = None
    except Exception as error:
        errors[name] = [type(error).__name__, str(error)]
report["errors"] = errors
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def plain_python_report():
    keep = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", _PLAIN_PYTHON],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_leaves_jax_config_alone(plain_python_report):
    assert plain_python_report["x64"] is False
    assert plain_python_report["changed"] == []


def test_default_precision_is_float32(plain_python_report):
    assert plain_python_report["dtypes"] == {
        "probe.modes": "complex64",
        "probe.dx": "float32",
        "sample.sample": "complex64",
        "wavefront.field": "complex64",
        "wavefront.wavelength": "float32",
        "data.intensities": "float32",
        "data.positions": "float32",
        "fft2c": "complex64",
    }


def test_microscope_data_errors_name_the_argument(plain_python_report):
    for case, error in plain_python_report["errors"].items():
        argument = case.split(":")[0]
        assert error is not None, f"{case}: no error raised"
        kind, message = error
        assert kind == "ValueError", f"{case}: {kind}: {message}"
        assert f"`{argument}`" in message, f"{case}: {message}"


@pytest.mark.parametrize("shape", [(2, 6, 8), (4, 6), (6, 10), (7, 9), (8, 5)])
@pytest.mark.parametrize("name", ["fft2c", "ifft2c"])
def test_centred_fft_equals_shifted_numpy_transform(name, shape, x64, getkey):
    """Even sizes take the (+1, -1) modulation instead of the shifts; all sizes match NumPy's shifted transform."""
    u = random_complex(getkey(), shape)
    transform = {"fft2c": np.fft.fft2, "ifft2c": np.fft.ifft2}[name]
    ours = np.asarray({"fft2c": fft2c, "ifft2c": ifft2c}[name](u))
    shifted = np.fft.ifftshift(np.asarray(u), axes=(-2, -1))
    expected = np.fft.fftshift(transform(shifted, axes=(-2, -1), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
