"""``keras-advmi`` command line: train | evaluate | export | serve | query | analyze.

Each subcommand lives in ``keras_advmi/commands/<name>.py`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Those modules import nothing heavy at module level (TensorFlow and the package's
Keras code load inside ``run``), so ``--help``, ``SUBCOMMAND --help`` and ``--version`` answer without
importing TensorFlow.

Exit codes: 0 done; 2 a usage error (a bad argument, an input file the user named that does not exist,
a value the library rejects); 1 a runtime failure (a server that cannot be reached or answers an error,
a dataset that cannot be read here, any other error during the work); 130 interrupted. Errors are one
line ``keras-advmi: error: ...`` on stderr with no traceback (``--verbose`` prints it first; the exit code
stays).

Without ``--verbose``, TensorFlow is imported before the command runs with its C++ start-up lines
(oneDNN, CUDA drivers, ``cuInit`` on a machine without a GPU) filtered out of stderr and its Python
warnings (tf.function retracing) hidden; ``--verbose`` shows all of them and logs at INFO level.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings

from ._quiet import import_tensorflow_quietly
from ._version import __version__
from .commands import CommandFailed, UsageError  # noqa: F401  (re-exported: keras_advmi.cli.UsageError)

COMMANDS = ("train", "evaluate", "export", "serve", "query", "analyze")

#: Exit codes.
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"keras-advmi: error: {message} (see `{self.prog} --help`)\n")


def build_parser():
    """The ``keras-advmi`` parser; builds without importing TensorFlow."""
    parser = _Parser(prog="keras-advmi", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level and show TensorFlow's own log lines and warnings")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"keras_advmi.commands.{name}").add_parser(sub)
    return parser


_format_warning = warnings.formatwarning


def _cli_format_warning(message, category, filename, lineno, line=None):
    """The package's collapse warnings as one plain line; every other warning as Python shows it."""
    if category.__name__ == "CollapseWarning" and category.__module__.startswith("keras_advmi"):
        return f"keras-advmi: warning: {message}\n"
    return _format_warning(message, category, filename, lineno, line)


def _error(message, code):
    print(f"keras-advmi: error: {message}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    """Run ``keras-advmi`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    try:   # usage errors, --help and --version end here, before TensorFlow loads
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)   # argparse exits with an int status
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    warnings.formatwarning = _cli_format_warning
    try:
        if not args.verbose:
            import_tensorflow_quietly()
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("keras-advmi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.verbose:
            traceback.print_exc()
        if isinstance(exc, (UsageError, ValueError, TypeError, FileNotFoundError)):
            return _error(exc, EXIT_USAGE)
        if isinstance(exc, CommandFailed):
            return _error(exc, EXIT_FAILURE)
        return _error(f"{type(exc).__name__}: {exc}" + ("" if args.verbose else " (--verbose shows the traceback)"),
                      EXIT_FAILURE)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
