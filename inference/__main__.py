"""`python -m inference ...`: the editing pipeline's command line (see inference/cli.py)."""

from inference.cli import cli

raise SystemExit(cli())
