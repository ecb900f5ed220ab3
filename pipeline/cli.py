"""The ``clearrec`` command line. Each command lives in ``pipeline/commands/<name>.py`` and is
the same function that tests, Ray jobs and containers call."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from clear_core.errors import ClearrecError

# Order is the order of `clearrec --help`.
COMMAND_MODULES = (
    "pipeline.commands.data",
    "pipeline.commands.extract",
    "pipeline.commands.train",
    "pipeline.commands.analyze",
    "pipeline.commands.sweep",
    "pipeline.commands.evaluate",
    "pipeline.commands.repro",
)

log = logging.getLogger("clearrec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearrec",
        description="Train, tune and compare CLEAR multimodal recommenders.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except ClearrecError as exc:
        print(f"clearrec {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"clearrec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
