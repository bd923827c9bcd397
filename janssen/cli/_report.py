"""`janssen report`: a result file as one self-contained HTML page."""

import argparse
import os
import sys


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
