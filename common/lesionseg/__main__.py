"""``python -m lesionseg`` is the ``lesionseg`` command."""

import sys

from lesionseg.cli import main

sys.exit(main())
