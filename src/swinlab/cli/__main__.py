"""``python -m swinlab.cli``: the ``swinlab`` command."""

import sys

from . import main

sys.exit(main())
