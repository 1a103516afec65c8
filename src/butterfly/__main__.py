"""``python -m butterfly COMMAND ...``: the command line, also where the ``butterfly`` script is not on PATH."""

import sys

from .cli._main import main

sys.exit(main())
