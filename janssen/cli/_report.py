"""`janssen report`: a result file as one self-contained HTML page."""

import argparse
import os
import sys

from ._args import path_argument


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
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Write the report; bad input gives one line on stderr and exit 2."""
    try:
        from janssen.plots import ReportError, write_report
    except ImportError as error:  # matplotlib is optional
        print(f"janssen report: error: the report needs matplotlib ({error}); pip install matplotlib", file=sys.stderr)
        return 2
    try:
        _check_paths(args)
        path = write_report(args.result, args.out, args.data)
    except (ReportError, OSError, ValueError) as error:
        print(f"janssen report: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _check_paths(args: argparse.Namespace) -> None:
    """The files named, before anything is read: a report never replaces its result or data file."""
    for flag, path in (("RESULT", args.result), ("--data", args.data)):
        if path is not None and path.is_dir():
            raise ValueError(f"{flag} {str(path)!r} is a folder: expected a file")
    out = args.out if args.out is not None else args.result.with_suffix(".html")
    if not out.parent.is_dir():
        raise ValueError(f"cannot write --out {str(out)!r}: folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a folder: expected the name of an HTML file")
    for label, path in (("result file", args.result), ("data file", args.data)):
        if path is not None and out.exists() and path.exists() and os.path.samefile(out, path):
            raise ValueError(
                f"--out {str(out)!r} is the {label}: a report never replaces its input; choose another --out"
            )
