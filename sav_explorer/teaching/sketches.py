"""Drawings as a person makes them, by a program of their own: the check, not the training data.

    sketch = draw(random.Random(0), colour="red", shape="circle")

A white canvas of 256 to 400 pixels a side (or a small tinted one), one shape in a colour of the app's palette (a hand
never picks the same red twice), drawn the way people do: filled, as a thick anti-aliased
outline, or scribbled in with a brush that wanders. Written apart from
`drawn` (the training generator's drawings) and never used in training, so that the teaching
model's figures on drawings, in `evaluate` and the tests, are not figures on its own training data.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from .shapes import COLOURS

SUPERSAMPLE = 4
STYLES = ("filled", "outline", "scribble")


def draw(rng: random.Random, colour: str, shape: str, style: str | None = None, small: bool = False) -> Image.Image:
    """`small`: a thumbnail of 64 to 128 pixels on a light tinted ground, instead of a white canvas."""
    low, high = (64, 128) if small else (256, 400)
    width, height = rng.randint(low, high), rng.randint(low, high)
    if rng.random() < 0.4:
        height = width  # the app's canvas is square
    paper = tuple(rng.randint(200, 250) for _ in range(3)) if small else (255, 255, 255)
    style = style or rng.choice(STYLES)
    side = min(width, height)
    radius = side * rng.uniform(0.09, 0.17) * SUPERSAMPLE
    margin = radius + side / 40 * SUPERSAMPLE
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    cx, cy = rng.uniform(margin, big[0] - margin), rng.uniform(margin, big[1] - margin)
    ink = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    brush = round(rng.randint(8, 24) * side / 320 * SUPERSAMPLE)

    region = Image.new("L", big, 0)  # where the shape is
    _shape(ImageDraw.Draw(region), shape, cx, cy, radius, fill=255)
    canvas = Image.new("RGB", big, paper)
    pen = ImageDraw.Draw(canvas)
    if style == "filled":
        _shape(pen, shape, cx, cy, radius, fill=ink)
    elif style == "outline":
        _shape(pen, shape, cx, cy, radius, outline=ink, width=brush)
    else:
        strokes = Image.new("L", big, 0)
        ImageDraw.Draw(strokes).line(_wander(rng, region, cx, cy, radius), fill=255, width=brush, joint="curve")
        canvas.paste(ink, mask=Image.composite(strokes, Image.new("L", big, 0), region))
        _shape(pen, shape, cx, cy, radius, outline=ink, width=max(SUPERSAMPLE, brush // 3))
    return canvas.resize((width, height), Image.BOX)


def _shape(pen: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, **paint) -> None:
    if shape == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), **paint)
    elif shape == "square":
        pen.rectangle((cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r), **paint)
    elif shape == "triangle":
        pen.regular_polygon((cx, cy + 0.2 * r, 1.15 * r), 3, **paint)  # pointing up, its base low like the world's
    elif shape == "cross":
        arm = r * 0.4
        pen.polygon(
            [(cx - arm, cy - r), (cx + arm, cy - r), (cx + arm, cy - arm), (cx + r, cy - arm), (cx + r, cy + arm), (cx + arm, cy + arm),
             (cx + arm, cy + r), (cx - arm, cy + r), (cx - arm, cy + arm), (cx - r, cy + arm), (cx - r, cy - arm), (cx - arm, cy - arm)],
            **paint,
        )  # fmt: skip
    else:
        raise ValueError(shape)


def _wander(rng: random.Random, region: Image.Image, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """A brush that goes back and forth over the shape in a random walk, turning back at its edges."""
    points, heading = [(cx, cy)], rng.uniform(0, 2 * math.pi)
    for _ in range(120):
        for _ in range(12):
            x = points[-1][0] + math.cos(heading) * r * 0.35
            y = points[-1][1] + math.sin(heading) * r * 0.35
            if 0 <= x < region.width and 0 <= y < region.height and region.getpixel((int(x), int(y))):
                points.append((x, y))
                break
            heading += rng.uniform(2.0, 4.3)
        heading += rng.uniform(-0.6, 0.6)
    return points
