"""`python -m xmodal ...` runs the `xmodal` command."""

import sys

from xmodal.cli import main

sys.exit(main())
