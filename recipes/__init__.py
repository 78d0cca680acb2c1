"""Training recipes: Hydra configs on verl's ppo_trainer (config/), launchers, and the CPU GRPO path."""
