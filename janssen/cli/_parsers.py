"""The subcommands' parsers, without their code: `janssen --help` and a mistyped flag need no JAX.

Each subcommand's module (`_simulate`, `_reconstruct`, `_demo`, `_report`) is imported by
its `Handler` once the command line has been parsed (importing JAX and janssen takes
seconds; argparse's answers take milliseconds).
"""

import argparse
import importlib
import pathlib

from ._args import (
    CHECKPOINT_EVERY,
    ENGINE_CHOICES,
    LOSSES,
    MAX_ITERATIONS,
    MAX_MODES,
    PROPAGATORS,
    SIMULATE_SIZES,
    path_argument,
)


class Handler:
    """A subcommand's `run_*` function, named by module and function and imported by `load()`."""

    def __init__(self, module: str, function: str):
        self.module = module
        self.function = function

    def load(self):
        """Import the subcommand's module (JAX with it) and return its function of the parsed arguments."""
        return getattr(importlib.import_module(f"janssen.cli.{self.module}"), self.function)


def add_simulate_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `simulate` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a far-field dataset with known ground truth and write it as CXI",
        description=(
            "Simulate far-field ptychography data (janssen.io.simulate_preset) and write it, with its "
            "ground truth, to a CXI 1.6 file, a batch of positions at a time. Sizes: small = 64x64 frames, "
            "100 positions; medium = 128x128, 400; large = 256x256, 1000; xlarge = 512x512, 4000 (4.2 GB of "
            "frames as float32, about 0.5 GB compressed on disk)."
        ),
    )
    parser.add_argument("--size", required=True, choices=SIMULATE_SIZES, help="preset size")
    parser.add_argument("--photons", type=float, default=1e6, help="mean counts per frame (default 1e6; 1 to 1e12)")
    parser.add_argument("--modes", type=int, default=1, help=f"incoherent probe modes (default 1, at most {MAX_MODES})")
    parser.add_argument(
        "--coherence-width",
        type=float,
        default=None,
        metavar="W",
        help=(
            "rms width of the probe's degree of coherence in the sample plane, in metres: the probe modes are "
            "then the --modes strongest coherent modes of a partially coherent (Schell-model) beam "
            "(default: a coherent probe); e.g. 1.8e-7 with --modes 3 gives weights 0.61/0.20/0.20"
        ),
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, type=path_argument, help="the CXI file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file at --out (default: refuse)")
    parser.set_defaults(handler=Handler("_simulate", "run_simulate"))


def add_reconstruct_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `reconstruct` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "reconstruct",
        help="reconstruct object and probe from a CXI file or the Siemens-star .npz.bz2",
        description=(
            "Reconstruct object and probe with a PIE, gradient (adam, sgd) or Gauss-Newton engine. Writes "
            f"RESULT.h5 (checkpointed every {CHECKPOINT_EVERY} iterations; resumable with --resume) and "
            "RESULT_object.png, RESULT_probe.png, RESULT_loss.png, RESULT_residual.png beside it; prints R beside its "
            "Poisson floor. Flags override the config file."
        ),
    )
    parser.add_argument(
        "data", metavar="DATA", type=path_argument, help="a CXI file (.cxi/.h5) or the Siemens-star .npz(.bz2)"
    )
    parser.add_argument("--config", type=path_argument, help="TOML file with the same keys as the flags")
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        help=(
            "engine (default auto: rPIE, ePIE with small steps, then batched mPIE, each until converged, "
            "then the curvature search)"
        ),
    )
    parser.add_argument(
        "--iterations",
        type=int,
        help=f"iterations to run (default 50, at most {MAX_ITERATIONS}; with auto: the most, it stops on convergence)",
    )
    parser.add_argument("--probe", type=path_argument, help="starting probe, a .npy of (y, x) or (modes, y, x)")
    parser.add_argument("--batched", action="store_true", default=None, help="batched instead of sequential PIE")
    parser.add_argument("--loss", choices=LOSSES, help="loss minimised by adam/sgd (default amplitude)")
    parser.add_argument(
        "--learning-rate", dest="learning_rate", type=float, help="adam/sgd learning rate (default 0.02 / 1.0)"
    )
    parser.add_argument(
        "--refine",
        help=(
            "comma-separated parts to refine besides the object, e.g. probe,positions,distance (default probe); "
            "in the far field, distance refines the object pixel wavelength * distance / (N * camera pixel)"
        ),
    )
    parser.add_argument(
        "--modes", type=int, help=f"probe modes of a mixed-state probe (default 1; at most {MAX_MODES} and the frames)"
    )
    parser.add_argument(
        "--near-field", dest="near_field", action="store_true", default=None, help="near-field data (CXI only)"
    )
    parser.add_argument("--distance", type=float, help="near field: sample-to-detector distance, m (default: file's)")
    parser.add_argument(
        "--focus-to-sample", dest="focus_to_sample", type=float, help="near field: focus-to-sample distance, m"
    )
    parser.add_argument("--propagator", choices=PROPAGATORS, help="near field: propagator (default fresnel)")
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        default=None,
        help="after the run, write object_std: the per-pixel standard error of the object from the Gauss-Newton "
        "curvature (64 CG solves; meaningful at a converged solution)",
    )
    parser.add_argument(
        "--noise-std",
        dest="noise_std",
        type=float,
        help="with --uncertainty: amplitude noise in sqrt(counts) (0.5 for Poisson counts; default: from the residual)",
    )
    parser.add_argument(
        "--geometry",
        action="store_true",
        default=None,
        help="far field: first refine the scan positions and the distance (off by up to 7 %% and a few pixels) "
        "with janssen.invert.refine_geometry, then run the engine from there",
    )
    parser.add_argument(
        "--stream",
        action="store_true",
        default=None,
        help="far-field CXI file: leave the frames in the file and read them a batch of positions at a time "
        "(janssen.invert.reconstruct_from_file), for frames larger than memory; runs the default schedule's "
        "stages on the file (or the PIE engine named alone, default 50 epochs), --iterations counting epochs "
        "(passes over the frames) and search steps; with --resume it continues a streamed run's result (only those)",
    )
    parser.add_argument(
        "--stream-batch",
        dest="stream_batch",
        type=int,
        help="with --stream: positions per batch (default 256, resuming: the result's; two batches of frames are "
        "held in memory)",
    )
    parser.add_argument(
        "--out", type=path_argument, help="result file (default: DATA's name + _result.h5, in DATA's folder)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing result file at --out and its figures (default: refuse)",
    )
    parser.add_argument(
        "--resume",
        type=path_argument,
        help="continue from this result file's checkpoint (engine, its state and the refined parts from the file), "
        "on the data file it records; a streamed run's with --stream, any other without",
    )
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.set_defaults(handler=Handler("_reconstruct", "run_reconstruct"))


def add_demo_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `demo` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="simulate a small dataset, reconstruct it and compare with the ground truth",
        description="Simulate the small preset, reconstruct it with rPIE, write the result and figures to DIR.",
    )
    parser.add_argument("--out", type=path_argument, default=pathlib.Path("janssen-demo"), help="output folder")
    parser.add_argument(
        "--iterations", type=int, default=30, help=f"rPIE iterations (default 30, at most {MAX_ITERATIONS})"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier demo's files in the folder")
    parser.set_defaults(handler=Handler("_demo", "run_demo"))


def add_report_parser(subparsers: "argparse._SubParsersAction") -> None:
    """Register the `report` subcommand on the `janssen` parser's subparsers."""
    parser = subparsers.add_parser(
        "report",
        help="write a result file's HTML report (verdict, figures, settings, geometry, versions)",
        description=(
            "Write RESULT.html beside RESULT.h5: one self-contained page (figures inline, no server needed) with the "
            "verdict (R beside its Poisson floor), the loss curve with its noise floor, object and probe with scale "
            "bars, the residuals, the run's settings, the geometry and the software versions. With --data (or the "
            "data file the result records), measured against predicted patterns too, and, when the data file holds "
            "the ground truth (janssen simulate), truth / result / difference and the object error."
        ),
    )
    parser.add_argument(
        "result", metavar="RESULT", type=path_argument, help="a result file of janssen reconstruct (.h5)"
    )
    parser.add_argument("--out", type=path_argument, help="the HTML file to write (default: RESULT with .html)")
    parser.add_argument(
        "--data", type=path_argument, help="the data file the result was refined against (CXI or the Siemens .npz.bz2)"
    )
    parser.set_defaults(handler=Handler("_report", "run_report"))
