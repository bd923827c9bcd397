"""What a run starts from: the data file, a probe file, and the starting microscope built from them."""

import pathlib
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import janssen.invert as jinv
import janssen.io as jio
from janssen.optics import CoherentModeSet, MixedStateProbe, Probe, extend_modes
from janssen.scopes import AbstractMicroscope

from ._errors import UsageError
from ._settings import ReconstructSettings

#: Extra probe modes start with this fraction of the total power each (capped so that the
# first mode keeps at least half of it).
EXTRA_MODE_POWER = 0.05


def check_data_path(path: pathlib.Path, expected: str) -> None:
    """Refuse a data path that is a folder or no file (`expected`: what it should be, for the message)."""
    if path.is_dir():
        raise UsageError(f"data file {str(path)!r} is a folder: expected {expected}")
    if not path.is_file():
        raise UsageError(f"data file {str(path)!r} does not exist")


def load_data(path: pathlib.Path) -> tuple[jio.MicroscopeData, Any]:
    """The data and, for the Siemens star, the probe that comes with it."""
    check_data_path(path, "a CXI file or the Siemens-star .npz.bz2")
    try:
        if path.name.endswith((".npz.bz2", ".npz")):
            measured = jio.load_siemens_star(path)
            data, probe = measured.data, measured.probe
        else:
            _check_fits_in_memory(path)
            data, probe = jio.read_cxi(path), None
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise UsageError(f"cannot read data file {str(path)!r}: {error}") from error
    if not np.any(np.asarray(data.intensities)):
        raise UsageError(
            f"data file {str(path)!r}: the frames ('/entry_1/data_1/data') must hold counts, got zero in every pixel "
            "of every frame"
        )
    return data, probe


#: Memory a reconstruction needs beside the frames, as a fraction of theirs (the PIE
#: engines' step peaks at 1.4-1.5 x the frames; docs/scale.md).
_MEMORY_MARGIN = 0.5


def _check_fits_in_memory(path: pathlib.Path) -> None:
    """Refuse, before reading them, frames that would not fit in the memory available now."""
    with jio.CXIFrames(path) as frames:
        count, (height, width) = frames.num_positions, frames.frame_shape
    need = count * height * width * 4 * (1 + _MEMORY_MARGIN)
    available = available_memory()
    if available is not None and need > available:
        raise UsageError(
            f"data file {str(path)!r}: its {count} frames of {height}x{width} take "
            f"{need / (1 + _MEMORY_MARGIN) / 2**30:.1f} GiB as float32 and a reconstruction about "
            f"{need / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of memory available: add --stream "
            "to read them from the file a batch of positions at a time (janssen.invert.reconstruct_from_file; "
            "docs/cli.md, 'Frames larger than memory'), or split them over machines"
        )


def object_grid(
    path: pathlib.Path, data: jio.MicroscopeData | jio.CXIFrames, object_pixel_size: Any = None
) -> jio.ObjectGrid:
    """The object grid of `data` (`janssen.io.check_geometry`), refusing unit slips and frames that do not overlap.

    Run before anything large is allocated; `data` may be an open `CXIFrames` (no frame is read).
    """
    try:
        grid = jio.check_geometry(data, object_pixel_size=object_pixel_size)
    except jio.GeometryError as error:
        raise UsageError(f"data file {str(path)!r}: {error}") from error
    frame = max(data.frame_shape)
    if grid.median_step_px > frame:
        raise UsageError(
            f"data file {str(path)!r}: neighbouring scan positions (the translations, "
            "'/entry_1/sample_1/geometry_1/translation' in a CXI file) are "
            f"{grid.median_step_px:.3g} object pixels apart (median), expected less than the {frame}-pixel frame so "
            "that neighbouring frames overlap: translations not in metres (mm?), or a wrong distance, wavelength or "
            "pixel size"
        )
    return grid


def available_memory() -> float | None:
    """Bytes of memory available to a new allocation (Linux `MemAvailable`), or `None` where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def load_probe(path: pathlib.Path, data: jio.MicroscopeData | jio.CXIFrames) -> np.ndarray:
    """A `.npy` probe of the data's frame shape; in memory, scaled to the measured counts (`scale_probe_to_counts`).

    Checked before any frame is read, so a bad file is refused at once, in memory or streamed.
    An open file's probe keeps the power it has in the file: the streamed start scales it to
    the counts of the frames it reads (`init_far_field_from_file(scale_probe=True)`), which
    are then read once.
    """
    try:
        probe = np.load(path)
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else " ".join(str(error).split())
        raise UsageError(f"cannot read --probe {str(path)!r}: expected a NumPy .npy file, {reason}") from error
    if not isinstance(probe, np.ndarray) or probe.dtype.kind not in "iufc":
        kind = type(probe).__name__ if not isinstance(probe, np.ndarray) else f"dtype {probe.dtype}"
        raise UsageError(f"--probe {str(path)!r} must hold complex or real numbers, got {kind}")
    frame_shape = tuple(data.frame_shape)
    if probe.shape[-2:] != frame_shape or probe.ndim not in (2, 3):
        raise UsageError(
            f"probe {str(path)!r} must be (y, x) or (modes, y, x) with frames {frame_shape}, got {probe.shape}"
        )
    if not np.all(np.isfinite(probe)):
        raise UsageError(
            f"--probe {str(path)!r} must be finite, got {int(np.sum(~np.isfinite(probe)))} NaN or infinite values"
        )
    if not np.any(probe):
        raise UsageError(f"--probe {str(path)!r} must have some power, got a probe that is zero everywhere")
    if isinstance(data, jio.CXIFrames):
        return probe
    # Scale to the measured counts: with a unit object the model then predicts the data's power.
    return np.asarray(jinv.scale_probe_to_counts(probe, data))


def check_modes(modes: int, count: int, path: pathlib.Path) -> None:
    """Refuse `--modes` above the data's `count` frames (in memory, or in the open file with --stream)."""
    if modes > count:
        raise UsageError(
            f"--modes {modes} exceeds the {count} frames of {str(path)!r}: each mode "
            "has as many unknowns as a frame has pixels, so the data cannot support more modes than frames"
        )


def check_probe_modes(fields: np.ndarray, modes: int) -> None:
    """Refuse a starting probe with more modes than `--modes` (above 1: it then adds modes to it)."""
    if modes > 1 and fields.ndim == 3 and fields.shape[0] > modes:
        raise UsageError(f"the starting probe has {fields.shape[0]} modes, more than --modes {modes}")


def extra_modes(fields: np.ndarray, modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal modes and powers: `fields`' modes plus new ones, the total power unchanged.

    `janssen.optics.extend_modes`: the new modes are the strongest mode times low-order
    polynomials of the position, each with `EXTRA_MODE_POWER` of the total power.
    """
    check_probe_modes(fields, modes)
    basis, weights = extend_modes(fields, modes, share=EXTRA_MODE_POWER)
    return np.asarray(basis), np.asarray(weights)


def probe_module(fields: Any, modes: int, wavelength: Any, dx: Any) -> Probe | MixedStateProbe:
    """A `Probe` of `fields`, or for `modes > 1` a `MixedStateProbe` with extra modes added."""
    fields = np.asarray(fields)
    fields = fields[None] if fields.ndim == 2 else fields
    if modes == 1:
        return Probe(fields, wavelength, dx)
    basis, weights = extra_modes(fields, modes)
    dtype = jnp.result_type(fields.dtype, jnp.complex64)
    mode_set = CoherentModeSet(jnp.asarray(basis, dtype=dtype), jnp.asarray(weights), wavelength, dx)
    return MixedStateProbe(mode_set)


def near_field_geometry(settings: ReconstructSettings, data: jio.MicroscopeData) -> dict[str, Any]:
    """`init_near_field_microscope`'s geometry: the given (or the file's) distance, `z1` and propagator."""
    distance = float(data.distance) if settings.distance is None else float(settings.distance)
    return {"distance": distance, "focus_to_sample": settings.focus_to_sample, "propagator": settings.propagator}


def start_microscope(
    settings: ReconstructSettings, data: jio.MicroscopeData, bundled: Any
) -> tuple[AbstractMicroscope, list[str]]:
    """The starting microscope, and notes on how it was guessed (printed with the summary)."""
    if settings.near_field:
        return _start_near_field(settings, data), []
    # A model probe (from a file or bundled with the data) is centred on the measured
    # far field first: the engines pin the probe's far-field centroid (phase-ramp ambiguity).
    notes, background = [], "auto"
    if settings.probe is not None:
        fields = jinv.align_probe_to_data(jnp.asarray(load_probe(settings.probe, data)), data)
    elif bundled is not None:
        fields = jinv.align_probe_to_data(jnp.asarray(bundled), data)
    else:
        search = jinv.search_probe(data, key=jr.PRNGKey(settings.seed))
        # Reported with the summary (an error found after the start must stay a single line).
        notes.append(
            f"probe guess: sample {'downstream' if search.defocus_sign > 0 else 'upstream'} of the focus, "
            f"illuminated disc {search.diameter_px:.1f} px across (janssen.invert.search_probe)"
        )
        fields, background = search.fields, search.background  # estimated once, for the search and the start
    probe = probe_module(fields, settings.modes, data.wavelength, data.object_pixel_size)
    padding = jinv.geometry_padding(data) if settings.geometry else None
    # The fields were aligned above (align=False).
    start = jinv.init_far_field_microscope(data, probe, padding=padding, align=False, background=background)
    if start.detector is not None:
        notes.append(
            f"detector background: {float(start.detector.background):.3g} counts per pixel, modelled "
            "(janssen.invert.background_start)"
        )
    return start, notes


def _start_near_field(settings: ReconstructSettings, data: jio.MicroscopeData) -> AbstractMicroscope:
    options = near_field_geometry(settings, data)
    # Default probe: the mean pattern's amplitude propagated back to the sample plane
    # (`init_near_field_microscope`; a flat probe stalled at object error 0.57-1.0 where this
    # start reaches 0.06). `--probe` replaces it; `--modes` adds modes to either.
    start = jinv.init_near_field_microscope(data, **options)
    if settings.probe is None and settings.modes == 1:
        return start
    fields = start.probe.fields() if settings.probe is None else load_probe(settings.probe, data)
    probe = probe_module(fields, settings.modes, data.wavelength, start.sample.dx)
    return jinv.init_near_field_microscope(data, probe=probe, **options)
