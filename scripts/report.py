"""Tables and figures from run folders: `python scripts/report.py RUN_DIRS... [--paper]` (same as `reglab-report`)."""

import sys

from reglab.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
