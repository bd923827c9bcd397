"""A scan reconstructed from its CXI file without holding its frames: time, memory and error per epoch.

    python benchmarks/stream_file.py FILE.cxi [--epochs 3] [--batch-size 256]

Opens the file with `janssen.io.CXIFrames`, builds the default path's start from the 512
frames nearest the scan's centre (`init_far_field_from_file`), then streams every
position once per epoch through sequential `RPIE()` (`reconstruct_from_file`), one epoch
per call so that each can be measured. After each epoch it prints one JSON line: the
epoch's loss, the wall time so far, the process's peak resident memory during the epoch
(`epoch_peak_rss_mb`, Linux; the error measures below run after it, and the ramp-free
one's upsampled FFT takes 4.5 GB on the xlarge object) and over the whole run, beside the
frames' size as float32 (`frames_mb`, never held here), and, when the file has a
`/ground_truth` group (`janssen simulate`, `simulate_preset_cxi`), the object error raw
and with the best linear phase ramp removed (as `large_default.py`). Make the xlarge
preset's file with `janssen simulate --size xlarge --out xlarge.cxi`.
"""

import argparse
import json
import pathlib
import resource
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=pathlib.Path)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import h5py
    import numpy as np
    from run import _peak_since_reset_mb, _reset_peak, ramp_free_error

    import janssen.invert as jinv
    import janssen.io as jio
    from janssen.optics import Probe, SampleFunction
    from janssen.scopes import FarFieldMicroscope

    def peak_mb() -> float:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)

    clock = time.perf_counter()
    with jio.CXIFrames(args.file) as frames:
        height, width = frames.frame_shape
        frames_mb = round(frames.num_positions * height * width * 4 / 2**20, 1)
        truth = None
        with h5py.File(args.file, "r") as handle:
            if "ground_truth" in handle:
                obj, probe, positions = (
                    np.asarray(handle[f"ground_truth/{n}"]) for n in ("object", "probe", "positions")
                )
                dx = frames.geometry.object_pixel_size
                scope = FarFieldMicroscope(
                    Probe(probe, frames.geometry.wavelength, dx), SampleFunction(obj, dx), positions
                )
                truth = (obj, np.asarray(jinv.illumination_map(scope)))
                del scope
        current = jinv.init_far_field_from_file(frames)
        print(json.dumps({"start_s": round(time.perf_counter() - clock, 1), "peak_rss_mb": peak_mb()}), flush=True)
        for epoch in range(args.epochs):
            reset = _reset_peak()
            solution = jinv.reconstruct_from_file(
                current, frames, jinv.RPIE(), epochs=1, batch_size=args.batch_size, key=jinv_key(epoch)
            )
            current = solution.microscope
            epoch_peak = round(_peak_since_reset_mb(), 1) if reset else None  # before the error measures
            row = {"epoch": epoch + 1, "loss": round(float(solution.losses[-1]), 4), "epoch_peak_rss_mb": epoch_peak}
            if truth is not None:
                recon = np.asarray(current.sample.sample)
                row["error"] = round(float(jinv.object_error(truth[0], recon, truth[1], max_shift=0)), 4)
                row["error_ramp_removed"] = round(float(ramp_free_error(truth[0], recon, truth[1])), 4)
            row |= {"wall_s": round(time.perf_counter() - clock, 1), "peak_rss_mb": peak_mb(), "frames_mb": frames_mb}
            print(json.dumps(row), flush=True)
    return 0


def jinv_key(epoch: int):
    import jax.random as jr

    return jr.PRNGKey(epoch)


if __name__ == "__main__":
    sys.exit(main())
