"""`python -m eval ...`: judge, reference, report, curves (see eval/README.md)."""

import sys

from eval.cli import cli

sys.exit(cli())
