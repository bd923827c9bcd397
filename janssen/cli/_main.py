"""Entry point of the `janssen` command."""

import argparse
import sys

from ._reconstruct import add_demo_parser, add_reconstruct_parser
from ._simulate import add_simulate_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janssen", description="Ptychographic reconstruction in JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_simulate_parser(subparsers)
    add_reconstruct_parser(subparsers)
    add_demo_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
