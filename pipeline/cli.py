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
    "pipeline.commands.table",
    "pipeline.commands.repro",
)

log = logging.getLogger("clearrec")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clearrec",
        description="Train, tune and compare CLEAR multimodal recommenders.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (anywhere on the line)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    for command in sub.choices.values():
        _plain_help(command)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clearrec")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Docstrings use reStructuredText's double backticks; a terminal shows single ones."""
    if parser.description:
        parser.description = parser.description.replace("``", "`")
    for action in parser._actions:
        if isinstance(action.help, str):
            action.help = action.help.replace("``", "`")
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _plain_help(child)


def main(argv: list[str] | None = None) -> int:
    from pipeline.console import configure_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    # -v means the same before or after the command (argparse takes it before only).
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and bad options; main() returns the status
        # instead, so tests, jobs and containers call every command the same way.
        return exc.code if isinstance(exc.code, int) else 2
    args.verbose = verbose
    configure_logging(verbose)
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
