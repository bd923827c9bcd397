"""Scan geometry recovery: a wrong distance and jittered positions, as issue 4 states the target.

    python benchmarks/geometry.py [--size medium] [--distance-error -0.05] [--jitter-px 2]
                                  [--polish 0] [--out geometry.json]

Simulates the preset (`simulate_preset(size, key=PRNGKey(0))`, the suite's data and start:
a unit object and the true probe with a 0.3 rad pupil-phase error), then gives the
reconstruction a **file** geometry that is wrong: the distance times `1 + distance_error`
(so every object pixel, and with it the scan measured in pixels, is off by that factor)
and every position moved by a uniform random offset of up to `jitter_px` pixels in x and
in y (`PRNGKey(1)`). The data stay those simulated with the true geometry.

`refine_geometry` with its defaults runs on that start; optionally `--polish N`
iterations of joint Gauss-Newton (object, probe, positions, distance) follow. Printed and
written as JSON: the distance error (refined object pixel over the true one, minus 1), the
positions' RMS error in pixels after removing their common offset (a gauge when the
object is refined), the object error (DESIGN.md's measure), the data residual against the
noise floor, the choices of each scale search, and the wall time of each stage.
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "peers"))
from make_npz import problem  # noqa: E402

from janssen.invert import (  # noqa: E402
    GaussNewton,
    TextProgressMeter,
    data_residual,
    illumination_map,
    object_error,
    reconstruct,
    refine_geometry,
)
from janssen.invert._checkpoint import result_name  # noqa: E402
from janssen.io import MicroscopeData  # noqa: E402
from janssen.optics import Probe, SampleFunction  # noqa: E402
from janssen.scopes import FarFieldMicroscope  # noqa: E402


def wrong_geometry(size: str, distance_error: float, jitter_px: float):
    """`(data, start, truth)`: data simulated with the true geometry, a file geometry that is off."""
    arrays = problem(size, 0, start="pupil")  # the start docs/geometry.md was measured from
    dx = arrays["dx"]
    key = jax.random.PRNGKey(1)
    jitter = np.asarray(jax.random.uniform(key, arrays["positions_m"].shape, minval=-jitter_px, maxval=jitter_px))
    data = MicroscopeData(
        arrays["intensities"], arrays["positions_m"] + jitter * dx, arrays["wavelength"],
        arrays["camera_pixel_size"], arrays["distance"] * (1 + distance_error),
    )  # fmt: skip
    file_dx = np.asarray(data.object_pixel_size)
    shape = tuple(int(side) for side in arrays["object_shape"])
    start = FarFieldMicroscope(
        Probe(arrays["probe"], data.wavelength, file_dx), SampleFunction(np.ones(shape, np.complex64), file_dx),
        data.positions,
    )  # fmt: skip
    truth = FarFieldMicroscope(
        Probe(arrays["probe_true"], data.wavelength, dx), SampleFunction(arrays["object_true"], dx),
        arrays["positions_m"],
    )  # fmt: skip
    true_data = MicroscopeData(
        arrays["intensities"], arrays["positions_m"], arrays["wavelength"], arrays["camera_pixel_size"],
        arrays["distance"],
    )  # fmt: skip
    return data, start, truth, true_data


def geometry_errors(microscope, truth, illumination) -> dict:
    """Distance error, RMS position error (pixels, common offset removed) and object error."""
    true_dx = np.asarray(truth.sample.dx, np.float64)
    error = (np.asarray(microscope.positions, np.float64) - np.asarray(truth.positions, np.float64)) / true_dx
    error -= error.mean(0)
    return {
        "distance_error": float(np.asarray(microscope.sample.dx, np.float64)[0] / true_dx[0] - 1),
        "positions_rms_px": float(np.sqrt(np.mean(np.sum(error**2, 1)))),
        "object_error": object_error(truth.sample.sample, microscope.sample.sample, illumination),
    }


def search_figure(result, truth, path: pathlib.Path) -> None:
    """Each search's residual against the distance it tried, relative to the true distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    true_dx = float(np.asarray(truth.sample.dx)[0])
    final = (float(np.asarray(result.microscope.sample.dx)[0]) / true_dx - 1) * 100
    fig, (full, zoom) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, search in enumerate(result.searches):
        # A trial `s` divides the object pixel, and with it the distance, by `s`.
        tried = (search.object_pixel / np.asarray(search.scales) / true_dx - 1) * 100
        for axis in (full, zoom):
            axis.plot(tried, search.losses, "o-", ms=3, label=f"search {k + 1}")
    for axis in (full, zoom):
        axis.axvline(0, color="k", lw=0.8, ls=":")
        axis.set_xlabel("distance tried, % from the true distance")
    full.set_ylabel("residual after relaxation (√counts)")
    zoom.set_xlim(-1.5, 1.5)
    near = [loss for search in result.searches
            for scale, loss in zip(search.scales, search.losses, strict=True)
            if abs((search.object_pixel / scale / true_dx - 1) * 100) <= 1.5 and np.isfinite(loss)]  # fmt: skip
    if near:
        pad = 0.05 * (max(near) - min(near) + 1e-3)
        zoom.set_ylim(min(near) - pad, max(near) + pad)
    full.legend(fontsize=8)
    full.set_title("scale searches of refine_geometry", fontsize=10)
    zoom.set_title(f"near the truth (refined distance {final:+.3f} %)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="medium", choices=("small", "medium", "large"))
    parser.add_argument("--distance-error", type=float, default=-0.05)
    parser.add_argument("--jitter-px", type=float, default=2.0)
    parser.add_argument("--polish", type=int, default=0, help="joint Gauss-Newton iterations afterwards")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    parser.add_argument("--figure", type=pathlib.Path, default=None, help="PNG of the scale searches")
    args = parser.parse_args(argv)

    data, start, truth, true_data = wrong_geometry(args.size, args.distance_error, args.jitter_px)
    illumination = np.asarray(illumination_map(truth))
    row = {
        "size": args.size, "distance_error_file": args.distance_error, "jitter_px": args.jitter_px,
        "device": str(jax.devices()[0]), "jax": jax.__version__,
        "noise_floor": data_residual(truth, true_data), "start": geometry_errors(start, truth, illumination),
    }  # fmt: skip
    print(json.dumps(row["start"]), flush=True)
    begin = time.perf_counter()
    result = refine_geometry(start, data, progress_meter=TextProgressMeter())
    jax.block_until_ready(result.microscope)
    row["refine_geometry_s"] = time.perf_counter() - begin
    row["result"] = result_name(result.result)
    row["searches"] = [{"chosen": s.chosen, "at_edge": s.at_edge} for s in result.searches]
    row["refined"] = geometry_errors(result.microscope, truth, illumination)
    row["refined"]["residual"] = data_residual(result.microscope, data)
    print(json.dumps({k: row[k] for k in ("refine_geometry_s", "searches", "refined")}), flush=True)
    if args.figure:
        search_figure(result, truth, args.figure)
    if args.polish:
        begin = time.perf_counter()
        polished = reconstruct(
            result.microscope, data, GaussNewton(), trainable=["object", "probe", "positions", "distance"],
            num_iterations=args.polish,
        )  # fmt: skip
        jax.block_until_ready(polished.microscope)
        row["polish_s"] = time.perf_counter() - begin
        row["polished"] = geometry_errors(polished.microscope, truth, illumination)
        row["polished"]["residual"] = data_residual(polished.microscope, data)
        print(json.dumps({k: row[k] for k in ("polish_s", "polished")}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(row, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
