"""verl's multi-turn SFT dataset, each row prepared once: the CPU SFT step's time goes to data, not model.

`MultiTurnSFTDataset.__getitem__` renders the chat template and runs the image processor for every
message, then once more for its sanity check of the whole conversation, each time a row is drawn
(`verl/utils/dataset/multiturn_sft_dataset.py:291-325`). With a tiny model on a CPU that is most of an
SFT step (measured on 2 cores: ~1 s of preprocessing per 32-row batch, against ~0.2 s of forward and
backward), and it is repeated every epoch for the same rows. This subclass keeps each prepared row, so
epochs after the first cost only the model. Selected by the tiny SFT recipe through verl's own hook:

    data.custom_cls.path=recipes/verl_cpu/sft_dataset.py data.custom_cls.name=CachedMultiTurnSFTDataset

Rows are deterministic (no augmentation), so a cached row is the row verl would have built. The cache
holds every prepared row in memory: meant for small CPU runs, not for a GPU job's millions of images.
"""

from __future__ import annotations

from typing import Any

from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset


class CachedMultiTurnSFTDataset(MultiTurnSFTDataset):
    """`MultiTurnSFTDataset` whose rows are prepared on first access and reused after."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepared: dict[int, dict[str, Any]] = {}

    def __getitem__(self, item: int) -> dict[str, Any]:
        index = int(item)
        row = self._prepared.get(index)
        if row is None:
            row = self._prepared[index] = super().__getitem__(index)
        return dict(row)  # a new dict each time: the collate function may add or pop keys
