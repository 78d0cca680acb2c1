"""Reward functions for verl / EasyR1 GRPO (loadable by file path)."""
