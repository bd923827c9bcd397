"""`janssen demo`: simulate a small dataset, reconstruct it and compare with the ground truth."""

import argparse
import pathlib
from typing import Any

import jax.random as jr

import janssen.invert as jinv
import janssen.io as jio

from ._args import MAX_ITERATIONS
from ._errors import UsageError
from ._output import check_output, figures, output_lock
from ._run import run_engine, save_verdict, verdict_of
from ._settings import ITERATIONS_WHY, check_count
from ._signals import command, kept_text, received, signal_exit, signal_name
from ._summary import stopped, summary


def run_demo(args: argparse.Namespace) -> int:
    """Simulate the small preset, reconstruct with rPIE and report errors against the truth."""
    out_dir: pathlib.Path = args.out
    out = out_dir / "demo.h5"

    def body(kept: dict[str, Any]) -> int:
        check_count("iterations", args.iterations, 0, MAX_ITERATIONS, ITERATIONS_WHY)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {str(out_dir)!r} is a file: expected a folder for the demo's files")
        parent = out_dir
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UsageError(f"--out {str(out_dir)!r} lies under the file {str(parent)!r}: expected a folder")
        if out_dir.is_dir():
            check_output(out, {}, overwrite=args.overwrite)
        out_dir.mkdir(parents=True, exist_ok=True)
        with output_lock(out):
            return _demo(args, out, kept)

    return command("demo", body)


def _demo(args: argparse.Namespace, out: pathlib.Path, kept: dict[str, Any]) -> int:
    truth = jio.simulate_preset("small", key=jr.PRNGKey(0))
    data = truth.data
    start = jinv.init_far_field_microscope(data)
    solution, seconds, engine = run_engine(start, data, jinv.RPIE(), args.iterations, 0, out, kept)
    if solution.result == jinv.RESULTS.interrupted or received:
        print(summary(solution, seconds, out, [], None))
        print(f"interrupted ({signal_name()}): {kept_text(kept)}")
        return signal_exit()
    verdict = verdict_of(solution, data)
    if verdict is not None:
        save_verdict(solution, data, engine, out, None, verdict)
    written = figures(solution, out, verdict, data, truth)
    illumination = jinv.illumination_map(truth.microscope())
    error = jinv.object_error(truth.object, solution.microscope.sample.sample, illumination)
    residual = jinv.data_residual(solution.microscope, data)
    floor = jinv.data_residual(truth.microscope(), data)
    print(summary(solution, seconds, out, written, verdict))
    print(f"object error vs ground truth: {error:.4f} (a unit object scores about 0.5)")
    print(f"data residual: {residual:.4f} sqrt(counts); noise floor (ground truth): {floor:.4f}")
    return stopped("demo", solution, out)
