"""Dataset readers, ground-truth annotation, the synthetic verifiable set, and verl/EasyR1 writers."""
