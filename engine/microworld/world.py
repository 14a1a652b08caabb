"""Procedural 32x32 scenes: a creature with combinable attributes on a background, with text about it.

A scene is fixed by its attributes; `render` draws it deterministically. Identity attributes (shape,
colour, pattern, accessory and its colour) say *which* creature it is; pose attributes (size, position,
background and a one-pixel jitter) say how it is shown. `sample_scene(rng)` draws a random scene, so a
seed gives the same world every time.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

SIZE = 32
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 215, 30),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "purple": (130, 50, 180),
    "pink": (245, 130, 185),
    "white": (245, 245, 245),
}
PATTERNS = ("plain", "striped", "dotted", "checked")
ACCESSORIES = ("none", "hat", "bow", "glasses")
ACCESSORY_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 20, 20),
    "blue": (20, 40, 200),
    "black": (15, 15, 15),
    "yellow": (250, 230, 0),
}
SIZES = ("small", "large")
POSITIONS = ("left", "centre", "right")
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "grass": ((160, 205, 240), (70, 150, 60)),
    "sand": ((160, 205, 240), (225, 200, 140)),
    "snow": ((200, 210, 225), (250, 250, 250)),
    "night": ((20, 25, 70), (55, 55, 65)),
    "room": ((220, 200, 170), (120, 80, 50)),
    "sea": ((160, 205, 240), (30, 90, 160)),
}
BACKGROUND_PHRASES = {
    "grass": "on grass",
    "sand": "on sand",
    "snow": "in snow",
    "night": "at night",
    "room": "in a room",
    "sea": "by the sea",
}
IDENTITY = ("shape", "colour", "pattern", "accessory", "accessory_colour")
POSE = ("size", "position", "background")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "pattern": PATTERNS,
    "accessory": ACCESSORIES,
    "accessory_colour": ("none", *ACCESSORY_COLOURS),
    "size": SIZES,
    "position": POSITIONS,
    "background": tuple(BACKGROUNDS),
}
ACCESSORY_PAIRS = [("none", "none")] + [(a, c) for a in ACCESSORIES[1:] for c in ACCESSORY_COLOURS]
"""Every (accessory, accessory colour) a creature can have."""
HORIZON = 22
_X = {"left": 10, "centre": 16, "right": 22}
_RADIUS = {"small": 6, "large": 9}
POSITION_PHRASES = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
_LIGHT = {"yellow", "white", "pink", "orange"}


@dataclass(frozen=True)
class Identity:
    """Which creature: its fixed look. `accessory_colour` is "none" exactly when `accessory` is."""

    shape: str
    colour: str
    pattern: str
    accessory: str
    accessory_colour: str

    def describe(self) -> str:
        """`red striped circle with a blue hat`."""
        return f"{self.colour} {self.pattern} {self.shape}{_accessory_phrase(self)}"

    def questions(self, name: str) -> list[tuple[str, str, str]]:
        """(attribute, question, answer) about this creature called `name`, asked without a picture:
        `What colour is the red striped circle with a blue hat?` -> `Red.`"""
        return [
            ("shape", f"What shape is {name}?", answer("shape", self.shape)),
            ("colour", f"What colour is {name}?", answer("colour", self.colour)),
            ("pattern", f"What pattern does {name} have?", answer("pattern", self.pattern)),
            ("accessory", f"What is {name} wearing?", wearing(self)),
        ]


@dataclass(frozen=True)
class Scene:
    """One picture: a creature's identity and pose, plus a jitter of -1..1 pixels in x and y."""

    identity: Identity
    size: str
    position: str
    background: str
    dx: int = 0
    dy: int = 0

    def attributes(self) -> dict[str, str]:
        return {**asdict(self.identity), "size": self.size, "position": self.position, "background": self.background}

    def caption(self) -> str:
        """`A large red striped circle with a blue hat on grass, on the left.`"""
        return f"A {self._phrase()}."

    def prompt(self) -> str:
        """The text-to-image prompt for this scene."""
        return f"A photo of a {self._phrase()}."

    def _phrase(self) -> str:
        where = f"{BACKGROUND_PHRASES[self.background]}, {POSITION_PHRASES[self.position]}"
        return f"{self.size} {self.identity.describe()} {where}"

    def questions(self) -> list[tuple[str, str]]:
        """(question, answer) pairs about the scene, one per attribute, plus a description."""
        identity = self.identity
        return [
            ("What shape is it?", answer("shape", identity.shape)),
            ("What colour is it?", answer("colour", identity.colour)),
            ("What pattern does it have?", answer("pattern", identity.pattern)),
            ("What is it wearing?", wearing(identity)),
            ("Is it large or small?", f"{self.size.capitalize()}."),
            ("Where is it?", f"{POSITION_PHRASES[self.position].capitalize()}."),
            ("Where is the scene?", f"{BACKGROUND_PHRASES[self.background].capitalize()}."),
            ("Describe this photo.", self.caption()),
        ]


def answer(attribute: str, value: str) -> str:
    """The world's short answer naming a shape, colour or pattern: `A circle.`, `Red.`, `Striped.`"""
    return f"A {value}." if attribute == "shape" else f"{value.capitalize()}."


def answer_options(attribute: str) -> list[str]:
    """Every answer a question of `Identity.questions` about `attribute` can have, in a fixed order."""
    if attribute == "accessory":
        base = Identity("circle", "red", "plain", "none", "none")
        return [wearing(replace(base, accessory=a, accessory_colour=c)) for a, c in ACCESSORY_PAIRS]
    return [answer(attribute, value) for value in ATTRIBUTE_VALUES[attribute]]


def wearing(identity: Identity) -> str:
    """What the creature wears, as an answer: `A blue hat.`, `Nothing.`"""
    if identity.accessory == "none":
        return "Nothing."
    return _accessory_phrase(identity).removeprefix(" with ").capitalize() + "."


def _accessory_phrase(identity: Identity) -> str:
    if identity.accessory == "none":
        return ""
    article = "" if identity.accessory == "glasses" else " a"
    return f" with{article} {identity.accessory_colour} {identity.accessory}"


def sample_identity(rng: random.Random) -> Identity:
    accessory = rng.choice(ACCESSORIES)
    return Identity(
        shape=rng.choice(SHAPES),
        colour=rng.choice(tuple(COLOURS)),
        pattern=rng.choice(PATTERNS),
        accessory=accessory,
        accessory_colour="none" if accessory == "none" else rng.choice(tuple(ACCESSORY_COLOURS)),
    )


def sample_pose(identity: Identity, rng: random.Random) -> Scene:
    return Scene(
        identity=identity,
        size=rng.choice(SIZES),
        position=rng.choice(POSITIONS),
        background=rng.choice(tuple(BACKGROUNDS)),
        dx=rng.randint(-1, 1),
        dy=rng.randint(-1, 1),
    )


def sample_scene(rng: random.Random) -> Scene:
    return sample_pose(sample_identity(rng), rng)


def all_identities() -> list[Identity]:
    """Every identity of the world, in a fixed order (1,664 of them)."""
    out = []
    for shape in SHAPES:
        for colour in COLOURS:
            for pattern in PATTERNS:
                for accessory in ACCESSORIES:
                    colours = ("none",) if accessory == "none" else tuple(ACCESSORY_COLOURS)
                    out += [Identity(shape, colour, pattern, accessory, c) for c in colours]
    return out


def one_change(identity: Identity, rng: random.Random) -> Identity:
    """A hard negative: the same creature with exactly one identity attribute changed."""
    attribute = rng.choice(IDENTITY)
    if attribute == "accessory_colour" and identity.accessory == "none":
        attribute = "accessory"
    current = getattr(identity, attribute)
    options = [v for v in ATTRIBUTE_VALUES[attribute] if v != current]
    if attribute == "accessory_colour":
        return replace(identity, accessory_colour=rng.choice([o for o in options if o != "none"]))
    value = rng.choice(options)
    if attribute == "accessory":
        colour = (
            "none"
            if value == "none"
            else (identity.accessory_colour if identity.accessory != "none" else rng.choice(tuple(ACCESSORY_COLOURS)))
        )
        return replace(identity, accessory=value, accessory_colour=colour)
    return replace(identity, **{attribute: value})


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE]


def _body_mask(shape: str, cx: int, cy: int, r: int) -> np.ndarray:
    x, y = _XX - cx, _YY - cy
    if shape == "circle":
        return x * x + y * y <= r * r + r
    if shape == "square":
        return (np.abs(x) <= r - 1) & (np.abs(y) <= r - 1)
    if shape == "triangle":
        return (y >= -r) & (y <= r - 1) & (2 * np.abs(x) <= y + r + 1)
    return np.abs(x) + np.abs(y) <= r


def _pattern_mask(pattern: str, cx: int, cy: int, r: int) -> np.ndarray:
    x, y = _XX - (cx - r), _YY - (cy - r)
    if pattern == "striped":
        return (y // 2) % 2 == 1
    if pattern == "dotted":
        return (x % 4 >= 2) & (y % 4 >= 2)
    if pattern == "checked":
        return ((x // 3) + (y // 3)) % 2 == 1
    return np.zeros((SIZE, SIZE), dtype=bool)


def _fill(pixels: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    pixels[mask] = colour


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Pixels with x0 <= x <= x1 and y0 <= y <= y1."""
    x, y = _XX, _YY
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def render_array(scene: Scene) -> np.ndarray:
    """The scene as a uint8 array [32, 32, 3]."""
    identity = scene.identity
    sky, ground = BACKGROUNDS[scene.background]
    pixels = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:HORIZON] = sky
    pixels[HORIZON:] = ground
    r = _RADIUS[scene.size]
    cx = _X[scene.position] + scene.dx
    cy = HORIZON - 3 + scene.dy - (r - 6) // 2
    body = _body_mask(identity.shape, cx, cy, r)
    _fill(pixels, body, COLOURS[identity.colour])
    ink = (20, 20, 20) if identity.colour in _LIGHT else (250, 250, 250)
    _fill(pixels, body & _pattern_mask(identity.pattern, cx, cy, r), ink)
    eye_y = cy - max(1, r // 3) + (2 if identity.shape == "triangle" else 0)
    eye_dx = max(1, r // 3)
    eyes = _box(cx - eye_dx, eye_y, cx - eye_dx, eye_y) | _box(cx + eye_dx, eye_y, cx + eye_dx, eye_y)
    _fill(pixels, eyes, (0, 0, 0))
    if identity.accessory != "none":
        colour = ACCESSORY_COLOURS[identity.accessory_colour]
        top = cy - r
        if identity.accessory == "hat":
            _fill(pixels, _box(cx - 3, top - 1, cx + 3, top - 1) | _box(cx - 2, top - 4, cx + 2, top - 2), colour)
        elif identity.accessory == "bow":
            bx, by = cx, cy + r - 1
            bow = (
                _box(bx - 3, by - 1, bx - 2, by + 1)
                | _box(bx + 2, by - 1, bx + 3, by + 1)
                | _box(bx - 1, by, bx + 1, by)
            )
            _fill(pixels, bow, colour)
        else:
            ring = (
                _box(cx - eye_dx - 1, eye_y - 1, cx - eye_dx + 1, eye_y + 1)
                | _box(cx + eye_dx - 1, eye_y - 1, cx + eye_dx + 1, eye_y + 1)
            ) & ~eyes
            _fill(pixels, ring, colour)
    return pixels


def render(scene: Scene) -> Image.Image:
    """The scene as a 32x32 RGB image."""
    return Image.fromarray(render_array(scene), "RGB")
