"""``python -m keras_advmi``: the ``keras-advmi`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
