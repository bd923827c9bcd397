"""Stages of the default schedule run on frames streamed from a CXI file, against streamed rPIE alone.

    python benchmarks/stream_schedule.py [--frames 64 4000] [--photons 6e4] [--batch-size 256]
        [--epochs 40 40 20] [--steps 8] [--after whole|mpie|rpie|epie]

Simulates a wide field (`janssen.io.simulate(SIDE, POSITIONS)`, the field of
`large_default.py --frames`), writes its frames to a CXI file, and reconstructs them from
the file without holding them, from the default path's start (`init_far_field_from_file`):

- `rpie`: sequential `RPIE(adapt_alpha=False)` through `reconstruct_from_file` for all the
  epochs below (what `janssen reconstruct --stream --engine rpie` runs);
- `schedule`: rPIE epochs, a `PhaseFieldSearch` (`search_from_file`, order
  `phase_field_order`), the `--after` engine's epochs, the search again, that engine
  again. `--after whole` (default): batched mPIE with its own defaults, a whole-scan step
  an epoch (`whole_scan=True`: the default schedule's batched stages, as `janssen
  reconstruct --stream` runs them, here without the ePIE stage and with fixed epochs);
  `mpie`: batched mPIE a batch at a time (momentum 0.3, `adapt_alpha=False`); `rpie`:
  sequential rPIE (the streamed default's stages before 2026-12-08); `epie`: sequential
  ePIE with steps of 0.25.

Prints one JSON line per stage: the object error raw and with the best linear phase ramp
removed (as `large_default.py`), the wall time so far, the peak resident memory.
"""

import argparse
import json
import pathlib
import resource
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs=2, default=(64, 4000), metavar=("SIDE", "POSITIONS"))
    parser.add_argument("--photons", type=float, default=6e4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, nargs=3, default=(40, 40, 20), metavar=("RPIE", "MPIE", "MPIE_AGAIN"))
    parser.add_argument("--steps", type=int, default=8, help="most steps of each search")
    parser.add_argument("--only", choices=("rpie", "schedule"), default=None)
    parser.add_argument(
        "--after",
        choices=("whole", "mpie", "rpie", "epie"),
        default="whole",
        help="the PIE engine after each search: batched mPIE whole-scan steps, batched mPIE a batch at a time "
        "(momentum 0.3), sequential rPIE or ePIE with steps 0.25",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import jax
    import numpy as np
    from run import ramp_free_error

    import janssen.invert as jinv
    import janssen.io as jio

    dataset = jio.simulate(*args.frames, key=jax.random.PRNGKey(0), photons=args.photons)
    truth_scope = dataset.microscope()
    truth = np.asarray(truth_scope.sample.sample)
    illumination = np.asarray(jinv.illumination_map(truth_scope))
    batch = args.batch_size
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "field.cxi"
        jio.write_cxi(path, dataset.data)
        del dataset, truth_scope
        with jio.CXIFrames(path) as frames:
            for name in ("rpie", "schedule"):
                if args.only not in (None, name):
                    continue
                clock = time.perf_counter()
                current = jinv.init_far_field_from_file(frames)

                def row(stage, solution, name=name, clock=clock):
                    obj = np.asarray(solution.microscope.sample.sample)
                    print(json.dumps({
                        "run": name, "stage": stage, "iterations": solution.iteration,
                        "converged": bool(solution.result == jinv.RESULTS.converged),
                        "error": round(float(jinv.object_error(truth, obj, illumination, max_shift=0)), 4),
                        "error_ramp_removed": round(float(ramp_free_error(truth, obj, illumination)), 4),
                        "wall_s": round(time.perf_counter() - clock, 1),
                        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                    }), flush=True)  # fmt: skip
                    return solution.microscope

                rpie = jinv.RPIE(adapt_alpha=False)
                if name == "rpie":
                    done = 0
                    for epochs in args.epochs:
                        solution = jinv.reconstruct_from_file(current, frames, rpie, epochs=epochs, batch_size=batch)
                        done += epochs
                        current = row(f"RPIE {done} epochs", solution)
                    continue
                mpie = {
                    "whole": jinv.MomentumPIE(mode="batched"),
                    "mpie": jinv.MomentumPIE(mode="batched", momentum=0.3, adapt_alpha=False),
                    "rpie": rpie,
                    "epie": jinv.EPIE(object_step=0.25, probe_step=0.25),
                }[args.after]
                search = jinv.PhaseFieldSearch(order=jinv.phase_field_order(current))
                stages = [(rpie, args.epochs[0]), (search, args.steps), (mpie, args.epochs[1]), (search, args.steps),
                          (mpie, args.epochs[2])]  # fmt: skip
                for engine, count in stages:
                    if isinstance(engine, jinv.AbstractMarquardtSearch):
                        solution = jinv.search_from_file(current, frames, engine, max_steps=count, batch_size=batch)
                    else:
                        whole = engine.sums_over_positions and args.after == "whole"
                        solution = jinv.reconstruct_from_file(
                            current, frames, engine, epochs=count, batch_size=batch, whole_scan=whole
                        )
                    current = row(f"{type(engine).__name__} {count}", solution)
    return 0


if __name__ == "__main__":
    sys.exit(main())
