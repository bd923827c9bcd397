"""An independent near-field ptychography simulator, from the physics alone (NumPy only).

It shares no code with janssen: its own FFTs, its own transfer function, its own scan
and patch geometry, an object defined as a continuous function (so sub-pixel positions
need no Fourier shifts), and a cone beam propagated for real (a spherical wave on a
padded grid, sampled at the magnified detector pixels) rather than through the Fresnel
scaling theorem. Tests use it to check janssen's model and reconstructions against
something other than janssen itself.

Conventions it must share with janssen to be comparable (documented in
`docs/conventions.md`): arrays `(y, x)`, positions `(x, y)` in metres relative to the
object's centre pixel `(Y // 2, X // 2)` after centring the scan's bounding box, the
probe window's centre at pixel `(n // 2, n // 2)`, the object grid of
`janssen.optics.object_shape_for` (restated below), counts per detector pixel.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NearFieldProblem:
    """Data and truth: everything a reconstruction needs and everything it is judged by."""

    intensities: np.ndarray  # (npos, n, n) Poisson counts
    expected: np.ndarray  # (npos, n, n) noiseless counts
    positions: np.ndarray  # (npos, 2) metres, (x, y)
    object: np.ndarray  # (Y, X) complex, on the reconstruction's grid
    probe: np.ndarray  # (n, n) complex, sample plane, no spherical phase, scaled to the counts
    wavelength: float
    pixel_size: float  # sample plane, metres
    detector_pixel: float  # metres
    distance: float  # z2, sample to detector
    focus_to_sample: float | None  # z1 for a cone beam


def _transfer(n: int, dx: float, wavelength: float, z: float) -> np.ndarray:
    """Fresnel transfer function exp(-i pi lambda z (fx^2 + fy^2)) in NumPy's FFT order."""
    f = np.fft.fftfreq(n, dx)
    return np.exp(-1j * np.pi * wavelength * z * (f[None, :] ** 2 + f[:, None] ** 2))


def _propagate(field: np.ndarray, dx: float, wavelength: float, z: float) -> np.ndarray:
    return np.fft.ifft2(np.fft.fft2(field, norm="ortho") * _transfer(field.shape[-1], dx, wavelength, z), norm="ortho")


class _ContinuousObject:
    """`a(r) exp(i phi(r))`: sums of random plane-wave cosines, evaluated anywhere (r in pixels)."""

    def __init__(self, rng: np.random.Generator, *, terms: int = 24, max_frequency: float = 0.12):
        self.freq = rng.uniform(-max_frequency, max_frequency, (2, terms, 2))
        self.offset = rng.uniform(0, 2 * np.pi, (2, terms))
        self.weight = rng.normal(size=(2, terms)) / np.sqrt(terms)

    def _field(self, k: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        arg = 2 * np.pi * (self.freq[k, :, 0] * x[..., None] + self.freq[k, :, 1] * y[..., None]) + self.offset[k]
        return np.tanh(np.sum(self.weight[k] * np.cos(arg), axis=-1))  # in (-1, 1), mostly within +-0.8

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        amplitude = 0.8 + 0.2 * self._field(0, x, y)  # 0.6 .. 1
        phase = 0.5 + 0.5 * self._field(1, x, y)  # 0 .. 1 rad
        return amplitude * np.exp(1j * phase)


def _probe(n: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    c = np.arange(n) - n // 2
    r2 = c[None, :] ** 2 + c[:, None] ** 2
    if kind == "smooth":  # a Gaussian beam
        return np.exp(-r2 / (2 * (n / 6.4) ** 2)).astype(complex)
    if kind != "structured":
        raise ValueError(kind)
    # A soft-edged disc behind a diffuser: a random phase screen correlated over ~2 px.
    f = np.fft.fftfreq(n)
    screen = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * np.exp(-(f[None] ** 2 + f[:, None] ** 2) / 0.045)).real
    screen = (screen - screen.min()) / np.ptp(screen)
    return np.exp(-((r2 / (0.45 * n / 2) ** 2) ** 3)) * np.exp(3j * screen)


def _scan(rng: np.random.Generator, grid: int, step: float) -> np.ndarray:
    """A `grid x grid` raster of `step` pixels, jittered by up to 1 px, centred on its bounding box."""
    g = (np.arange(grid) - (grid - 1) / 2) * step
    pos = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-1, 1, (grid * grid, 2))
    return pos - (pos.max(axis=0) + pos.min(axis=0)) / 2


def _object_shape(pos_px: np.ndarray, n: int, padding: int) -> tuple[int, int]:
    span = np.ceil(pos_px.max(axis=0) - pos_px.min(axis=0)).astype(int) + n + 2 * padding + 2
    return int(span[1] + span[1] % 2), int(span[0] + span[0] % 2)


def simulate(
    *,
    n: int = 32,
    grid: int = 6,
    step: float = 4.0,
    fresnel_px: float = 10.0,
    probe: str = "smooth",
    magnification: int = 1,
    photons: float = 1e6,
    seed: int = 0,
    wavelength: float = 1e-10,
    pixel_size: float = 1e-7,
) -> NearFieldProblem:
    """A near-field dataset: `wavelength * z_eff / pixel_size**2 = fresnel_px` (window Fresnel number n**2 / that).

    With `magnification` M > 1 (an integer) the beam diverges from a point focus `z1`
    before the sample, with `z1 = z2 / (M - 1)` and `z_eff = z2 / M`; the exit wave
    (probe times its spherical phase `exp(i pi r^2 / (lambda z1))` times the object) is
    propagated over `z2` on a grid four windows wide and sampled every M pixels, the
    detector pixel being M sample pixels.
    """
    rng = np.random.default_rng(seed)
    field = _probe(n, probe, rng)
    obj_fn = _ContinuousObject(rng)
    pos_px = _scan(rng, grid, step)
    padding = n // 8
    shape = _object_shape(pos_px, n, padding)
    oy, ox = np.mgrid[0 : shape[0], 0 : shape[1]]
    obj = obj_fn(ox - shape[1] // 2, oy - shape[0] // 2)  # pixel coordinates about the centre pixel
    c = np.arange(n) - n // 2
    z_eff = fresnel_px * pixel_size**2 / wavelength
    z2 = z_eff * magnification
    z1 = None if magnification == 1 else z2 / (magnification - 1)
    frames = []
    for p in pos_px:
        exit_wave = field * obj_fn(p[0] + c[None, :], p[1] + c[:, None])
        frames.append(_detect(exit_wave, magnification, pixel_size, wavelength, z1, z2))
    expected = np.stack(frames)
    scale = photons / np.mean(np.sum(expected, axis=(1, 2)))
    expected = expected * scale
    return NearFieldProblem(
        intensities=rng.poisson(expected).astype(np.float32),
        expected=expected,
        positions=pos_px * pixel_size,
        object=obj,
        probe=field * np.sqrt(scale),
        wavelength=wavelength,
        pixel_size=pixel_size,
        detector_pixel=magnification * pixel_size,
        distance=z2,
        focus_to_sample=z1,
    )


def _detect(exit_wave: np.ndarray, m: int, dx: float, wavelength: float, z1: float | None, z2: float) -> np.ndarray:
    """Counts per detector pixel: plane wave on the window, cone beam on a padded grid."""
    n = exit_wave.shape[-1]
    if z1 is None:
        return np.abs(_propagate(exit_wave, dx, wavelength, z2)) ** 2
    big = 4 * n
    padded = np.zeros((big, big), complex)
    lo = big // 2 - n // 2
    padded[lo : lo + n, lo : lo + n] = exit_wave
    r = np.arange(big) - big // 2
    padded *= np.exp(1j * np.pi * (r[None, :] ** 2 + r[:, None] ** 2) * dx**2 / (wavelength * z1))
    out = _propagate(padded, dx, wavelength, z2)
    taps = big // 2 + m * (np.arange(n) - n // 2)
    # A detector pixel is m x m sample pixels: its counts are m**2 times the sampled density.
    return m**2 * np.abs(out[np.ix_(taps, taps)]) ** 2
