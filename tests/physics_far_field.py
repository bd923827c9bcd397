"""A far-field ptychography simulator written from the physics alone (NumPy, no janssen code).

Used to check janssen on data its own simulator did not make. Conventions are set here,
independently: the probe is the inverse Fourier transform of a circular pupil carrying
a defocus phase `exp(-i pi lambda dz |f|^2)` (`dz > 0`: sample downstream of the focus,
`dz < 0` upstream), the frames are `|fftshift(fft2(P * O_patch))|^2 / (h w)` (zero
frequency at `(h // 2, w // 2)`), scaled to a mean number of photons and drawn from a
Poisson law, and the scan is a jittered raster of whole-pixel window corners whose
bounding box is centred on the object's centre pixel.
"""

import numpy as np


def pupil_probe(n: int, *, side: int, diameter_px: float, pupil_fraction: float = 0.5) -> np.ndarray:
    """`(n, n)` probe from a disc pupil whose defocus spreads it over `diameter_px` pixels."""
    f = (np.arange(n) - n // 2) / n  # cycles per pixel, zero at n // 2
    fx, fy = np.meshgrid(f, f)
    f2 = fx**2 + fy**2
    f_max = pupil_fraction / 2
    # Defocus dz (in pixel units, wavelength 1): the cone 2 dz f_max spans the diameter.
    dz = side * diameter_px / (2 * f_max)
    pupil = (f2 <= f_max**2) * np.exp(-1j * np.pi * dz * f2)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(pupil))) * n


def test_object(shape: tuple[int, int], rng: np.random.Generator, *, max_phase: float = 1.5) -> np.ndarray:
    """A random smooth complex object: amplitude in [0.6, 1], phase in [0, max_phase]."""
    noise = rng.standard_normal((2, *shape))
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    smooth = np.exp(-(fx**2 + fy**2) / (2 * 0.06**2))
    fields = np.real(np.fft.ifft2(np.fft.fft2(noise) * smooth))
    fields = (fields - fields.min(axis=(1, 2), keepdims=True)) / np.ptp(fields, axis=(1, 2), keepdims=True)
    return (0.6 + 0.4 * fields[0]) * np.exp(1j * max_phase * fields[1])


def simulate(
    n: int = 48,
    grid: int = 8,
    *,
    side: int = 1,
    diameter_px: float = 18.0,
    step_px: int = 5,
    photons: float = 1e6,
    seed: int = 0,
    bad_fraction: float = 0.0,
):
    """Frames, positions and truth of a far-field scan.

    **Returns:**

    A dict: `frames` `(N, n, n)` counts, `positions` `(N, 2)` window centres `(x, y)`
    in pixels relative to the object's centre pixel, `object`, `probe`, `bad` `(n, n)`
    bad-pixel mask (`bad_fraction` of the pixels, their counts set to 0).
    """
    rng = np.random.default_rng(seed)
    probe = pupil_probe(n, side=side, diameter_px=diameter_px)
    offsets = (np.arange(grid) - (grid - 1) / 2) * step_px
    centres = np.array([(x, y) for y in offsets for x in offsets])
    centres = centres + rng.integers(-1, 2, size=centres.shape)
    centres = np.round(centres - (centres.max(0) + centres.min(0)) / 2)  # bounding box centred on 0
    span = int(np.max(np.abs(centres))) * 2 + n + 8
    shape = (span + span % 2, span + span % 2)
    obj = test_object(shape, rng)
    frames = []
    for cx, cy in centres.astype(int):
        row = shape[0] // 2 + cy - n // 2
        col = shape[1] // 2 + cx - n // 2
        exit_wave = probe * obj[row : row + n, col : col + n]
        frames.append(np.abs(np.fft.fftshift(np.fft.fft2(exit_wave))) ** 2 / (n * n))
    frames = np.array(frames)
    frames *= photons / frames.sum(axis=(1, 2)).mean()
    frames = rng.poisson(frames).astype(np.float32)
    bad = rng.random((n, n)) < bad_fraction
    frames[:, bad] = 0.0
    return {"frames": frames, "positions": centres, "object": obj, "probe": probe, "bad": bad}


def common_window(truth: np.ndarray, reconstruction: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """The `2 half` square around each array's centre pixel (the scan's centre in both)."""
    cut = []
    for image in (truth, reconstruction):
        cy, cx = image.shape[0] // 2, image.shape[1] // 2
        cut.append(image[cy - half : cy + half, cx - half : cx + half])
    return cut[0], cut[1]
