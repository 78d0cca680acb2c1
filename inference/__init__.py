"""ImageEdit-R1 inference: the shared edit protocol, prompts, tiny offline models, and the
three-agent pipeline (decompose -> sequence -> edit). Importing this package is cheap (no torch)."""
