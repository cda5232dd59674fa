"""The shapes world as people draw it: what the teaching model trains on besides its own renders.

    picture = render_drawn(scene, random.Random(0))     # Picture(image, index_map)

A student's drawing differs from the world's 64-pixel renders in every way a renderer can: a
white or tinted canvas of a few hundred pixels in any aspect ratio, outlines or scribbled fills
instead of flat shapes, thick anti-aliased strokes, wobbly hands, shapes larger or smaller, JPEG.
Trained only on its renders, the model read the colour of such drawings but guessed their shape.
The scene keeps its 64-pixel coordinates: the canvas stretches them to its size, as the image
processor squeezes the canvas back to 64 pixels, so that every object stays where the scene
puts it. Each picture comes with the map of which object covers which pixel (drawn filled, at
64 pixels), which the training's per-patch targets are read from.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

from .shapes import BACKGROUND, COLOURS, IMAGE_SIZE, SHAPES, SIZES, Scene, ShapeObject

FILLS = ("filled", "outline", "scribble")
# Stage 6 draws big objects in one more way: a pale wash of the colour under its outline, as a
# highlighter or a watercolour fills a shape (without it, big washed crosses were read as squares).
BIG_FILLS = (*FILLS, "tinted")
# With `--hand-strokes`, stage 6 also draws as a hand does (`hand_style`): straight parallel
# hatching (zig-zag scribbles did not teach it: hatched squares were read as circles and crosses),
# outlines whose strokes run past their corners (such squares were read as crosses) or bend with
# a hand's slow drift (wobbly circles were read as squares), solid fills under a darker rim.
HAND_FILLS = ("hatched", "filled", "tinted", "outline")
# A cross's arm half-width as a share of its half-width: stage 4 drew 0.4 only, stage 6 draws
# thin to stout arms, so that a big cross is told by its notches, not by one width of arm.
BIG_ARMS = (0.25, 0.45)
# Stage 6's big objects: half-widths in scene pixels, from a little below the world's large (10)
# to 29, an object that fills 90 % of the image. All are "large": the world's small objects
# (half-width 5) stay the only small ones, so the size task's support set reads as before.
BIG_HALF_WIDTH = (8.0, 29.0)
# With `--near-large`, that share of the big objects is drawn between the world's large and a
# quarter of the image (half-width 8 to 16): a fifth to a quarter of the canvas, where hatched
# squares were read as circles and plain crosses as squares while bigger ones were read right.
NEAR_LARGE_HALF_WIDTH = (8.0, 16.0)
# With `--between-sizes`, that share of the big objects is drawn between the world's small and large
# (half-width 6.5 to 8), the sizes no stage drew: drawings at a tenth of the canvas (a radius of
# 6.4 scene pixels) were read worst of any band. The first shipped stage-6 model read shapes
# stroked by hand at half-widths 4 to 7 at 89.6 to 92.7 % by SAV, at 8 to 10 at 95.8 to 96.9 %
# (`benchmarks/bench_between_sizes.py`, 96 a size): small hand drawings, the gap among them.
# They are "large", as every big object: the world's small ones drawn at most 1.2 times their
# size (6) stay the largest small ones.
BETWEEN_HALF_WIDTH = (6.5, 8.0)
# With `--dense-hatching`, that share of the hatched fills stroked by hand is hatched as densely
# as a pen draws when filling in: gaps of 0.8 to 1.5 strokes instead of 1.5 to 3.
DENSE_HATCH_GAP = (0.8, 1.5)
# With `--fine-pens`, that share of the hand-stroked drawings at the world's sizes is drawn with a
# fine pen (in scene pixels; stage 4's pens are 1 to 4): a person draws a small shape with a finer
# pen than a big one, and at a tenth of the canvas the other program's outlines are 1 to 1.6 scene
# pixels wide, where stage 4's thick pens fill a small shape into a blob. Tried with
# `--world-arms`: neither moved that band (the README's *Crosses' arms and fine pens*).
FINE_PEN = (0.6, 1.2)
# A hand's drift on objects at the world's sizes (`--hand-world-size`): a small shape drawn by hand
# bends by more of its size than a big one (a fifth of its half-width).
WORLD_SIZE_WARP = 0.2
# With `--ink-variety`, that share of stage 6's drawings is drawn in an ink far from the world's six:
# washed towards the paper by up to `PALEST_INK` (a pale pen), or darkened to `DARKEST_INK` of its
# colour, and each channel moved by up to `INK_HUE_JITTER` (a teal between green and blue). A thin
# pale-teal circle was read as a square, a dark hatched square as a circle, both right in red.
PALEST_INK = 0.6
DARKEST_INK = 0.7
INK_HUE_JITTER = 45


@dataclass(frozen=True)
class Picture:
    image: Image.Image
    index_map: Image.Image  # "L", IMAGE_SIZE a side: object i covers the pixels of value i + 1
    drawn: bool = False  # drawn as people draw, not the world's own render


@dataclass(frozen=True)
class DrawnStyle:
    width: int  # canvas pixels
    height: int
    background: tuple[int, int, int]
    fill: str  # one of FILLS
    stroke: float  # line width, in pixels of the 64-pixel scene
    antialias: bool
    scale: float  # shapes' size against the world's
    wobble: float  # a hand's unsteadiness: vertices moved by this share of the shape's size
    jpeg_quality: int | None
    colour_jitter: int
    arm: float = 0.4  # a cross's arm half-width, as a share of its half-width
    wash: float = 0.5  # a tinted fill's colour, this share of the way to the background
    overshoot: float = 0.0  # each stroke of the outline runs past its corners by up to this share of the half-width
    rim: float | None = None  # a filled shape's outline, its colour darkened to this share (None: no outline)
    warp: float = 0.0  # the outline bent by slow waves, up to this share of the half-width (a hand's drift)
    hatch_gap: float = 0.0  # a hatched fill's gap between lines, in strokes (0: drawn at random, 1.5 to 3)
    ink: float = 0.0  # > 0: the colour washed this share of the way to the paper; < 0: darkened by this share


@dataclass(frozen=True)
class DrawingHabits:
    """How stage 6 draws, beyond stage 4's styles: the shares of its big drawings and of its drawings
    at the world's sizes stroked by hand (`hand_style`), of the hand-stroked hatched fills hatched
    densely, of its big objects drawn near the world's large, of its drawings in inks far from
    the six (`inked`), of its big objects drawn between the world's small and large, and of its
    hand-stroked drawings at the world's sizes, those whose crosses take a big cross's arms
    (`BIG_ARMS`, not stage 4's 0.4) and those drawn with a fine pen (`FINE_PEN`). One value for
    every stage-6 loop (`train`'s options `--hand-strokes`, `--hand-world-size`, `--dense-hatching`,
    `--near-large`, `--ink-variety`, `--between-sizes`, `--world-arms`, `--fine-pens`); all 0 draws
    as stage 4 does, from the same random stream."""

    hand_big: float = 0.0
    hand_world: float = 0.0
    dense_hatching: float = 0.0
    near_large: float = 0.0
    ink_variety: float = 0.0
    between_sizes: float = 0.0
    world_arms: float = 0.0
    fine_pens: float = 0.0


AS_STAGE_4 = DrawingHabits()  # no habit of stage 6's: stage 4's styles only


def sample_style(rng: random.Random) -> DrawnStyle:
    width = rng.randint(IMAGE_SIZE, 400)
    height = max(IMAGE_SIZE, min(400, round(width * rng.uniform(0.625, 1.6))))
    tint = rng.random()
    if tint < 0.45:
        background = (255, 255, 255)
    elif tint < 0.9:
        background = tuple(rng.randint(215, 255) for _ in range(3))
    else:
        background = (236, 236, 236)
    return DrawnStyle(
        width=width,
        height=height,
        background=background,
        fill=rng.choice(FILLS),
        stroke=rng.uniform(1.0, 4.0),
        antialias=rng.random() < 0.7,
        scale=rng.uniform(0.8, 1.2),  # "small" stays smaller than "large" at either end
        wobble=rng.choice((0.0, rng.uniform(0.0, 0.12))),
        jpeg_quality=rng.randint(50, 95) if rng.random() < 0.5 else None,
        colour_jitter=rng.randint(10, 30),
    )


def outline(obj: ShapeObject, half: float, rng: random.Random, wobble: float, arm_share: float) -> list[tuple[float, float]]:
    """The shape's outline around (0, 0), `half` pixels from centre to edge, vertices moved by up
    to `wobble` × half; a cross's arms `arm_share` × half wide on either side of its centre lines."""
    if obj.shape == "circle":
        points = [(half * math.cos(2 * math.pi * i / 32), half * math.sin(2 * math.pi * i / 32)) for i in range(32)]
    elif obj.shape == "square":
        inner = half * 0.85
        points = [(-inner, -inner), (inner, -inner), (inner, inner), (-inner, inner)]
    elif obj.shape == "triangle":
        points = [(0.0, -half), (half, half), (-half, half)]
    elif obj.shape == "cross":
        arm = max(half * arm_share, 1.0)
        points = [
            (-arm, -half), (arm, -half), (arm, -arm), (half, -arm), (half, arm), (arm, arm),
            (arm, half), (-arm, half), (-arm, arm), (-half, arm), (-half, -arm), (-arm, -arm),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return [(x + rng.uniform(-wobble, wobble) * half, y + rng.uniform(-wobble, wobble) * half) for x, y in points]


def render_drawn(scene: Scene, rng: random.Random, style: DrawnStyle | None = None) -> Picture:
    style = style or sample_style(rng)
    supersample = 2 if style.antialias else 1
    sx, sy = style.width / IMAGE_SIZE * supersample, style.height / IMAGE_SIZE * supersample
    unit = min(sx, sy)  # canvas pixels per scene pixel, for sizes: shapes stay round on any canvas
    canvas = Image.new("RGB", (style.width * supersample, style.height * supersample), style.background)
    index_map = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    stroke = max(1, round(style.stroke * unit))
    for i, obj in enumerate(scene.objects):
        half = SIZES[obj.size] * style.scale * unit
        shape = [(obj.x * sx + x, obj.y * sy + y) for x, y in outline(obj, half, rng, style.wobble, style.arm)]
        if style.warp:
            shape = _warped(shape, style.warp * half, rng)
        colour = tuple(max(0, min(255, c + rng.randint(-style.colour_jitter, style.colour_jitter))) for c in COLOURS[obj.colour])
        if style.ink > 0:
            colour = _washed(colour, style.background, style.ink)
        elif style.ink < 0:
            colour = tuple(round(c * (1 + style.ink)) for c in colour)
        mask = Image.new("L", canvas.size, 0)
        ImageDraw.Draw(mask).polygon(shape, fill=255)
        if style.fill == "filled":
            canvas.paste(colour, mask=mask)
        elif style.fill == "scribble":
            canvas.paste(colour, mask=_scribble(mask, shape, stroke, rng))
        elif style.fill == "tinted":
            canvas.paste(_washed(colour, style.background, style.wash), mask=mask)
        elif style.fill == "hatched":
            canvas.paste(colour, mask=_hatched(mask, stroke, rng, style.hatch_gap))
        if style.fill != "filled" or style.rim is not None:
            ink = colour if style.fill != "filled" else tuple(round(c * style.rim) for c in colour)
            if style.overshoot:
                _overshooting(canvas, shape, ink, stroke, style.overshoot * half, rng)
            else:
                ImageDraw.Draw(canvas).line([*shape, shape[0], shape[1]], fill=ink, width=stroke, joint="curve")
        ImageDraw.Draw(index_map).polygon([(x / sx, y / sy) for x, y in shape], fill=i + 1)
    image = canvas.resize((style.width, style.height), Image.LANCZOS) if supersample > 1 else canvas
    if style.jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=style.jpeg_quality)
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return Picture(image, index_map, drawn=True)


def _washed(colour: tuple[int, int, int], paper: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """The colour moved `share` of the way to the paper: a wash, or a pale pen."""
    return tuple(round(c + (p - c) * share) for c, p in zip(colour, paper))


def _scribble(mask: Image.Image, shape: list[tuple[float, float]], stroke: int, rng: random.Random) -> Image.Image:
    """Zig-zag strokes across the shape at a random angle, kept inside it: a filled-in drawing."""
    xs, ys = [x for x, _ in shape], [y for _, y in shape]
    cx, cy, reach = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(max(xs) - min(xs), max(ys) - min(ys))
    angle = rng.uniform(0, math.pi)
    along, across = (math.cos(angle), math.sin(angle)), (-math.sin(angle), math.cos(angle))
    gap = stroke * rng.uniform(1.0, 2.2)
    points, offset, side = [], -reach / 2, 1
    while offset <= reach / 2:
        tip = side * reach / 2
        points.append((cx + across[0] * offset + along[0] * tip, cy + across[1] * offset + along[1] * tip))
        offset, side = offset + gap, -side
    strokes = Image.new("L", mask.size, 0)
    if len(points) > 1:
        ImageDraw.Draw(strokes).line(points, fill=255, width=stroke, joint="curve")
    return Image.composite(strokes, Image.new("L", mask.size, 0), mask)


def _warped(shape: list[tuple[float, float]], reach: float, rng: random.Random) -> list[tuple[float, float]]:
    """The outline with its sides cut into short steps and pushed in or out from the centre by two
    slow waves around it, up to `reach` pixels: the smooth drift of a hand, where `wobble` jitters corners."""
    cx, cy = sum(x for x, _ in shape) / len(shape), sum(y for _, y in shape) / len(shape)
    step = max(1.0, max(math.dist(p, (cx, cy)) for p in shape) / 6)
    waves = [(rng.randint(2, 4), rng.uniform(0, 2 * math.pi)) for _ in range(2)]
    bent = []
    for (x0, y0), (x1, y1) in zip(shape, [*shape[1:], shape[0]]):
        n = max(1, math.ceil(math.dist((x0, y0), (x1, y1)) / step))
        for t in range(n):
            x, y = x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n
            r, angle = max(math.dist((x, y), (cx, cy)), 1e-6), math.atan2(y - cy, x - cx)
            push = reach * sum(math.sin(f * angle + p) for f, p in waves) / 2
            bent.append((x + (x - cx) / r * push, y + (y - cy) / r * push))
    return bent


def _hatched(mask: Image.Image, stroke: int, rng: random.Random, gap: float = 0.0) -> Image.Image:
    """Straight parallel lines at a slant, kept inside the shape: a hatched fill, `gap` strokes
    apart (0: 1.5 to 3 at random, lines half to one stroke wide; else lines half a stroke wide)."""
    box = mask.getbbox() or (0, 0, *mask.size)
    cx, cy, reach = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, math.dist(box[:2], box[2:])
    angle = rng.uniform(0, math.pi)
    along, across = (math.cos(angle), math.sin(angle)), (-math.sin(angle), math.cos(angle))
    if gap:
        width, gap = max(1, round(stroke * 0.5)), max(2.0, stroke * gap)
    else:
        width, gap = max(1, round(stroke * rng.uniform(0.5, 1.0))), stroke * rng.uniform(1.5, 3.0)
    lines = Image.new("L", mask.size, 0)
    pen, offset = ImageDraw.Draw(lines), -reach / 2
    while offset <= reach / 2:
        x, y = cx + across[0] * offset, cy + across[1] * offset
        pen.line((x - along[0] * reach, y - along[1] * reach, x + along[0] * reach, y + along[1] * reach), fill=255, width=width)
        offset += gap
    return Image.composite(lines, Image.new("L", mask.size, 0), mask)


def _overshooting(canvas: Image.Image, shape: list[tuple[float, float]], ink, stroke: int, reach: float, rng: random.Random) -> None:
    """The outline as a hand strokes it: a polygon side by side, each stroke running past both its
    corners by up to `reach` pixels; an outline of many vertices (a circle, or any `_warped` one)
    in one stroke that goes round once and on past its start, drifting outwards or inwards by up
    to `reach`."""
    pen = ImageDraw.Draw(canvas)
    if len(shape) > 12:
        cx, cy = sum(x for x, _ in shape) / len(shape), sum(y for _, y in shape) / len(shape)
        start, extra, drift = rng.randrange(len(shape)), rng.randint(2, max(2, len(shape) // 6)), rng.uniform(-reach, reach)
        n = len(shape) + extra
        path = []
        for i in range(n):
            x, y = shape[(start + i) % len(shape)]
            k = 1 + drift * i / n / max(math.dist((x, y), (cx, cy)), 1.0)  # the radius drifts as the stroke goes round
            path.append((cx + (x - cx) * k, cy + (y - cy) * k))
        pen.line(path, fill=ink, width=stroke, joint="curve")
        return
    for (x0, y0), (x1, y1) in zip(shape, [*shape[1:], shape[0]]):
        length = math.dist((x0, y0), (x1, y1)) or 1.0
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        before, after = rng.uniform(0, reach), rng.uniform(0, reach)
        pen.line((x0 - ux * before, y0 - uy * before, x1 + ux * after, y1 + uy * after), fill=ink, width=stroke)


def sample_big_scene(
    rng: random.Random, colour: str | None = None, shape: str | None = None, near_large: float = 0.0, between_sizes: float = 0.0
) -> tuple[Scene, float]:
    """One large object drawn big (stage 6), and its scale against the world's large: the scene
    keeps 64-pixel coordinates, its centre where the enlarged shape (and a hand's wobble) fits.
    With chance `between_sizes`, its half-width is `BETWEEN_HALF_WIDTH`'s, else with chance
    `near_large` `NEAR_LARGE_HALF_WIDTH`'s; each at 0 takes nothing from the random stream."""
    if between_sizes and rng.random() < between_sizes:
        sizes = BETWEEN_HALF_WIDTH
    else:
        sizes = NEAR_LARGE_HALF_WIDTH if near_large and rng.random() < near_large else BIG_HALF_WIDTH
    scale = rng.uniform(*sizes) / SIZES["large"]
    margin = min(IMAGE_SIZE // 2 - 1, math.ceil(SIZES["large"] * scale * 1.1) + 1)
    x, y = rng.randint(margin, IMAGE_SIZE - 1 - margin), rng.randint(margin, IMAGE_SIZE - 1 - margin)
    obj = ShapeObject(colour or rng.choice(tuple(COLOURS)), shape or rng.choice(SHAPES), "large", x, y)
    return Scene((obj,)), scale


def sample_big_style(rng: random.Random, scale: float, habits: DrawingHabits = AS_STAGE_4) -> DrawnStyle:
    """A big object as people draw it (stage 4's styles, a tinted fill besides, crosses with arms
    thin to stout), or one time in three as the world renders (its grey ground, flat fill, 64
    pixels): the model must read big shapes on its own backgrounds too. With chance
    `habits.hand_big`, a drawn one is stroked by hand (`hand_style`)."""
    if rng.random() < 1 / 3:
        return world_render_style(scale, rng.uniform(*BIG_ARMS))
    style = sample_style(rng)
    style = replace(style, scale=scale, fill=rng.choice(BIG_FILLS), arm=rng.uniform(*BIG_ARMS), wash=rng.uniform(0.3, 0.7))
    hand = habits.hand_big
    style = hand_style(rng, style, dense_hatching=habits.dense_hatching) if hand and rng.random() < hand else style
    return inked(rng, style, habits.ink_variety)


def world_render_style(scale: float, arm: float = 0.4) -> DrawnStyle:
    """A shape as the world renders it (its grey ground, a flat fill, 64 pixels), `scale` times the
    world's size: a third of stage 6's big objects, so that big shapes are read on the model's own
    backgrounds too, and `bench_between_sizes`'s flat drawings."""
    return DrawnStyle(IMAGE_SIZE, IMAGE_SIZE, BACKGROUND, "filled", 1.0, False, scale, 0.0, None, 18, arm)


def inked(rng: random.Random, style: DrawnStyle, share: float) -> DrawnStyle:
    """With chance `share`, the style in an ink far from the world's six: paler (two times in three,
    up to `PALEST_INK` of the way to the paper) or darker (to `DARKEST_INK`), its hue moved by a
    channel jitter of up to `INK_HUE_JITTER`. Still the colour its name says, as a person would
    call it. At share 0 it takes nothing from the random stream."""
    if not share or rng.random() >= share:
        return style
    ink = rng.uniform(0.15, PALEST_INK) if rng.random() < 2 / 3 else -rng.uniform(0.1, 1 - DARKEST_INK)
    return replace(style, ink=ink, colour_jitter=max(style.colour_jitter, rng.randint(25, INK_HUE_JITTER)))


def hand_style(rng: random.Random, style: DrawnStyle, most_warp: float = 0.12, dense_hatching: float = 0.0) -> DrawnStyle:
    """The style stroked by hand: hatched, solid, washed or bare, its outline's strokes running
    past their corners (or, one time in four, closed), a solid fill under a darker rim half the
    time, its outline bent by a hand's drift (up to `most_warp` of the half-width) seven times in
    ten; with chance `dense_hatching`, a hatched fill `DENSE_HATCH_GAP` strokes apart."""
    style = replace(
        style,
        fill=rng.choice(HAND_FILLS),
        overshoot=rng.uniform(0.05, 0.25) if rng.random() < 0.75 else 0.0,
        rim=rng.uniform(0.55, 0.85) if rng.random() < 0.5 else None,
        warp=rng.uniform(0.03, most_warp) if rng.random() < 0.7 else 0.0,
    )
    if dense_hatching and style.fill == "hatched" and rng.random() < dense_hatching:
        style = replace(style, hatch_gap=rng.uniform(*DENSE_HATCH_GAP))
    return style


def world_size_style(rng: random.Random, habits: DrawingHabits) -> DrawnStyle | None:
    """A drawing's style at the world's sizes: with chance `habits.hand_world` stroked by hand and
    bent by up to `WORLD_SIZE_WARP`, with chance `habits.world_arms` its crosses' arms as a big
    cross's and with chance `habits.fine_pens` a fine pen (the other program's crosses at a tenth
    of the canvas, thin-armed and finely outlined, were read as circles and squares); else stage
    4's: None, which `render_drawn` samples itself, or with `habits.ink_variety` on, stage 4's
    style sampled here, inked with that chance (`inked`).
    With those shares 0 it takes nothing from the random stream, so that runs without them draw
    as before."""
    hand = habits.hand_world
    if hand and rng.random() < hand:
        style = hand_style(rng, sample_style(rng), WORLD_SIZE_WARP, habits.dense_hatching)
        if habits.world_arms and rng.random() < habits.world_arms:
            style = replace(style, arm=rng.uniform(*BIG_ARMS))
        if habits.fine_pens and rng.random() < habits.fine_pens:
            style = replace(style, stroke=rng.uniform(*FINE_PEN))
    elif habits.ink_variety:  # sample_style draws first, as render_drawn would without a style
        style = sample_style(rng)
    else:
        return None
    return inked(rng, style, habits.ink_variety)


def render_big(
    rng: random.Random, colour: str | None = None, shape: str | None = None, habits: DrawingHabits = AS_STAGE_4
) -> tuple[Scene, Picture]:
    """A scene of one big object and its picture (stage 6); `habits`: see `DrawingHabits`."""
    scene, scale = sample_big_scene(rng, colour, shape, habits.near_large, habits.between_sizes)
    return scene, render_drawn(scene, rng, sample_big_style(rng, scale, habits))
