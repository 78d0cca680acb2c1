"""`python -m inference ...`: the editing pipeline's command line (see inference/cli.py)."""

from inference.cli import main

raise SystemExit(main())
