"""Big drawings, as a person draws on a canvas: the check of stage 6, never its training data.

    image = draw_big(random.Random(0), shape="cross", radius=0.33, ink=COLOURS["red"])

People draw a shape large: a third of the canvas to nearly all of it. This renderer is written
apart from `drawn` (the training's drawings) and `sketches` (the check of stage 4), with a stroke
model of its own: a pen stamped along a path that drifts smoothly (a hand, not per-vertex noise),
its width swelling and thinning with pressure, strokes that overshoot their start; fills that are
solid with a darker rim, hatched with parallel pen strokes, a pale marker wash under a rim, or no
fill at all. `radius` is the shape's reach from its centre, as a share of the canvas width, so
that a band of sizes means the same on every canvas.
"""

from __future__ import annotations

import colorsys
import math
import random

from PIL import Image, ImageDraw

from .shapes import COLOURS

FILLS = ("solid", "hatched", "wash", "outline")
SUPERSAMPLE = 3
# Size bands of the evaluation: the shape's radius as a share of the canvas width. The world's
# large objects reach 10/64 = 16 % of their image; the largest band fills 90 % of the canvas.
RADIUS_BANDS = (0.10, 0.15, 0.20, 0.27, 0.33, 0.40, 0.45)


def free_colour(rng: random.Random) -> tuple[int, int, int]:
    """A saturated colour of any hue, not one of the world's six: a user's colour picker."""
    red, green, blue = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.35, 0.9))
    return round(255 * red), round(255 * green), round(255 * blue)


def named_colour(rng: random.Random, name: str) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in COLOURS[name])


def corners(shape: str, radius: float, rng: random.Random) -> list[tuple[float, float]]:
    """The shape's outline around (0, 0), reaching `radius` from the centre, as a closed path."""
    if shape == "circle":
        squash = rng.uniform(0.9, 1.0)  # a hand's circle is rarely round
        return [(radius * math.cos(2 * math.pi * i / 48), squash * radius * math.sin(2 * math.pi * i / 48)) for i in range(48)]
    if shape == "square":
        half = radius * rng.uniform(0.78, 0.9)
        return [(-half, -half), (half, -half), (half, half), (-half, half)]
    if shape == "triangle":  # pointing up, drawn from its apex
        tilt = rng.uniform(-0.15, 0.15) * radius
        return [(tilt, -radius), (radius, 0.8 * radius), (-radius, 0.8 * radius)]
    if shape == "cross":
        arm = radius * rng.uniform(0.28, 0.4)
        return [
            (-arm, -radius), (arm, -radius), (arm, -arm), (radius, -arm), (radius, arm), (arm, arm),
            (arm, radius), (-arm, radius), (-arm, arm), (-radius, arm), (-radius, -arm), (-arm, -arm),
        ]  # fmt: skip
    raise ValueError(f"unknown shape {shape!r}; expected circle, square, triangle or cross")


def hand_path(points: list[tuple[float, float]], rng: random.Random, drift: float, step: float) -> list[tuple[float, float]]:
    """The closed outline walked by a hand: points every `step` pixels, pushed sideways by a smooth
    drift (a sum of two slow waves) up to `drift` pixels, overshooting the start a little."""
    closed = [*points, points[0]]
    walk = []
    for (x0, y0), (x1, y1) in zip(closed, closed[1:]):
        n = max(1, round(math.dist((x0, y0), (x1, y1)) / step))
        walk += [(x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n) for t in range(n)]
    overshoot = max(1, len(walk) // 20)
    walk += walk[:overshoot]
    waves = [(rng.uniform(1, 4), rng.uniform(0, 2 * math.pi)) for _ in range(2)]
    bent = []
    for i, (x, y) in enumerate(walk):
        t = i / len(walk)
        dx = drift * sum(math.sin(2 * math.pi * f * t + p) for f, p in waves) / 2
        dy = drift * sum(math.cos(2 * math.pi * f * t + p + 1.0) for f, p in waves) / 2
        bent.append((x + dx, y + dy))
    return bent


def stamp(canvas: Image.Image, path: list[tuple[float, float]], width: float, ink, rng: random.Random) -> None:
    """A pen stamped along the path, its width swelling and thinning with the hand's pressure."""
    pen = ImageDraw.Draw(canvas)
    phase, rate = rng.uniform(0, 2 * math.pi), rng.uniform(2, 6)
    for i, (x, y) in enumerate(path):
        pressure = 0.75 + 0.25 * math.sin(phase + rate * 2 * math.pi * i / len(path))
        r = max(1.0, width * pressure / 2)
        pen.ellipse((x - r, y - r, x + r, y + r), fill=ink)


def hatching(mask: Image.Image, width: float, rng: random.Random) -> Image.Image:
    """Parallel pen strokes across the shape at a slant, clipped to it: a hatched fill."""
    angle = rng.uniform(0.3, 1.2) * rng.choice((1, -1))
    along, across = (math.cos(angle), math.sin(angle)), (-math.sin(angle), math.cos(angle))
    reach = math.hypot(*mask.size)
    gap = width * rng.uniform(1.6, 2.6)
    lines = Image.new("L", mask.size, 0)
    pen = ImageDraw.Draw(lines)
    cx, cy, offset = mask.size[0] / 2, mask.size[1] / 2, -reach / 2
    while offset < reach / 2:
        ox, oy = cx + across[0] * offset, cy + across[1] * offset
        pen.line((ox - along[0] * reach, oy - along[1] * reach, ox + along[0] * reach, oy + along[1] * reach), fill=255, width=round(width))
        offset += gap
    return Image.composite(lines, Image.new("L", mask.size, 0), mask)


def draw_big(
    rng: random.Random,
    shape: str,
    radius: float,
    ink: tuple[int, int, int],
    fill: str | None = None,
    paper: tuple[int, int, int] | None = None,
) -> Image.Image:
    """One shape reaching `radius` × the canvas width from its centre, on a canvas of 240 to 420
    pixels (square two times in three, as the app's canvas), placed anywhere it fits."""
    width = rng.randint(240, 420)
    height = width if rng.random() < 2 / 3 else max(round(2.2 * radius * width) + 8, round(width * rng.uniform(0.8, 1.2)))
    paper = paper or (255, 255, 255)
    fill = fill or rng.choice(FILLS)
    big = SUPERSAMPLE
    r = radius * width * big
    pen_width = min(width * big * rng.uniform(0.015, 0.05), 0.25 * r)  # a small shape gets a finer pen
    points = corners(shape, r, rng)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    margin = pen_width
    cx = rng.uniform(margin - min(xs), width * big - margin - max(xs))
    cy = rng.uniform(margin - min(ys), height * big - margin - max(ys))
    if cx > width * big - margin - max(xs) or cy > height * big - margin - max(ys):  # no room to spare: centre it
        cx, cy = width * big / 2 - (min(xs) + max(xs)) / 2, height * big / 2 - (min(ys) + max(ys)) / 2
    placed = [(cx + x, cy + y) for x, y in points]

    canvas = Image.new("RGB", (width * big, height * big), paper)
    mask = Image.new("L", canvas.size, 0)
    ImageDraw.Draw(mask).polygon(placed, fill=255)
    rim = tuple(round(c * 0.7) for c in ink)
    if fill == "solid":
        canvas.paste(ink, mask=mask)
    elif fill == "hatched":
        canvas.paste(ink, mask=hatching(mask, pen_width * 0.6, rng))
    elif fill == "wash":
        pale = tuple(round(c + (p - c) * 0.45) for c, p in zip(ink, paper))
        canvas.paste(pale, mask=mask)
    path = hand_path(placed, rng, drift=pen_width * rng.uniform(0.2, 0.8), step=max(1.0, pen_width / 4))
    stamp(canvas, path, pen_width, rim if fill in ("solid", "wash") else ink, rng)
    return canvas.resize((width, height), Image.BOX)
