"""`python -m blindspots` is the same as the `blindspots` command."""

import sys

from .cli import main

sys.exit(main())
