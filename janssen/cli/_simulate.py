"""`janssen simulate`: write a simulated dataset with its ground truth to a CXI file."""

import argparse
import os
import pathlib
import sys
from collections.abc import Callable

import jax.random as jr
import numpy as np

import janssen.io as jio

from ._args import MAX_MODES

# Mean counts per frame: at least one photon (fewer is an empty detector), at most 1e12 (beyond any
# detector's range; float32 counts stop being whole photons far below it).
_PHOTONS = (1.0, 1e12)
# The coherence width is in metres: over 1 mm (the probe is 480 nm across) it is a unit slip (nm).
_MAX_COHERENCE_WIDTH = 1e-3


def run_simulate(args: argparse.Namespace) -> int:
    """Simulate, write and summarise; on failure print one line to stderr and return 2."""
    try:
        _check_arguments(args)
        _check_writable(args.out, overwrite=args.overwrite)
        dataset = jio.simulate_preset_cxi(
            args.out,
            args.size,
            key=jr.PRNGKey(args.seed),
            photons=args.photons,
            modes=args.modes,
            coherence_width=args.coherence_width,
            overwrite=args.overwrite,
            progress=_progress_lines(),
        )
    except (OSError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"janssen simulate: error: {message}", file=sys.stderr)
        return 2
    print(_summary(args, dataset))
    return 0


def _check_arguments(args: argparse.Namespace) -> None:
    """Every argument against its range, before anything is simulated."""
    if not 0 <= args.seed <= 2**32 - 1:
        raise ValueError(f"--seed must be an integer from 0 to {2**32 - 1} (2**32 - 1), got {args.seed}")
    low, high = _PHOTONS
    if not (np.isfinite(args.photons) and low <= args.photons <= high):
        raise ValueError(
            f"--photons: `photons` must be finite and positive, a number of counts per frame from {low:g} to "
            f"{high:g} (below 1 the detector is empty; above 1e12 beyond any detector), got {args.photons!r}"
        )
    if not 1 <= args.modes <= MAX_MODES:
        raise ValueError(
            f"--modes must be an integer from 1 to {MAX_MODES} (each mode is a whole probe; a few carry all but a "
            f"percent of a real beam's power), got {args.modes!r}"
        )
    width = args.coherence_width
    if width is not None:
        if not (np.isfinite(width) and width > 0):
            raise ValueError(f"--coherence-width must be a finite number of metres > 0, got {width!r}")
        if width > _MAX_COHERENCE_WIDTH:
            raise ValueError(
                f"--coherence-width must be at most {_MAX_COHERENCE_WIDTH:g} m (it is in metres: 180 nm is 1.8e-07), "
                f"got {width!r}"
            )


def _check_writable(path: pathlib.Path, *, overwrite: bool) -> None:
    # Fail before a long simulation rather than after it.
    folder = path.parent
    if not folder.is_dir():
        raise OSError(f"cannot write --out {str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise OSError(f"cannot write --out {str(path)!r}: folder {str(folder)!r} is not writable")
    if path.is_dir():
        raise OSError(f"--out {str(path)!r} is a folder: expected the name of a CXI file")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OSError(f"--out: {str(path)!r} already exists; pass --overwrite to replace it or choose another --out")


def _progress_lines() -> Callable[[int, int], None]:
    """A line on stderr for every tenth of a scan of over 1000 positions (the large presets take minutes)."""
    reported = [0]

    def progress(done: int, total: int) -> None:
        tenths = (10 * done) // total
        if total > 1000 and tenths > reported[0]:
            reported[0] = tenths
            print(f"janssen simulate: {done}/{total} frames written", file=sys.stderr, flush=True)

    return progress


def _summary(args: argparse.Namespace, dataset: "jio.SimulatedFile") -> str:
    height, width = dataset.geometry.frame_shape
    pixel_nm = float(dataset.geometry.object_pixel_size[0]) * 1e9
    return (
        f"wrote {args.out}: {len(dataset.positions)} frames of {height}x{width}, {args.photons:.3g} photons/frame, "
        f"{_modes_summary(args, dataset)}, object {dataset.object.shape[0]}x{dataset.object.shape[1]} "
        f"pixels of {pixel_nm:.3g} nm, seed {args.seed}"
    )


def _modes_summary(args: argparse.Namespace, dataset: "jio.SimulatedFile") -> str:
    count = dataset.probe.shape[0]
    if args.coherence_width is None:
        return f"{count} probe mode(s)"
    powers = np.sum(np.abs(np.asarray(dataset.probe)) ** 2, axis=(1, 2))
    weights = "/".join(f"{w:.2f}" for w in powers / np.sum(powers))
    return f"{count} probe mode(s) of coherence width {args.coherence_width:.3g} m (weights {weights})"
