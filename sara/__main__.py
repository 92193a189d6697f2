"""``python -m sara`` runs the ``sara`` command."""

import sys

from sara.cli import main

sys.exit(main())
