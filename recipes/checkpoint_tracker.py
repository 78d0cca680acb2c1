"""A checkpoint counts for resume only once its step's metrics are logged: no step's metrics are lost.

verl's v1 trainer saves step N's checkpoint, with `latest_checkpointed_iteration.txt` = N, before it logs
step N's metrics (`verl/trainer/ppo/v1/trainer_base.py:485` vs `:514`; validation and the metric
computation run in between). A kill in that window (a Slurm requeue, a lost node, preemption) leaves a
checkpoint that says step N is done and no metrics row for N: the resumed run starts at N + 1 and the
history has a hole (measured: a requeue right after the step-2 checkpoint gave metrics [1, 3, 4]).

This callback, plugged in through verl's own hook (`trainer.checkpoint_callback_class`, called on the
driver right after the tracker is written, `trainer_base.py:1027`), puts the tracker back to the last
step whose metrics were logged and writes N only after `trainer.logger.log(step=N)` returns. A kill in the
window then resumes from the previous checkpoint and runs step N again, metrics and all. It keeps the
tracker at N when the previous checkpoint is gone (`max_actor_ckpt_to_keep`), and leaves asynchronous
saves (which write no tracker here) alone.
"""

from __future__ import annotations

from pathlib import Path

from verl.trainer.ppo.checkpoint_callback import CheckpointCallback
from verl.utils.checkpoint.checkpoint_manager import get_checkpoint_tracker_filename

from inference.fileio import write_text


def write_tracker(folder: Path, step: int | None) -> None:
    """verl's tracker file = step (removed for None), replaced atomically."""
    path = Path(get_checkpoint_tracker_filename(str(folder)))
    if step is None:
        path.unlink(missing_ok=True)
    else:
        write_text(path, str(step))


def read_tracker(folder: Path) -> int | None:
    path = Path(get_checkpoint_tracker_filename(str(folder)))
    text = path.read_text().strip() if path.is_file() else ""
    return int(text) if text else None


class TrackerAfterMetrics(CheckpointCallback):
    """See the module docstring. One instance per trainer (verl builds it in the trainer's __init__)."""

    def __init__(self, config=None):
        super().__init__(config)
        self.folder = Path(str(config.trainer.default_local_dir))
        self.committed = read_tracker(self.folder)  # what a resume would use
        self.pending: int | None = None
        self.wrapped = False

    def on_save(
        self, trainer, global_step: int, checkpoint_dir: str, async_save: bool = False, **kwargs
    ) -> None:
        if async_save:
            return
        previous = self.committed
        if previous is not None and not (self.folder / f"global_step_{previous}").is_dir():
            self.committed = global_step  # the previous checkpoint was deleted: nothing to fall back on
            return
        self._wrap_logger(trainer)
        write_tracker(self.folder, previous)
        self.pending = global_step

    def logged(self, step: int) -> None:
        """Called after the trainer's logger wrote `step`: its checkpoint now counts."""
        if self.pending is not None and step >= self.pending:
            write_tracker(self.folder, self.pending)
            self.committed, self.pending = self.pending, None

    def _wrap_logger(self, trainer) -> None:
        if self.wrapped:
            return
        log = trainer.logger.log

        def log_then_commit(data, step, *args, **kwargs):
            result = log(data, step, *args, **kwargs)
            self.logged(step)
            return result

        trainer.logger.log = log_then_commit
        self.wrapped = True
