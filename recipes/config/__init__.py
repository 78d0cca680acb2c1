"""Hydra recipes (YAML). A package only so that `--config-path pkg://recipes.config` finds them from any
working directory, e.g. in a Ray job's uploaded copy of the checkout."""
