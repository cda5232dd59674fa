"""The shapes world: seeded, procedural images of coloured shapes, with questions about them.

    world = ShapesWorld()
    scene = world.sample_scene(random.Random(0), n_objects=2)
    image, qa = world.render(scene), world.question(scene, "colour", random.Random(1))

Everything is a pure function of the random generator handed in, so a seed reproduces an
image, its questions and answers bit for bit. Answers are single words or a short,
canonically ordered description, so that they can be scored exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 64
BACKGROUND = (236, 236, 236)
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 5, "large": 10}  # half-width in pixels
COUNT_WORDS = ("one", "two", "three", "four")
MIN_X_GAP = 8  # pixels between objects' centres, left to right: one patch of the teaching model
MAX_OBJECTS = len(COUNT_WORDS)

# The question asked for each kind of question; one fixed wording each keeps the vocabulary small.
QUESTIONS = {
    "colour": "what color is the shape ?",
    "shape": "what shape is it ?",
    "size": "is the shape small or large ?",
    "count": "how many shapes are there ?",
    "position": "is the shape on the left or the right ?",
    "presence": "is there a {colour} {shape} ?",
    "relation": "is the {colour_a} shape left of the {colour_b} shape ?",
    "describe": "describe the image .",
}
QUESTION_KINDS = tuple(QUESTIONS)


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    x: int  # centre, pixels
    y: int

    def describe(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]

    def left_to_right(self) -> tuple[ShapeObject, ...]:
        return tuple(sorted(self.objects, key=lambda o: (o.x, o.y)))


class ShapesWorld:
    """Samples scenes, renders them and asks questions about them."""

    def __init__(self, image_size: int = IMAGE_SIZE, colour_jitter: int = 18):
        self.image_size = image_size
        self.colour_jitter = colour_jitter

    def sample_scene(
        self,
        rng: random.Random,
        n_objects: int | None = None,
        distinct_colours: bool = False,
        **fixed: str,
    ) -> Scene:
        """A scene with `n_objects` (1..4, random if None) that do not overlap.

        `fixed` pins attributes of the first object (colour=, shape=, size=), which is how
        the example tasks get balanced classes. `distinct_colours` gives every object its
        own colour, so that "the red shape" names exactly one object.
        """
        n_objects = n_objects or rng.randint(1, MAX_OBJECTS)
        for _ in range(20_000):  # rejection sampling: four objects took 52 tries (median), 672 at most in 20,000 scenes
            objects: list[ShapeObject] = []
            used_colours: set[str] = set()
            for i in range(n_objects):
                pinned = fixed if i == 0 else {}
                colour_choices = [c for c in COLOURS if not (distinct_colours and c in used_colours)]
                colour = pinned.get("colour") or rng.choice(colour_choices)
                shape = pinned.get("shape") or rng.choice(SHAPES)
                size = pinned.get("size") or rng.choice(tuple(SIZES))
                half = SIZES[size]
                margin = half + 1
                x = rng.randint(margin, self.image_size - 1 - margin)
                y = rng.randint(margin, self.image_size - 1 - margin)
                if "side" in pinned:  # keep clear of the middle so left/right is unambiguous
                    centre = self.image_size // 2
                    x = (
                        rng.randint(margin, centre - 6)
                        if pinned["side"] == "left"
                        else rng.randint(centre + 6, self.image_size - 1 - margin)
                    )
                objects.append(ShapeObject(colour, shape, size, x, y))
                used_colours.add(colour)
            if _no_overlap(objects) and _distinct_x(objects):
                return Scene(tuple(objects))
        raise RuntimeError(f"could not place {n_objects} objects without overlap")

    def render(self, scene: Scene, rng: random.Random | None = None) -> Image.Image:
        """Draws the scene; `rng` adds a little colour jitter so that no two reds are identical."""
        image = Image.new("RGB", (self.image_size, self.image_size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for obj in scene.objects:
            fill = COLOURS[obj.colour]
            if rng is not None and self.colour_jitter:
                fill = tuple(max(0, min(255, c + rng.randint(-self.colour_jitter, self.colour_jitter))) for c in fill)
            draw_shape(draw, obj, fill)
        return image

    def question(self, scene: Scene, kind: str, rng: random.Random) -> tuple[str, str]:
        """(question, answer) of the given kind for the scene.

        Kinds that talk about "the shape" need a one-object scene; "relation" needs at least
        two objects with distinct colours. The caller samples a fitting scene (see `sample`).
        """
        objects = scene.objects
        first = objects[0]
        if kind == "colour":
            return QUESTIONS[kind], first.colour
        if kind == "shape":
            return QUESTIONS[kind], first.shape
        if kind == "size":
            return QUESTIONS[kind], first.size
        if kind == "position":
            return QUESTIONS[kind], "left" if first.x < self.image_size / 2 else "right"
        if kind == "count":
            return QUESTIONS[kind], COUNT_WORDS[len(objects) - 1]
        if kind == "presence":
            return self.presence_question(scene, rng)
        if kind == "relation":
            a, b = rng.sample(list(objects), 2)
            answer = "yes" if a.x < b.x else "no"
            return QUESTIONS[kind].format(colour_a=a.colour, colour_b=b.colour), answer
        if kind == "describe":
            return QUESTIONS[kind], describe(scene)
        raise ValueError(f"unknown question kind {kind!r}; expected one of {QUESTION_KINDS}")

    def presence_question(
        self, scene: Scene, rng: random.Random, near_share: float = 0.5, same_colour_only: bool = False
    ) -> tuple[str, str]:
        """A presence question about the scene, answered yes half the time. Of the absent ones,
        `near_share` name a pair one attribute away from an object in the scene (a colour or a
        shape of it; with `same_colour_only`, a colour of it on another shape), so that the answer
        needs the binding, not just one attribute."""
        objects = scene.objects
        if rng.random() < 0.5:
            target = rng.choice(objects)
            return QUESTIONS["presence"].format(colour=target.colour, shape=target.shape), "yes"
        present = {(o.colour, o.shape) for o in objects}
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        near = [(c, s) for c, s in absent if any(o.colour == c or (o.shape == s and not same_colour_only) for o in objects)]
        colour, shape = rng.choice(near if near and rng.random() < near_share else absent)
        return QUESTIONS["presence"].format(colour=colour, shape=shape), "no"

    def sample(self, rng: random.Random, kind: str) -> tuple[Image.Image, str, str]:
        """A random (image, question, answer) of the given kind, from a scene that fits it."""
        scene = self.sample_scene_for(rng, kind)
        question, answer = self.question(scene, kind, rng)
        return self.render(scene, rng), question, answer

    def sample_scene_for(self, rng: random.Random, kind: str) -> Scene:
        """A random scene that a question of this kind can be asked about."""
        if kind in ("colour", "shape", "size"):
            return self.sample_scene(rng, n_objects=1)
        if kind == "position":
            return self.sample_scene(rng, n_objects=1, side=rng.choice(("left", "right")))
        if kind == "relation":
            return self.sample_scene(rng, n_objects=rng.randint(2, MAX_OBJECTS), distinct_colours=True)
        return self.sample_scene(rng)


def describe(scene: Scene) -> str:
    """Canonical description: objects left to right, "size colour shape", joined by " , "."""
    return " , ".join(obj.describe() for obj in scene.left_to_right())


def parse_description(text: str) -> list[tuple[str, str, str]]:
    """Inverse of `describe`, tolerant of malformed parts (they become empty attributes)."""
    objects = []
    for part in text.split(","):
        words = part.split()
        words += [""] * (3 - len(words))
        objects.append((words[0], words[1], words[2]))
    return objects


def _no_overlap(objects: list[ShapeObject]) -> bool:
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            gap = SIZES[a.size] + SIZES[b.size] + 2
            if abs(a.x - b.x) < gap and abs(a.y - b.y) < gap:
                return False
    return True


def _distinct_x(objects: list[ShapeObject]) -> bool:
    """Centres at least MIN_X_GAP apart horizontally, so that "left of" and the description's
    left-to-right order are plain to see, never a matter of a pixel or two."""
    xs = sorted(o.x for o in objects)
    return all(b - a >= MIN_X_GAP for a, b in zip(xs, xs[1:]))


def draw_shape(draw: ImageDraw.ImageDraw, obj: ShapeObject, fill: tuple[int, ...]) -> None:
    half = SIZES[obj.size]
    x, y = obj.x, obj.y
    if obj.shape == "circle":
        draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
    elif obj.shape == "square":
        inner = round(half * 0.85)  # same visual weight as the circle
        draw.rectangle((x - inner, y - inner, x + inner, y + inner), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=fill)
    elif obj.shape == "cross":
        arm = max(2, math.ceil(half / 2.5))
        draw.rectangle((x - half, y - arm, x + half, y + arm), fill=fill)
        draw.rectangle((x - arm, y - half, x + arm, y + half), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
