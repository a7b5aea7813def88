"""The ``lesionseg`` command line.

Each subcommand lives in its own module of this package and exposes two functions:
``add_parser(subparsers)`` registers it (with a help text) and ``run(args) -> int`` carries it out and
returns the exit code. Register a new module in :data:`SUBCOMMANDS`.

:func:`main` turns an ``OSError`` that a subcommand lets through (disk full, read-only or forbidden output
folder, an unreadable file) into one line naming the file and the problem, exit code 1; ``-v`` logs the
traceback as well.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lesionseg import __version__
from lesionseg.utils.files import describe_os_error

#: subcommand modules, in the order ``--help`` lists them
SUBCOMMANDS = (
    "demo",
    "phantoms",
    "download",
    "check_data",
    "split",
    "predict",
    "crossval",
    "export_bundle",
    "record_weights",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lesionseg",
        description="Ultrasound lesion segmentation with DC-Net and TaiChiNet (MONAI bundles).",
    )
    parser.add_argument("--version", action="version", version=f"lesionseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"lesionseg.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        logging.getLogger(__name__).debug("%s failed", args.command, exc_info=True)
        print(f"lesionseg {args.command}: {describe_os_error(error)}", file=sys.stderr)
        return 1
