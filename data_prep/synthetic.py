"""`python -m data_prep.synthetic`: the built-in verifiable synthetic set written as a dataset.

The items (procedural scenes, compound edit requests, exact targets) are `inference.synthetic_items`;
this writes them for training and evaluation:

    python -m data_prep.synthetic --out outputs/data/synthetic --train 2000 --val 256 --seed 0

writes train/val RL parquet, SFT and EasyR1 parquet, the val items as an eval folder `eval/`,
`corpus.txt` and `manifest.json` (see data_prep/README.md).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from data_prep.writers import TrainingExample
from inference.fileio import png_bytes
from inference.protocol import Decomposition, render_decomposition, render_plan
from inference.synthetic_items import SOURCE, SyntheticItem, decomposition_of, eval_record, generate_items

#: Sub-folder of a written dataset holding the held-out items as a records folder.
EVAL_DIR = "eval"


def iter_corpus(items: Iterable[SyntheticItem], with_prompts: bool = True) -> Iterator[str]:
    """Texts for training the tiny tokenizer, streamed: requests, prompts, answers, plans and
    single-turn instructions."""
    from inference.prompts import decomposition_prompt
    from inference.protocol import single_turn_instruction

    for item in items:
        yield item.request
        if with_prompts:
            yield decomposition_prompt(item.request)
        yield render_decomposition(item.decomposition)
        yield render_plan(item.plan)
        yield single_turn_instruction(item.plan)


def corpus(items: Iterable[SyntheticItem], with_prompts: bool = True) -> list[str]:
    """`iter_corpus` as a list (what `inference.tiny.build_tiny_vlm(corpus=...)` takes)."""
    return list(iter_corpus(items, with_prompts))


# ---------------------------------------------------------------------------------------------
# Writing a dataset folder (CLI)


def teacher_answer(item: SyntheticItem, drop_rate: float) -> Decomposition:
    """A simulated annotator that stops early, as weak annotators and untrained models do on compound
    requests: for a request of two or more edits it annotates, with probability `drop_rate` (drawn per
    item from its id, so reproducible), only the edits before the last one. Everything it does write is
    correct; single-edit requests are always annotated exactly."""
    import random

    edits = list(item.edits)
    if len(edits) >= 2 and random.Random(f"teacher/{item.id}").random() < drop_rate:
        return decomposition_of(edits[:-1])
    return item.decomposition


def training_example(item: SyntheticItem, teacher_drop: float = 0.0) -> TrainingExample:
    """The writers' row source for one item (image encoded as PNG). With `teacher_drop` > 0 the SFT
    row teaches `teacher_answer(item, teacher_drop)`; the RL rows keep the exact ground truth."""
    answer = teacher_answer(item, teacher_drop) if teacher_drop > 0 else None
    return TrainingExample(
        id=item.id,
        source=SOURCE,
        instruction=item.request,
        image_png=png_bytes(item.image),
        decomposition=item.decomposition,
        plan=item.plan,
        sft_answer=answer if answer is not None and answer != item.decomposition else None,
    )


def write_dataset(
    out_dir: str | os.PathLike,
    train: int = 2000,
    val: int = 256,
    seed: int = 0,
    min_edits: int = 1,
    max_edits: int = 4,
    image_size: int = 64,
    progress: bool = True,
    teacher_drop: float = 0.0,
) -> dict:
    """Write the synthetic set: RL/SFT/EasyR1 parquet for train and val, the val items as an eval
    records folder `eval/` (`records.jsonl` + `images/`, inputs and exact targets), `corpus.txt`
    and `manifest.json`. Streamed and atomic. `teacher_drop` > 0: the training SFT rows teach
    `teacher_answer` (an annotator that stops early) instead of the exact answer."""
    from tqdm import tqdm

    from data_prep.writers import write_training_sets
    from inference.fileio import atomic_open, write_json
    from inference.records import write_records

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(seed=seed, min_edits=min_edits, max_edits=max_edits, image_size=image_size)
    bar = lambda it, n, desc: tqdm(it, total=n, desc=desc, disable=not progress, mininterval=1)  # noqa: E731
    counts = {}
    train_items = bar(generate_items(train, **kw), train, "synthetic train")
    counts |= write_training_sets(out, (training_example(i, teacher_drop) for i in train_items), "train")
    val_items = bar(generate_items(val, start=train, **kw), val, "synthetic val")
    counts |= write_training_sets(out, (training_example(i) for i in val_items), "val")
    eval_items = bar(generate_items(val, start=train, **kw), val, "synthetic eval")
    eval_dir = out / EVAL_DIR
    write_records(eval_dir, (eval_record(i, eval_dir) for i in eval_items))
    counts[f"{EVAL_DIR}/records.jsonl"] = val
    with atomic_open(out / "corpus.txt") as fh:
        for line in iter_corpus(generate_items(train, **kw)):
            fh.write(line + "\n")
    manifest = {
        "source": SOURCE,
        "train": train,
        "val": val,
        **kw,
        "teacher_drop": teacher_drop,
        "files": counts,
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-edits", type=int, default=1)
    parser.add_argument("--max-edits", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--teacher-drop",
        type=float,
        default=0.0,
        help="training SFT rows from an annotator that omits the last edit of this share of compound requests",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from data_prep.writers import verl_image_support_problem

    if problem := verl_image_support_problem():
        print(f"WARNING: {problem}", file=sys.stderr)
    manifest = write_dataset(
        args.out,
        train=args.train,
        val=args.val,
        seed=args.seed,
        min_edits=args.min_edits,
        max_edits=args.max_edits,
        image_size=args.image_size,
        progress=not args.no_progress,
        teacher_drop=args.teacher_drop,
    )
    print(json.dumps(manifest["files"], indent=2))


if __name__ == "__main__":
    main()
