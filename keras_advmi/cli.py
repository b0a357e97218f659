"""``keras-advmi`` command line: train | evaluate | export | serve | query | analyze.

Each subcommand lives in ``keras_advmi/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Bad arguments print one line ``keras-advmi: error: ...`` and exit 2, with no
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from .commands import UsageError  # noqa: F401  (re-exported: keras_advmi.cli.UsageError)

COMMANDS = ("train", "evaluate", "export", "serve", "query", "analyze")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"keras-advmi: error: {message} (see `{self.prog} --help`)\n")


def build_parser():
    parser = _Parser(prog="keras-advmi", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"keras_advmi.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"keras_advmi.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


_format_warning = warnings.formatwarning


def _cli_format_warning(message, category, filename, lineno, line=None):
    """The package's collapse warnings as one plain line; every other warning as Python shows it."""
    if category.__name__ == "CollapseWarning" and category.__module__.startswith("keras_advmi"):
        return f"keras-advmi: warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.formatwarning = _cli_format_warning
    try:
        return int(args.run(args) or 0)
    except (UsageError, ValueError, TypeError, FileNotFoundError) as exc:
        if args.verbose:
            raise
        print(f"keras-advmi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-advmi: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
