"""Write a janssen simulated preset as the peers' benchmark problem (an .npz file).

    /work/venv/bin/python benchmarks/peers/make_npz.py --size small --out small.npz

Runs in janssen's own environment. The start is benchmarks/pie.py's `starting_point`
(a unit object and the true probe blurred by 1 px rms, with a 0.3 rad pupil-phase error and
a (0.37, -0.29) px offset), so the peers start where janssen's engines start. The format
is described in benchmarks/README.md ("Peers").
"""

import argparse
import os
import sys

import jax.random as jr
import numpy as np

from janssen.io import simulate_preset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from pie import probe_distance, starting_point  # noqa: E402  (benchmarks/pie.py: the one start for every engine)


def corners_px(positions, dx, object_shape, frame_shape):
    """Top-left `(x, y)` pixel of each probe window, from janssen's centre-relative positions in metres.

    janssen puts the probe's centre pixel `(H // 2, W // 2)` on `position / dx` pixels from
    the object's centre pixel `(Y // 2, X // 2)` (janssen/optics/_scan.py).
    """
    centre = np.array([object_shape[1] // 2 - frame_shape[1] // 2, object_shape[0] // 2 - frame_shape[0] // 2])
    return centre + np.asarray(positions, np.float64) / np.asarray(dx, np.float64)


def problem(size, seed=0, *, start="fair"):
    """The arrays of the .npz file for one preset (see benchmarks/README.md, "Peers").

    `start` picks `benchmarks/pie.py`'s starting probe (`start_probe`): "fair" (the truth
    blurred, with a pupil-phase error and a sub-pixel offset; every code's start) or "pupil".
    """
    dataset = simulate_preset(size, key=jr.PRNGKey(seed))
    start_kind = start
    start = starting_point(dataset, kind=start_kind)
    data = dataset.data
    dx = np.asarray(dataset.object_pixel_size, np.float64)
    obj = np.asarray(dataset.object, np.complex64)
    frame = data.frame_shape
    return {
        "intensities": np.asarray(data.intensities, np.float32),
        "intensities_expected": np.asarray(dataset.expected_intensities(), np.float32),
        "positions_px": corners_px(dataset.positions, dx, obj.shape, frame),
        "positions_m": np.asarray(dataset.positions, np.float64),
        "probe": np.asarray(start.probe.fields(), np.complex64),
        "object_shape": np.array(obj.shape, np.int64),
        "object_true": obj,
        "probe_true": np.asarray(dataset.probe, np.complex64),
        "wavelength": np.float64(data.wavelength),
        "dx": dx,
        "distance": np.float64(data.distance),
        "camera_pixel_size": np.asarray(data.camera_pixel_size, np.float64),
        "start_probe_error": np.float64(probe_distance(start.probe.fields(), dataset.probe)),
        "start_kind": np.array(start_kind),
        "size": np.array(size),
        "seed": np.int64(seed),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="janssen preset: small, medium or large")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the preset (benchmarks/pie.py uses 0)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    arrays = problem(args.size, args.seed)
    np.savez(args.out, **arrays)
    n, h, w = arrays["intensities"].shape
    print(f"{args.out}: {n} frames of {h}x{w}, object {arrays['object_shape'].tolist()}, dx {arrays['dx'].tolist()} m")
    gap = np.linalg.norm(arrays["probe"] - arrays["probe_true"]) / np.linalg.norm(arrays["probe_true"])
    counts = np.mean(np.sum(arrays["intensities"], axis=(1, 2)))
    print(
        f"start probe vs truth: relative difference {gap:.3f}, {float(arrays['start_probe_error']):.3f} "
        f"a global factor apart; mean counts per frame {counts:.4g}"
    )


if __name__ == "__main__":
    sys.exit(main())
