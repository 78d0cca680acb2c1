"""The verifiable synthetic items: compound edit requests over random scenes, with exact answers.

A request combines 1-4 edits from a fixed action taxonomy phrased in varied natural language; each
item carries the exact ground-truth decomposition, the canonical ordered sub-requests and the
target scene, which `inference.scenes.apply_instruction` reproduces from the sub-requests. Every item
depends only on (seed, index), so any slice can be regenerated, sharded or resumed. data_prep writes
them as training sets (`python -m data_prep.synthetic`); `write_synthetic_eval_set` writes a records
folder of them (the app's built-in examples, the benches and the tests).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from PIL import Image

from inference.fileio import save_png
from inference.protocol import Decomposition, EditPlan, render_decomposition
from inference.records import IMAGES_DIR, Record, write_records
from inference.scenes import (
    ACTIONS,
    BACKGROUND_SUBJECT,
    BACKGROUNDS,
    COLOURS,
    GOAL_BLURRED,
    GOAL_BRIGHTER,
    GOAL_DARKER,
    GOAL_LARGER,
    GOAL_REMOVED,
    GOAL_SMALLER,
    IMAGE_SUBJECT,
    OBJECT_ACTIONS,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    apply_instruction,
    article,
    canonical_sub_request,
    render_scene,
)

#: The `source` of every synthetic record.
SOURCE = "synthetic"

# ---------------------------------------------------------------------------------------------
# Natural phrasings of each edit (several per action, also indirect ones)

_PHRASES: dict[str, tuple[str, ...]] = {
    "recolor": (
        "make the {obj} {goal}",
        "change the color of the {obj} to {goal}",
        "recolor the {obj} to {goal}",
        "paint the {obj} {goal}",
        "turn the {obj} {goal}",
        "~the {obj} should be {goal}",
        "~I want the {obj} in {goal}",
    ),
    "remove": (
        "remove the {obj}",
        "delete the {obj}",
        "get rid of the {obj}",
        "erase the {obj}",
        "take out the {obj}",
        "~I don't want the {obj} in the picture",
    ),
    "replace": (
        "replace the {obj} with {a_goal}",
        "turn the {obj} into {a_goal}",
        "swap the {obj} for {a_goal}",
        "change the shape of the {obj} to {a_goal}",
        "~the {obj} should be {a_goal} instead",
    ),
    "resize_larger": (
        "make the {obj} bigger",
        "enlarge the {obj}",
        "scale up the {obj}",
        "increase the size of the {obj}",
        "~the {obj} is too small",
    ),
    "resize_smaller": (
        "make the {obj} smaller",
        "shrink the {obj}",
        "scale down the {obj}",
        "reduce the size of the {obj}",
        "~the {obj} is too big",
    ),
    "move": (
        "move the {obj} to the {goal}",
        "shift the {obj} to the {goal}",
        "put the {obj} at the {goal}",
        "drag the {obj} over to the {goal}",
        "~the {obj} belongs at the {goal}",
    ),
    "add": (
        "add {a_new} at the {goal}",
        "put {a_new} at the {goal}",
        "draw {a_new} at the {goal}",
        "place {a_new} at the {goal}",
        "~there should be {a_new} at the {goal}",
    ),
    "brighten": (
        "brighten the image",
        "make the picture brighter",
        "increase the brightness",
        "lighten the photo",
        "~it is too dark",
    ),
    "darken": (
        "darken the image",
        "make the picture darker",
        "lower the brightness",
        "dim the photo",
        "~it is too bright",
    ),
    "blur background": (
        "blur the background",
        "make the background blurry",
        "soften the background",
        "put the background out of focus",
        "defocus the background",
    ),
}
_CONNECTORS = (", ", " and ", ", then ", ". Also ", "; ", " and then ")
_OPENERS = ("", "", "", "please ", "can you ", "could you ")
_COLOUR_ONLY = ("{c} one", "{c} shape", "{c} object", "{c} thing")


@dataclass(frozen=True)
class Edit:
    """One edit of a request: its action, the ground-truth subject and goal, and the new object."""

    action: str
    subject: str
    goal: str
    size: str = "medium"

    @property
    def sub_request(self) -> str:
        return canonical_sub_request(self.action, self.subject, self.goal, self.size)


@dataclass(frozen=True)
class SyntheticItem:
    """One verifiable example. Images render lazily (and once) on first access."""

    id: str
    scene: Scene
    request: str
    decomposition: Decomposition
    plan: EditPlan
    target_scene: Scene
    edits: tuple[Edit, ...] = field(default=(), repr=False)
    image_size: int = 64

    @cached_property
    def image(self) -> Image.Image:
        return render_scene(self.scene, self.image_size)

    @cached_property
    def target_image(self) -> Image.Image:
        return render_scene(self.target_scene, self.image_size)

    @property
    def answer(self) -> str:
        """The decomposition agent's exact target answer (SFT cold start)."""
        return render_decomposition(self.decomposition)


def _phrase(rng: random.Random, edit: Edit, scene: Scene) -> str:
    if edit.action in OBJECT_ACTIONS:
        colour = edit.subject.split(" ", 1)[0]
        obj = rng.choice(_COLOUR_ONLY).format(c=colour) if rng.random() < 0.25 else edit.subject
    else:
        obj = edit.subject
    key = edit.action
    if key == "resize":
        key = f"resize_{edit.goal}"
    template = rng.choice(_PHRASES[key])
    size_word = "" if edit.size == "medium" else f"{edit.size} "
    new = f"{size_word}{edit.subject}"
    return template.format(
        obj=obj,
        goal=edit.goal,
        a_goal=f"{article(edit.goal)} {edit.goal}",
        a_new=f"{article(new)} {new}",
    )


def _join(rng: random.Random, clauses: list[str]) -> str:
    """One request from clauses; a leading "~" marks a statement (no "please"/"can you" before it)."""
    first = clauses[0]
    opener = "" if first.startswith("~") else rng.choice(_OPENERS)
    text = opener + first.lstrip("~")
    question = opener.startswith(("can", "could"))
    connectors = [c for c in _CONNECTORS if not (question and c.startswith("."))]
    for clause in clauses[1:]:
        text += rng.choice(connectors) + clause.lstrip("~")
    text = re.sub(r"(^|[.] )([a-z])", lambda m: m[1] + m[2].upper(), text)
    return text + ("?" if question else ".")


def random_scene(rng: random.Random, min_objects: int = 1, max_objects: int = 3) -> Scene:
    n = rng.randint(min_objects, max_objects)
    colours = rng.sample(list(COLOURS), n)
    cells = rng.sample(list(POSITIONS), n)
    objects = tuple(
        SceneObject(rng.choice(SHAPES), c, rng.choice(SIZES), p) for c, p in zip(colours, cells, strict=True)
    )
    return Scene(background=rng.choice(list(BACKGROUNDS)), objects=objects)


def _sample_edits(rng: random.Random, scene: Scene, n_edits: int) -> list[Edit]:
    """Pick edits that commute: each object edited at most once, colours and cells never reused."""
    free_objects = list(scene.objects)
    used_colours = {o.colour for o in scene.objects}
    used_cells = {o.position for o in scene.objects}
    used_globals: set[str] = set()
    edits: list[Edit] = []
    for _ in range(n_edits):
        options = []
        if free_objects:
            options += ["recolor", "remove", "replace", "resize", "move"]
        if len(used_colours) < len(COLOURS) and len(used_cells) < len(POSITIONS):
            options.append("add")
        if not used_globals & {"brighten", "darken"}:
            options += ["brighten", "darken"]
        if "blur background" not in used_globals:
            options.append("blur background")
        if not options:
            break
        action = rng.choice(options)
        if action in OBJECT_ACTIONS:
            obj = free_objects.pop(rng.randrange(len(free_objects)))
            if action == "recolor":
                goal = rng.choice([c for c in COLOURS if c not in used_colours])
                used_colours.add(goal)
            elif action == "remove":
                goal = GOAL_REMOVED
            elif action == "replace":
                goal = rng.choice([s for s in SHAPES if s != obj.shape])
            elif action == "resize":
                choices = [
                    g
                    for g, ok in ((GOAL_LARGER, obj.size != "large"), (GOAL_SMALLER, obj.size != "small"))
                    if ok
                ]
                goal = rng.choice(choices)
            else:
                goal = rng.choice([p for p in POSITIONS if p not in used_cells])
                used_cells.add(goal)
            edits.append(Edit(action, obj.name, goal))
        elif action == "add":
            colour = rng.choice([c for c in COLOURS if c not in used_colours])
            cell = rng.choice([p for p in POSITIONS if p not in used_cells])
            used_colours.add(colour)
            used_cells.add(cell)
            size = rng.choice(("small", "medium", "medium", "large"))
            edits.append(Edit("add", f"{colour} {rng.choice(SHAPES)}", cell, size))
        else:
            used_globals.add(action)
            subject = BACKGROUND_SUBJECT if action == "blur background" else IMAGE_SUBJECT
            goal = {"brighten": GOAL_BRIGHTER, "darken": GOAL_DARKER, "blur background": GOAL_BLURRED}[action]
            edits.append(Edit(action, subject, goal))
    return edits


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def decomposition_of(edits: Iterable[Edit]) -> Decomposition:
    """The decomposition of these edits, in request order (the exact answer when they are all of them)."""
    edits = list(edits)
    n = len(edits)
    return Decomposition(
        actions=_unique(e.action for e in edits),
        subjects=_unique(e.subject for e in edits),
        goals=_unique(e.goal for e in edits),
        think=f"{n} edit{'s' if n > 1 else ''}",
    )


def make_item(
    seed: int, index: int, min_edits: int = 1, max_edits: int = 4, image_size: int = 64
) -> SyntheticItem:
    """Item `index` of the set with `seed`; depends on nothing else (sharding and resume are free)."""
    rng = random.Random(f"imageedit-synthetic/{seed}/{index}")
    scene = random_scene(rng)
    edits = _sample_edits(rng, scene, rng.randint(min_edits, max_edits))
    request = _join(rng, [_phrase(rng, e, scene) for e in edits])
    decomposition = decomposition_of(edits)
    ordered = sorted(edits, key=lambda e: ACTIONS.index(e.action))
    plan = EditPlan(sub_requests=tuple(e.sub_request for e in ordered))
    target = scene
    for sub in plan.sub_requests:
        target = apply_instruction(target, sub)
    return SyntheticItem(
        id=f"synthetic-{seed}-{index:07d}",
        scene=scene,
        request=request,
        decomposition=decomposition,
        plan=plan,
        target_scene=target,
        edits=tuple(edits),
        image_size=image_size,
    )


def generate_items(
    n: int, seed: int = 0, min_edits: int = 1, max_edits: int = 4, start: int = 0, image_size: int = 64
) -> Iterator[SyntheticItem]:
    """Items `start .. start+n-1` of the deterministic set `seed` (images render lazily)."""
    if not 1 <= min_edits <= max_edits:
        raise ValueError(f"need 1 <= min_edits <= max_edits, got {min_edits}, {max_edits}")
    for index in range(start, start + n):
        yield make_item(seed, index, min_edits, max_edits, image_size)


def eval_record(item: SyntheticItem, folder: str | os.PathLike) -> Record:
    """Save the item's input and exact target under `folder/images/` and return its Record."""
    images = Path(folder) / IMAGES_DIR
    source = save_png(item.image, images / f"{item.id}.png")
    target = save_png(item.target_image, images / f"{item.id}.target.png")
    return Record(
        id=item.id,
        source=SOURCE,
        instruction=item.request,
        image=source.resolve(),
        references=(target.resolve(),),
        decomposition=item.decomposition,
        plan=item.plan,
    )


def write_synthetic_eval_set(folder: str | Path, n: int, seed: int = 0, max_edits: int = 2) -> Path:
    """A records folder of `n` synthetic items (images with their scenes, exact targets, ground truth)."""
    folder = Path(folder)
    write_records(
        folder, [eval_record(item, folder) for item in generate_items(n, seed=seed, max_edits=max_edits)]
    )
    return folder
