"""Subcommands of ``keras-advmi``; each module has ``add_parser(subparsers)`` and ``run(args)``."""


class UsageError(Exception):
    """A user error: printed as one line by the CLI, exit code 2."""
