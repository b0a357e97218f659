"""Subcommands of ``keras-advmi``; each module has ``add_parser(subparsers)`` and ``run(args)``."""
