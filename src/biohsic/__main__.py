"""``python -m biohsic``: the ``biohsic`` command."""
import sys

from .cli import main

sys.exit(main())
