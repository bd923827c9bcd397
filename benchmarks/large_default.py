"""The large preset on the default path: object error and time after each stage.

    python benchmarks/large_default.py [--size large] [--curvature-steps 0]
    python benchmarks/large_default.py --size xlarge --file xlarge.cxi [--photons 4e6] [--true-probe] [--save OBJ.npy]
    python benchmarks/large_default.py --frames 64 4000 --photons 6e4 [--before]

Simulates `simulate_preset(size, key=PRNGKey(0))` (with `--file`: reads the CXI file, written
first by `simulate_preset_cxi`, a batch of positions at a time, when it does not exist; its
ground truth is read from the file's `/ground_truth` group), starts from the data alone
(`init_far_field_microscope`, what `janssen reconstruct` does without `--probe`; with
`--frames SIDE POSITIONS`, `simulate(SIDE, POSITIONS, photons=--photons, key=PRNGKey(0))`
instead of a preset: the xlarge preset's field at a smaller frame; with
`--true-probe`, from the true probe scaled and aligned as `--probe` is, to tell the probe
guess's share of the error from the schedule's), runs
`default_schedule`'s stages one by one (`run_schedule`, without the final ramp levelling,
so that each figure is the stage's own), then, with `--curvature-steps N`, one more
`Stage(CurvatureSearch(), N)`. `--before` runs the schedule as it was before the
phase-field searches (2026-12-06: rPIE, ePIE at 0.25, `CurvatureSearch`, batched mPIE). After each
stage it prints the iterations, how the stage stopped, the object error (DESIGN.md's,
zero shift) raw and with the best linear phase ramp removed (`benchmarks/run.py`'s
`ramp_free_error`), the wall time so far, and the process's peak resident memory so far
(`peak_rss_mb`, JAX and XLA included; on a 4200² object the ramp-free error's 4x upsampled
FFT alone takes 4.5 GB) and the peak during the stage alone, before the errors are measured
(`stage_peak_rss_mb`, Linux), beside the frames' own size (`frames_mb`). One
JSON line per stage.
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
    parser.add_argument("--size", default="large", choices=("small", "medium", "large", "xlarge"))
    parser.add_argument("--file", type=pathlib.Path, default=None, help="CXI file of the preset (made if missing)")
    made = "photons a frame, for --frames or a file made here (a file that exists keeps its own)"
    parser.add_argument("--photons", type=float, default=1e6, help=made)
    parser.add_argument("--curvature-steps", type=int, default=0)
    parser.add_argument(
        "--frames", type=int, nargs=2, default=None, metavar=("SIDE", "POSITIONS"), help="simulate this field"
    )
    parser.add_argument("--before", action="store_true", help="the schedule before the phase-field searches")
    parser.add_argument("--progress", action="store_true", help="a progress line per tenth of each stage on stderr")
    parser.add_argument(
        "--true-probe", action="store_true", help="start from the true probe (as --probe would), not the guess"
    )
    parser.add_argument("--save", type=pathlib.Path, default=None, help="save the final object here (.npy)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import jax
    import numpy as np
    from run import _peak_since_reset_mb, _reset_peak, ramp_free_error

    import janssen.invert as jinv
    import janssen.io as jio

    if args.frames is not None:
        dataset = jio.simulate(*args.frames, key=jax.random.PRNGKey(0), photons=args.photons)
        data, truth_scope = dataset.data, dataset.microscope()
    elif args.file is None:
        dataset = jio.simulate_preset(args.size, key=jax.random.PRNGKey(0))
        data, truth_scope = dataset.data, dataset.microscope()
    else:
        data, truth_scope = _from_file(args.file, args.size, args.photons)
    truth = np.asarray(truth_scope.sample.sample)
    illumination = np.asarray(jinv.illumination_map(truth_scope))
    true_probe = np.asarray(truth_scope.probe.fields()) if args.true_probe else None
    del truth_scope
    print(json.dumps({"loaded_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
    clock = time.perf_counter()
    current = jinv.init_far_field_microscope(data, true_probe, scale_probe=True)
    stages = list(schedule_before(jinv) if args.before else jinv.default_schedule(current))
    if args.curvature_steps:
        stages.append(jinv.Stage(jinv.CurvatureSearch(), args.curvature_steps, None))
    for stage in stages:
        meter = jinv.TextProgressMeter() if args.progress else jinv.NoProgressMeter()
        reset = _reset_peak()
        before = _peak_since_reset_mb() if reset else None  # the resident memory the stage starts from
        run = jinv.run_schedule(current, data, [stage], level_ramp=False, progress_meter=meter)
        current = run.microscope
        obj = np.asarray(current.sample.sample)
        stage_peak = _peak_since_reset_mb() if reset else None  # before the error measures' own arrays
        row = {
            "size": args.size if args.frames is None else "x".join(map(str, args.frames)),
            "stage": [list(s) for s in run.stages],
            "error": round(float(jinv.object_error(truth, obj, illumination, max_shift=0)), 4),
            "error_ramp_removed": round(float(ramp_free_error(truth, obj, illumination)), 4),
            "wall_s": round(time.perf_counter() - clock, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "stage_peak_rss_mb": None if stage_peak is None else round(stage_peak, 1),
            "stage_start_rss_mb": None if before is None else round(before, 1),
            "frames_mb": round(data.intensities.nbytes / 2**20, 1),
        }
        print(json.dumps(row), flush=True)
    if args.save is not None:
        np.save(args.save, np.asarray(current.sample.sample))
    return 0


def schedule_before(jinv):
    """The default schedule of 2026-12-06, before the phase-field searches (`docs/scripts/phase_field.py` too)."""
    return (
        jinv.Stage(jinv.RPIE(), 100, jinv.Convergence()),
        jinv.Stage(jinv.EPIE(object_step=0.25, probe_step=0.25), 200, jinv.Convergence()),
        jinv.Stage(jinv.CurvatureSearch(), 8, None),
        jinv.Stage(jinv.MomentumPIE(mode="batched"), 100, jinv.Convergence()),
    )


def _from_file(path: pathlib.Path, size: str, photons: float):
    """The data (`read_cxi`) and the true microscope (`/ground_truth`) of a preset's CXI file.

    A missing file is simulated first, in a child process so that its memory is not counted
    here; the time and the child's peak memory are printed.
    """
    import subprocess

    import janssen.io as jio

    if not path.exists():
        code = (
            "import resource, sys, time, jax.random as jr, janssen.io as jio\n"
            "t = time.perf_counter()\n"
            f"jio.simulate_preset_cxi({str(path)!r}, {size!r}, key=jr.PRNGKey(0), photons={photons!r})\n"
            "print(round(time.perf_counter() - t, 1), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
        made = {"simulated": str(path), "simulate_s": float(out[-2]), "simulate_peak_rss_mb": float(out[-1])}
        print(json.dumps(made))
    truth = jio.read_ground_truth(path)
    return truth.data, truth.microscope()


if __name__ == "__main__":
    sys.exit(main())
