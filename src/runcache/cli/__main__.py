"""`python -m runcache.cli`: the `runcache` command."""

import sys

from runcache.cli import main

sys.exit(main())
