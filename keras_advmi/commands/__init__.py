"""Subcommands of ``keras-advmi``; each module has ``add_parser(subparsers)`` and ``run(args)``.

The modules import only the standard library and each other at module level: ``keras-advmi --help``
builds every parser without TensorFlow. What ``run`` needs (TensorFlow, Keras, the package's models)
is imported inside it.
"""


class UsageError(Exception):
    """A user error (a bad argument, a missing input file): printed as one line by the CLI, exit code 2."""


class CommandFailed(Exception):
    """The work failed (a server unreachable or answering an error, a dataset that cannot be read here):
    printed as one line by the CLI, exit code 1."""
