"""The synthetic scene world: flat shapes on a grid, rendered exactly, edited exactly.

A scene is a few flat shapes (distinct colours, so a colour names an object) on a 3x3 grid over a
faintly checkered background (the checker makes "blur the background" visible). `render_scene` draws
it and carries the scene JSON in `image.info` (and in PNG text chunks after `save_png`), `scene_of`
reads it back, and `apply_instruction` executes canonical sub-requests on it exactly: the
deterministic tool editor (`inference.editors.ToolEditor`) of the CPU demo and the tests. The items
built on it (requests, ground truth, targets) are `inference.synthetic_items`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace

from PIL import Image, ImageDraw, ImageFilter

#: Key of the scene JSON in `image.info` and in the PNG text chunks.
SCENE_INFO_KEY = "imageedit_scene"

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
OBJECT_ACTIONS = ("remove", "replace", "recolor", "resize", "move")


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


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def canonical_sub_request(action: str, subject: str = "", goal: str = "", size: str = "medium") -> str:
    """The one canonical text of an edit (what the plans hold and `apply_instruction` executes)."""
    if action == "recolor":
        return f"Recolor the {subject} to {goal}"
    if action == "remove":
        return f"Remove the {subject}"
    if action == "replace":
        return f"Replace the {subject} with {article(goal)} {goal}"
    if action == "resize":
        return f"Make the {subject} {goal}"
    if action == "move":
        return f"Move the {subject} to the {goal}"
    if action == "add":
        size_word = "" if size == "medium" else f"{size} "
        return f"Add {article(size_word or subject)} {size_word}{subject} at the {goal}"
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
