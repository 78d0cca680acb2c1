"""The built-in verifiable synthetic set: procedural scenes, compound edit requests, exact targets.

A scene is a few flat shapes (distinct colours, so a colour names an object) on a 3x3 grid over a
faintly checkered background (the checker makes "blur the background" visible). A request
combines 1-4 edits from a fixed action taxonomy phrased in varied natural language; each item
carries the exact ground-truth decomposition, the canonical ordered sub-requests and the target
scene, which `apply_instruction` reproduces from the sub-requests (the deterministic "tool editor").

Every item depends only on (seed, index), so any slice can be regenerated, sharded or resumed.

    python -m data_prep.synthetic --out outputs/data/synthetic --train 2000 --val 256 --seed 0

writes train/val RL parquet, SFT and EasyR1 parquet, the val items as an eval folder `eval/`,
`corpus.txt` and `manifest.json` (see data_prep/README.md).
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from inference.fileio import save_png
from inference.protocol import Decomposition, EditPlan, render_decomposition, render_plan

#: Key of the scene JSON in `image.info` and in the PNG text chunks.
SCENE_INFO_KEY = "imageedit_scene"
SOURCE = "synthetic"
#: Sub-folder of a written dataset holding the held-out items as a records folder.
EVAL_DIR = "eval"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (20, 20, 20),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 235),
    "gray": (150, 150, 150),
    "beige": (225, 210, 170),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: tuple[str, ...] = ("small", "medium", "large")
#: Radius of each size as a fraction of a grid cell.
SIZE_RADIUS = {"small": 0.22, "medium": 0.32, "large": 0.45}
#: Grid cells by (column, row), named as a request names them.
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
BRIGHTNESS_STEP = 1.2
BLUR_RADIUS = 1.5
CHECKER_PX = 4

# Subjects and goals of the global edits (the ground truth names them like this).
IMAGE_SUBJECT, BACKGROUND_SUBJECT = "image", "background"
GOAL_REMOVED, GOAL_BRIGHTER, GOAL_DARKER, GOAL_BLURRED = "removed", "brighter", "darker", "blurred"
GOAL_LARGER, GOAL_SMALLER = "larger", "smaller"

#: Actions of the taxonomy (names from `inference.protocol.ACTION_VOCABULARY`), and the order in
#: which the canonical plan executes them: structure first, then appearance, global edits last.
ACTIONS: tuple[str, ...] = (
    "remove",
    "replace",
    "recolor",
    "resize",
    "move",
    "add",
    "brighten",
    "darken",
    "blur background",
)
_OBJECT_ACTIONS = ("remove", "replace", "recolor", "resize", "move")


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str

    @property
    def name(self) -> str:
        """How the ground truth and the canonical sub-requests name it: `red circle`."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """Everything needed to render an image exactly; objects have distinct colours and cells."""

    background: str = "white"
    objects: tuple[SceneObject, ...] = ()
    brightness: int = 0
    background_blurred: bool = False

    def __post_init__(self) -> None:
        # Objects never overlap, so draw order is irrelevant: keep them in grid order, which
        # makes equal images equal scenes whatever order the edits ran in.
        order = list(POSITIONS)
        key = lambda o: order.index(o.position) if o.position in POSITIONS else len(order)  # noqa: E731
        object.__setattr__(self, "objects", tuple(sorted(self.objects, key=key)))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Scene:
        """Parse `to_json` output; raise ValueError naming the problem."""
        try:
            obj = json.loads(text)
            objects = tuple(SceneObject(**o) for o in obj.pop("objects"))
            scene = cls(objects=objects, **obj)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a scene JSON ({exc}): {str(text)[:200]!r}") from None
        scene.validate()
        return scene

    def validate(self) -> None:
        """Raise ValueError if a name is unknown or two objects share a colour or a cell."""
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        for o in self.objects:
            if o.shape not in SHAPES or o.colour not in COLOURS or o.size not in SIZES:
                raise ValueError(f"unknown shape, colour or size in {o}")
            if o.position not in POSITIONS:
                raise ValueError(f"unknown position {o.position!r}")
        if len({o.colour for o in self.objects}) != len(self.objects):
            raise ValueError(f"two objects share a colour: {[o.name for o in self.objects]}")
        if len({o.position for o in self.objects}) != len(self.objects):
            raise ValueError(f"two objects share a position: {[o.position for o in self.objects]}")

    def object_by_colour(self, colour: str) -> SceneObject | None:
        return next((o for o in self.objects if o.colour == colour), None)


# ---------------------------------------------------------------------------------------------
# Rendering and PNG round trip


def _background(scene: Scene, size: int) -> Image.Image:
    r, g, b = BACKGROUNDS[scene.background]
    cells = max(1, size // CHECKER_PX)
    light, dark = (min(255, r + 18), min(255, g + 18), min(255, b + 18)), (r - 18, g - 18, b - 18)
    small = Image.new("RGB", (cells, cells))
    small.putdata([light if (x + y) % 2 == 0 else dark for y in range(cells) for x in range(cells)])
    image = small.resize((size, size), Image.Resampling.NEAREST)
    if scene.background_blurred:
        image = image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS * size / 64))
    return image


def _draw_object(draw: ImageDraw.ImageDraw, o: SceneObject, size: int) -> None:
    cell = size / 3
    col, row = POSITIONS[o.position]
    cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
    r = SIZE_RADIUS[o.size] * cell
    fill = COLOURS[o.colour]
    if o.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif o.shape == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=fill)
    elif o.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    else:  # diamond
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)


def render_scene(scene: Scene, size: int = 64) -> Image.Image:
    """The exact RGB image of a scene; `image.info[SCENE_INFO_KEY]` carries the scene JSON."""
    image = _background(scene, size)
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        _draw_object(draw, o, size)
    if scene.brightness:
        factor = BRIGHTNESS_STEP**scene.brightness
        image = image.point(lambda v: min(255, round(v * factor)))
    image.info[SCENE_INFO_KEY] = scene.to_json()
    return image


def scene_of(image: Image.Image) -> Scene | None:
    """The scene an image was rendered from (also after `save_png` + `Image.open`), else None."""
    text = image.info.get(SCENE_INFO_KEY)
    if text is None and hasattr(image, "text"):
        text = image.text.get(SCENE_INFO_KEY)  # PNG text chunks after a lazy open
    if not isinstance(text, str):
        return None
    try:
        return Scene.from_json(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Canonical sub-requests: one template per action, parsed back by `apply_instruction`


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def canonical_sub_request(action: str, subject: str = "", goal: str = "", size: str = "medium") -> str:
    """The one canonical text of an edit (what the plans hold and `apply_instruction` executes)."""
    if action == "recolor":
        return f"Recolor the {subject} to {goal}"
    if action == "remove":
        return f"Remove the {subject}"
    if action == "replace":
        return f"Replace the {subject} with {_article(goal)} {goal}"
    if action == "resize":
        return f"Make the {subject} {goal}"
    if action == "move":
        return f"Move the {subject} to the {goal}"
    if action == "add":
        size_word = "" if size == "medium" else f"{size} "
        return f"Add {_article(size_word or subject)} {size_word}{subject} at the {goal}"
    if action == "brighten":
        return "Brighten the image"
    if action == "darken":
        return "Darken the image"
    if action == "blur background":
        return "Blur the background"
    raise ValueError(f"unknown action {action!r}")


_COLOUR_RE = "|".join(COLOURS)
_SHAPE_RE = "|".join(SHAPES)
_POS_RE = "|".join(sorted(POSITIONS, key=len, reverse=True))
_REF = rf"(?P<colour>{_COLOUR_RE})(?: (?P<shape>{_SHAPE_RE}|one|object|shape))?"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (action, re.compile(pattern))
    for action, pattern in (
        ("recolor", rf"(?:recolou?r|paint|color|colour) the {_REF} (?:to |in )?(?P<goal>{_COLOUR_RE})"),
        ("remove", rf"(?:remove|delete|erase) the {_REF}"),
        ("replace", rf"replace the {_REF} with an? (?P<goal>{_SHAPE_RE})"),
        ("resize", rf"make the {_REF} (?P<goal>larger|smaller|bigger)"),
        ("move", rf"move the {_REF} to the (?P<goal>{_POS_RE})"),
        (
            "add",
            rf"add an? (?:(?P<size>{'|'.join(SIZES)}) )?(?P<colour>{_COLOUR_RE}) (?P<shape>{_SHAPE_RE})"
            rf" (?:at|to|in) the (?P<goal>{_POS_RE})(?: corner)?",
        ),
        ("brighten", r"brighten the (?:image|picture|photo)"),
        ("darken", r"darken the (?:image|picture|photo)"),
        ("blur background", r"blur the background"),
    )
)
_STEP_NUMBER = re.compile(r"(?:^|\s)\d+[.)]\s+")


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("grey", "gray").split()).strip(" .!")


def split_steps(text: str) -> list[str]:
    """Sub-requests of a single-turn instruction (`1. A. 2. B.`) or the one request it is."""
    parts = [p.strip() for p in _STEP_NUMBER.split(text)]
    return [p for p in parts if p.strip(" .")]


def _resolve(scene: Scene, match: re.Match[str], text: str) -> SceneObject:
    obj = scene.object_by_colour(match["colour"])
    if obj is None:
        raise ValueError(f"no {match['colour']} object in the scene for {text!r}")
    shape = match["shape"]
    if shape in SHAPES and shape != obj.shape:
        raise ValueError(f"the {match['colour']} object is a {obj.shape}, not a {shape}: {text!r}")
    return obj


def _apply_one(scene: Scene, text: str) -> Scene:
    norm = _normalise(text)
    found = next(((a, m) for a, p in _PATTERNS if (m := p.fullmatch(norm))), None)
    if found is None:
        raise ValueError(f"cannot execute edit instruction {text!r}")
    action, m = found
    if action == "brighten":
        return replace(scene, brightness=scene.brightness + 1)
    if action == "darken":
        return replace(scene, brightness=scene.brightness - 1)
    if action == "blur background":
        return replace(scene, background_blurred=True)
    if action == "add":
        new = SceneObject(m["shape"], m["colour"], m["size"] or "medium", m["goal"])
        if scene.object_by_colour(new.colour) is not None:
            raise ValueError(f"a {new.colour} object is already in the scene: {text!r}")
        if any(o.position == new.position for o in scene.objects):
            raise ValueError(f"the {new.position} is already occupied: {text!r}")
        return replace(scene, objects=scene.objects + (new,))
    obj = _resolve(scene, m, text)
    others = tuple(o for o in scene.objects if o is not obj)
    if action == "remove":
        return replace(scene, objects=others)
    goal = m["goal"]
    if action == "recolor":
        if goal != obj.colour and scene.object_by_colour(goal) is not None:
            raise ValueError(f"a {goal} object is already in the scene: {text!r}")
        new = replace(obj, colour=goal)
    elif action == "replace":
        new = replace(obj, shape=goal)
    elif action == "move":
        if any(o.position == goal for o in others):
            raise ValueError(f"the {goal} is already occupied: {text!r}")
        new = replace(obj, position=goal)
    else:  # resize
        step = -1 if goal == GOAL_SMALLER else 1
        index = SIZES.index(obj.size) + step
        if not 0 <= index < len(SIZES):
            raise ValueError(f"the {obj.name} is already {obj.size}: {text!r}")
        new = replace(obj, size=SIZES[index])
    return replace(scene, objects=tuple(new if o is obj else o for o in scene.objects))


def apply_instruction(scene: Scene, text: str) -> Scene:
    """Execute a canonical sub-request, or a numbered single-turn instruction of several, exactly.

    Raises ValueError naming the text when it cannot be executed (unknown phrasing, an object
    not in the scene, a colour or cell already taken, a size beyond small/large).
    """
    if not isinstance(text, str) or not text.strip(" .\n\t"):
        raise ValueError(f"empty edit instruction: {text!r}")
    for step in split_steps(text):
        scene = _apply_one(scene, step)
    return scene


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
    if edit.action in _OBJECT_ACTIONS:
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
        a_goal=f"{_article(edit.goal)} {edit.goal}",
        a_new=f"{_article(new)} {new}",
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
        if action in _OBJECT_ACTIONS:
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


def make_item(
    seed: int, index: int, min_edits: int = 1, max_edits: int = 4, image_size: int = 64
) -> SyntheticItem:
    """Item `index` of the set with `seed`; depends on nothing else (sharding and resume are free)."""
    rng = random.Random(f"imageedit-synthetic/{seed}/{index}")
    scene = random_scene(rng)
    edits = _sample_edits(rng, scene, rng.randint(min_edits, max_edits))
    request = _join(rng, [_phrase(rng, e, scene) for e in edits])
    n = len(edits)
    decomposition = Decomposition(
        actions=_unique(e.action for e in edits),
        subjects=_unique(e.subject for e in edits),
        goals=_unique(e.goal for e in edits),
        think=f"{n} edit{'s' if n > 1 else ''}",
    )
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


def training_example(item: SyntheticItem):
    """The writers' row source for one item (image encoded as PNG)."""
    from data_prep.writers import TrainingExample, png_bytes

    return TrainingExample(
        id=item.id,
        source=SOURCE,
        instruction=item.request,
        image_png=png_bytes(item.image),
        decomposition=item.decomposition,
        plan=item.plan,
    )


def eval_record(item: SyntheticItem, folder: str | os.PathLike):
    """Save the item's input and exact target under `folder/images/` and return its Record."""
    from data_prep.records import IMAGES_DIR, Record

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


def write_dataset(
    out_dir: str | os.PathLike,
    train: int = 2000,
    val: int = 256,
    seed: int = 0,
    min_edits: int = 1,
    max_edits: int = 4,
    image_size: int = 64,
    progress: bool = True,
) -> dict:
    """Write the synthetic set: RL/SFT/EasyR1 parquet for train and val, the val items as an eval
    records folder `eval/` (`records.jsonl` + `images/`, inputs and exact targets), `corpus.txt`
    and `manifest.json`. Streamed and atomic."""
    from tqdm import tqdm

    from data_prep.records import write_records
    from data_prep.writers import write_training_sets
    from inference.fileio import atomic_open, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(seed=seed, min_edits=min_edits, max_edits=max_edits, image_size=image_size)
    bar = lambda it, n, desc: tqdm(it, total=n, desc=desc, disable=not progress, mininterval=1)  # noqa: E731
    counts = {}
    train_items = bar(generate_items(train, **kw), train, "synthetic train")
    counts |= write_training_sets(out, (training_example(i) for i in train_items), "train")
    val_items = bar(generate_items(val, start=train, **kw), val, "synthetic val")
    counts |= write_training_sets(out, (training_example(i) for i in val_items), "val")
    eval_items = bar(generate_items(val, start=train, **kw), val, "synthetic eval")
    eval_dir = out / EVAL_DIR
    write_records(eval_dir, (eval_record(i, eval_dir) for i in eval_items))
    counts[f"{EVAL_DIR}/records.jsonl"] = val
    with atomic_open(out / "corpus.txt") as fh:
        for line in iter_corpus(generate_items(train, **kw)):
            fh.write(line + "\n")
    manifest = {"source": SOURCE, "train": train, "val": val, **kw, "files": counts}
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
    )
    print(json.dumps(manifest["files"], indent=2))


if __name__ == "__main__":
    main()
