"""``python -m butterfly COMMAND ...``: the command line, also where the ``butterfly`` script is not on PATH."""

import sys

from .cli import main

sys.exit(main())
