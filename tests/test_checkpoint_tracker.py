"""recipes/checkpoint_tracker.py: verl's checkpoint tracker follows the step's metrics. The sequence is
verl's v1 trainer's (trainer_base.py: save the checkpoint and write the tracker, call the callback, later
log the step); the files are real. The end-to-end case (verl's trainer, a requeue right after a
checkpoint) is tests/test_cluster_slurm.py's requeue test."""

from __future__ import annotations

from types import SimpleNamespace

from omegaconf import OmegaConf

from recipes.checkpoint_tracker import TrackerAfterMetrics, read_tracker


class Logger:
    def __init__(self):
        self.rows = []

    def log(self, data, step):
        self.rows.append(step)


def trainer_and_callback(folder):
    config = OmegaConf.create({"trainer": {"default_local_dir": str(folder)}})
    return SimpleNamespace(logger=Logger()), TrackerAfterMetrics(config)


def verl_saves(folder, trainer, callback, step):
    """What verl's _save_checkpoint does: the step's folder, the tracker, then the callback."""
    (folder / f"global_step_{step}").mkdir(parents=True)
    (folder / "latest_checkpointed_iteration.txt").write_text(str(step))
    callback.on_save(trainer=trainer, global_step=step, checkpoint_dir=str(folder / f"global_step_{step}"))


def test_the_tracker_names_a_step_only_after_its_metrics_are_logged(tmp_path):
    trainer, callback = trainer_and_callback(tmp_path)
    trainer.logger.log(data={}, step=1)
    verl_saves(tmp_path, trainer, callback, 2)
    assert read_tracker(tmp_path) is None  # killed here: a fresh start, step 1-2 run again, none lost
    trainer.logger.log(data={"x": 1}, step=2)
    assert read_tracker(tmp_path) == 2 and trainer.logger.rows == [1, 2]
    trainer.logger.log(data={}, step=3)
    verl_saves(tmp_path, trainer, callback, 4)
    assert read_tracker(tmp_path) == 2  # killed here: resume from 2, steps 3-4 run and log again
    trainer.logger.log(data={}, step=4)
    assert read_tracker(tmp_path) == 4


def test_a_resumed_run_falls_back_to_the_checkpoint_it_resumed_from(tmp_path):
    (tmp_path / "global_step_6").mkdir()
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("6")
    trainer, callback = trainer_and_callback(tmp_path)
    verl_saves(tmp_path, trainer, callback, 8)
    assert read_tracker(tmp_path) == 6
    trainer.logger.log(data={}, step=8)
    assert read_tracker(tmp_path) == 8


def test_no_fall_back_to_a_deleted_checkpoint(tmp_path):
    """max_actor_ckpt_to_keep may have removed the previous one: then the tracker stays at the new step."""
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("6")  # global_step_6 is gone
    trainer, callback = trainer_and_callback(tmp_path)
    verl_saves(tmp_path, trainer, callback, 8)
    assert read_tracker(tmp_path) == 8


def test_asynchronous_saves_are_left_alone(tmp_path):
    trainer, callback = trainer_and_callback(tmp_path)
    (tmp_path / "global_step_2").mkdir()
    callback.on_save(
        trainer=trainer, global_step=2, checkpoint_dir=str(tmp_path / "global_step_2"), async_save=True
    )
    assert read_tracker(tmp_path) is None and callback.pending is None


def test_verl_builds_it_from_the_recipe():
    """The GRPO recipes name it in trainer.checkpoint_callback_class, and verl's own builder loads it."""
    from verl.trainer.ppo.checkpoint_callback import build_checkpoint_callback

    from recipes.launch import compose

    config = compose("imageedit_r1_tiny")
    assert isinstance(build_checkpoint_callback(config), TrackerAfterMetrics)
