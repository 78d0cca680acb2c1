"""recipes/validation_samples.py: the W&B table of validation samples (image, request, answer, reward
components). The table of a real run is checked in tests/test_demo.py; here, the registration into
verl's trainer registry and the choice of rows."""

from __future__ import annotations

import io

from PIL import Image

from recipes import validation_samples as vs


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_verls_sync_trainer_name_gives_the_trainer_with_the_table():
    """Importing verl's trainers (as main_ppo's TaskRunner does) puts ours under verl's `sync`."""
    from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls

    trainer = get_trainer_cls("sync")
    assert issubclass(trainer, vs.ValidationSamples) and issubclass(trainer, PPOTrainerSync)
    assert get_trainer_cls("colocate_async").__name__ == "PPOTrainerColocateAsync"  # left as verl's


def test_the_image_is_found_in_verls_raw_prompt_in_both_of_its_forms():
    pil = Image.new("RGB", (8, 8), "red")
    as_pil = [{"role": "user", "content": [{"type": "image", "image": pil}, {"type": "text", "text": "x"}]}]
    as_struct = [{"role": "user", "content": [{"type": "image", "bytes": b"PNG", "path": None}]}]
    assert vs.prompt_image(as_pil) is pil
    assert vs.prompt_image(as_struct) == {"bytes": b"PNG", "path": None}
    assert vs.prompt_image([{"role": "user", "content": "text only"}]) is None


def batch(uids: list[str], ids: list[str]) -> dict:
    return {
        "uid": uids,
        "raw_prompt": [[{"role": "user", "content": [{"type": "image", "bytes": png("blue"), "path": None}]}]]
        * len(uids),
        "extra_info": [{"id": i, "request": f"request of {i}"} for i in ids],
    }


def test_the_same_items_are_logged_at_every_validation_whatever_verls_uids():
    """verl's uids are new at each validation; rows follow the items (extra_info id), chosen by a seed."""
    ids = [f"item{i:02d}" for i in range(20)]
    chosen = []
    for validation in range(2):
        uids = [f"v{validation}-{i}" for i in range(20)]
        order = list(range(20))[::-1] if validation else list(range(20))  # verl's sample order varies too
        items = vs.items_by_uid([batch(uids, ids)])
        rows = vs.sample_rows(
            step=validation * 5,
            uids=[uids[i] for i in order],
            inputs=[f"prompt {i}" for i in order],
            outputs=[f"answer of {ids[i]}" for i in order],
            scores=[i / 20 for i in order],
            components={"format": [1.0] * 20, "action": [i / 20 for i in order]},
            items=items,
            count=4,
        )
        assert len(rows) == 4 and all(r["step"] == validation * 5 for r in rows)
        for row in rows:  # each row's fields belong to its item
            assert (
                row["request"] == f"request of {row['item']}" and row["answer"] == f"answer of {row['item']}"
            )
            assert row["action"] == row["reward"] == ids.index(row["item"]) / 20
            assert row["image"]["bytes"].startswith(b"\x89PNG")
        chosen.append([r["item"] for r in rows])
    assert chosen[0] == chosen[1]


def test_every_sample_of_a_chosen_item_is_a_row_and_the_request_falls_back_to_the_prompt():
    """n > 1 validation samples per item; a dataset without extra_info keys items by uid."""
    items = {"u1": {"image": None, "extra_info": {}}}
    rows = vs.sample_rows(3, ["u1", "u1"], ["the prompt"] * 2, ["a", "b"], [0.5, 1.0], {}, items, count=8)
    assert [(r["item"], r["answer"], r["request"]) for r in rows] == [
        ("u1", "a", "the prompt"),
        ("u1", "b", "the prompt"),
    ]


def test_an_image_that_does_not_open_gives_an_empty_cell_not_an_error(caplog):
    assert vs.wandb_image(None) is None
    assert vs.wandb_image({"bytes": b"not a png", "path": None}) is None
    assert "no image" in caplog.text
    assert vs.wandb_image({"bytes": png("green"), "path": None}) is not None
