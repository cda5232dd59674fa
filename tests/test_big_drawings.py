"""Stage 6 of the teaching recipe and its check: objects drawn big for training (`drawn.render_big`),
big drawings by a program of their own for the evaluation (`bigdrawings`), and the stage's wiring,
run for a few steps on a tiny model."""

from __future__ import annotations

import ast
import inspect
import json
import random
from dataclasses import replace

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from sav_explorer.teaching import train as train_module
from sav_explorer.teaching.batches import BIG_KINDS, picture, qa_batch
from sav_explorer.teaching.bigdrawings import FILLS, RADIUS_BANDS, draw_big
from sav_explorer.teaching.build import build_config, build_processor
from sav_explorer.teaching.drawn import (
    BETWEEN_HALF_WIDTH,
    BIG_ARMS,
    BIG_HALF_WIDTH,
    DARKEST_INK,
    DENSE_HATCH_GAP,
    FINE_PEN,
    HAND_FILLS,
    INK_HUE_JITTER,
    NEAR_LARGE_HALF_WIDTH,
    PALEST_INK,
    WORLD_SIZE_WARP,
    DrawingHabits,
    DrawnStyle,
    render_big,
    render_drawn,
    sample_big_scene,
    sample_big_style,
    world_size_style,
)
from sav_explorer.teaching.evaluate import big_drawings_for
from sav_explorer.teaching.mix import mix_folders
from sav_explorer.teaching.recipe import REREADING_WEIGHTS, TrainConfig
from sav_explorer.teaching.shapes import BACKGROUND, COLOURS, IMAGE_SIZE, SHAPES, SIZES, Scene, ShapeObject, ShapesWorld
from sav_explorer.teaching.sharpen import sharpen_folder, sharpen_patch_kernel
from sav_explorer.teaching.stages import enlarging_batch
from sav_explorer.teaching.train import STAGES, train


def ink_box(image: Image.Image) -> tuple[int, int, int, int]:
    return image.convert("L").point(lambda v: 255 if v < 200 else 0).getbbox()


def dark_pixels(image: Image.Image) -> int:
    """The ink a drawing leaves: its pixels darker than light grey."""
    return sum(v < 200 for v in image.convert("L").getdata())


@pytest.mark.parametrize("radius", RADIUS_BANDS)
def test_a_big_drawing_reaches_its_radius_as_a_share_of_the_canvas_width(radius):
    for i, shape in enumerate(("circle", "square", "cross")):
        image = draw_big(random.Random(f"{radius}-{i}"), shape, radius, COLOURS["blue"], "solid")
        left, top, right, bottom = ink_box(image)
        reach = (right - left) / 2 / image.width
        assert 0.75 * radius <= reach <= 1.15 * radius, (shape, radius, reach)
        assert right <= image.width and bottom <= image.height  # the whole shape is on the canvas


def test_another_seed_draws_other_big_drawings_of_the_same_kinds():
    """`evaluate --big-seed` checks a model on fresh drawings: the same labels, other pictures."""
    first, again, fresh = (big_drawings_for("shape", 0.2, 2, seed) for seed in ("big", "big", "fresh"))
    assert [r.label for r in first] == [r.label for r in fresh] == [shape for shape in SHAPES for _ in range(2)]
    assert all(a.images[0].tobytes() == b.images[0].tobytes() for a, b in zip(first, again))
    assert not any(a.images[0].tobytes() == b.images[0].tobytes() for a, b in zip(first, fresh))


@pytest.mark.parametrize("task", ["shape", "colour"])
def test_more_big_drawings_a_band_keep_the_fewer_drawn_before(task):
    """Raising the drawings per class (8 to 24 for shapes) adds drawings and changes none: the
    figures measured on 32 a band are a part of those on 96, not another sample."""
    fewer, more = (big_drawings_for(task, 0.1, n) for n in (2, 5))
    per_label = {label: [r for r in more if r.label == label] for label in {r.label for r in more}}
    kept = [row for label in dict.fromkeys(r.label for r in fewer) for row in per_label[label][:2]]
    assert [r.label for r in kept] == [r.label for r in fewer]
    assert all(a.images[0].tobytes() == b.images[0].tobytes() for a, b in zip(fewer, kept))


def test_big_drawings_are_seeded_and_every_fill_leaves_ink():
    for fill in FILLS:
        first = draw_big(random.Random(3), "triangle", 0.33, COLOURS["green"], fill)
        again = draw_big(random.Random(3), "triangle", 0.33, COLOURS["green"], fill)
        assert first.tobytes() == again.tobytes()
        assert ink_box(first) is not None
    solid, hollow = (draw_big(random.Random(5), "circle", 0.4, COLOURS["red"], f) for f in ("solid", "outline"))
    assert dark_pixels(solid) > 2 * dark_pixels(hollow)  # a solid shape covers far more of the canvas than its outline


def test_objects_drawn_big_for_training_are_large_one_object_scenes_that_fit_the_image():
    seen_halves = []
    for seed in range(60):
        scene, picture = render_big(random.Random(seed))
        (obj,) = scene.objects
        assert obj.size == "large" and obj.shape in SHAPES and obj.colour in COLOURS
        box = picture.index_map.getbbox()
        assert box is not None
        seen_halves.append(max(box[2] - box[0], box[3] - box[1]) / 2)
        assert picture.drawn and picture.index_map.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert min(seen_halves) < SIZES["large"] + 2 and max(seen_halves) > 0.85 * BIG_HALF_WIDTH[1], seen_halves


def test_big_crosses_for_training_have_arms_from_thin_to_stout():
    """A cross's filled share of its box is 2a - a² for arms a × its half-width: 0.64 at stage 4's
    a = 0.4; stage 6 draws them from 0.25 (0.44) to 0.45 (0.70), so a cross is told by its notches."""
    shares = []
    for seed in range(40):
        _, picture = render_big(random.Random(seed), shape="cross")
        box = picture.index_map.getbbox()
        filled = sum(1 for v in picture.index_map.crop(box).getdata() if v)
        shares.append(filled / ((box[2] - box[0]) * (box[3] - box[1])))
    arms = [1 - (1 - share) ** 0.5 for share in shares]  # a from 2a - a²
    assert min(arms) < BIG_ARMS[0] + 0.06 and max(arms) > BIG_ARMS[1] - 0.06, arms


def test_a_tinted_fill_is_a_pale_wash_of_the_colour_under_its_full_outline():
    style = DrawnStyle(256, 256, (255, 255, 255), "tinted", 2.0, True, 2.5, 0.0, None, 0, wash=0.5)
    scene = Scene((ShapeObject("blue", "square", "large", 32, 32),))
    image = render_drawn(scene, random.Random(0), style).image
    blue, centre, corner = COLOURS["blue"], image.getpixel((128, 128)), image.getpixel((2, 2))
    assert corner == (255, 255, 255)
    assert all(abs(c - (b + 255) / 2) <= 2 for c, b in zip(centre, blue)), centre  # halfway to the paper
    edge = image.getpixel((128, 128 - round(0.85 * SIZES["large"] * 2.5 * 4)))  # the outline, on the top side
    assert sum(abs(c - b) for c, b in zip(edge, blue)) < sum(abs(c - b) for c, b in zip(centre, blue)), (edge, centre)


def big_square(fill: str, overshoot: float = 0.0, rim: float | None = None) -> Image.Image:
    """A blue square of half-width 25 canvas pixels (85 % of 2.5 × the world's large, 4 pixels a
    scene pixel) at the centre of a white 256-pixel canvas, with a 2-pixel pen."""
    style = DrawnStyle(256, 256, (255, 255, 255), fill, 0.5, False, 2.5, 0.0, None, 0, overshoot=overshoot, rim=rim)
    return render_drawn(Scene((ShapeObject("blue", "square", "large", 32, 32),)), random.Random(0), style).image


def test_a_hand_stroked_outline_runs_past_its_corners_and_a_closed_one_does_not():
    corner = 128 - round(0.85 * SIZES["large"] * 2.5 * 4)  # the square's top-left corner, canvas pixels
    closed, stroked = ink_box(big_square("outline")), ink_box(big_square("outline", overshoot=0.25))
    assert closed[0] >= corner - 2 and closed[1] >= corner - 2
    assert stroked[0] < corner - 3 or stroked[1] < corner - 3, (stroked, corner)  # a stroke sticks out beyond a corner
    assert stroked[0] >= corner - 0.25 * 100 - 2 and stroked[1] >= corner - 0.25 * 100 - 2  # by at most the overshoot


def test_a_hatched_fill_is_parallel_lines_inside_the_shape_under_its_outline():
    hatched, solid, bare = (big_square(fill).convert("L") for fill in ("hatched", "filled", "outline"))
    inked = [dark_pixels(image) for image in (hatched, solid, bare)]
    assert inked[2] < inked[0] < inked[1], inked  # more ink than the outline alone, less than a solid fill
    assert ink_box(hatched) == ink_box(bare)  # kept inside the outline
    row = [hatched.getpixel((x, 128)) < 200 for x in range(110, 146)]
    assert 2 <= sum(a != b for a, b in zip(row, row[1:])), row  # a line across the middle crosses the strokes


def test_a_warped_outline_bends_its_sides_by_at_most_its_reach():
    """A hand's drift bends a square's straight sides: its map (where the object is) moves off the
    straight square's edges, by no more than the warp's share of the half-width."""
    scene = Scene((ShapeObject("blue", "square", "large", 32, 32),))
    maps = [
        render_drawn(
            scene, random.Random(seed), DrawnStyle(256, 256, (255, 255, 255), "filled", 0.5, False, 2.5, 0.0, None, 0, warp=warp)
        ).index_map
        for seed, warp in ((0, 0.0), (0, 0.12), (1, 0.12))
    ]
    straight, *bent = ([v > 0 for v in m.getdata()] for m in maps)
    half = 0.85 * SIZES["large"] * 2.5  # in the map's 64 pixels
    for cells in bent:
        changed = sum(a != b for a, b in zip(straight, cells))
        assert changed > 0.03 * sum(straight), changed  # the sides are bent, not the same square
        assert changed < 4 * (2 * half) * (0.12 * 2.5 * SIZES["large"] + 1), changed  # within the reach of the warp
    assert bent[0] != bent[1]  # each drawing bent its own way


def test_a_solid_fill_may_have_a_darker_rim():
    plain, rimmed = big_square("filled"), big_square("filled", rim=0.6)
    edge, centre = (round(128 - 0.85 * SIZES["large"] * 10), 128), (128, 128)
    assert plain.getpixel(edge) == plain.getpixel(centre) == rimmed.getpixel(centre) == COLOURS["blue"]
    assert sum(rimmed.getpixel(edge)) < sum(COLOURS["blue"]), rimmed.getpixel(edge)


def test_hand_strokes_are_a_share_of_stage_6s_drawings_and_none_without_them():
    styles = [sample_big_style(random.Random(seed), 2.0, DrawingHabits(hand_big=1.0)) for seed in range(200)]
    as_the_world = [s for s in styles if (s.width, s.height, s.background) == (IMAGE_SIZE, IMAGE_SIZE, BACKGROUND)]
    hand = [s for s in styles if s.fill == "hatched" or s.overshoot or s.rim is not None]
    assert {s.fill for s in hand} == set(HAND_FILLS) and len(hand) > len(styles) / 2
    assert any(s.overshoot for s in hand) and any(s.rim is not None for s in hand)
    assert as_the_world and not set(map(id, as_the_world)) & set(map(id, hand))  # the world's renders stay its own
    plain = [sample_big_style(random.Random(seed), 2.0) for seed in range(200)]
    assert not any(s.fill == "hatched" or s.overshoot or s.rim is not None for s in plain)


def test_drawings_at_the_worlds_sizes_may_be_stroked_by_hand_bent_more_than_big_ones():
    """`--hand-world-size`: a small shape drawn by hand bends by more of its size (up to a fifth)
    than a big one, at the world's sizes (small stays smaller than large); without it, stage 4's
    drawings, from the same random stream."""
    styles = [world_size_style(random.Random(seed), DrawingHabits(hand_world=1.0)) for seed in range(200)]
    assert {s.fill for s in styles} == set(HAND_FILLS)
    assert 0.12 < max(s.warp for s in styles) <= WORLD_SIZE_WARP and any(s.overshoot for s in styles)
    assert all(0.8 <= s.scale <= 1.2 for s in styles)
    rng, untouched = random.Random(3), random.Random(3)
    assert world_size_style(rng, DrawingHabits()) is None and rng.random() == untouched.random()
    processor, world = build_processor(), ShapesWorld()
    batch = qa_batch(processor, world, random.Random(2), 16, REREADING_WEIGHTS, 1.0, habits=DrawingHabits(hand_world=1.0))
    plain = qa_batch(processor, world, random.Random(2), 16, REREADING_WEIGHTS, 1.0)
    assert batch.kinds == plain.kinds and not torch.equal(batch.inputs["pixel_values"], plain.inputs["pixel_values"])


def assert_draws_at_the_worlds_sizes_as_without_it(**habit_at_0) -> None:
    """A stage-6 habit at 0 draws the hand-stroked drawings at the world's sizes as before, from the
    same random stream, so that earlier runs draw as they did."""
    for seed in range(4):
        rng, untouched = random.Random(seed), random.Random(seed)
        assert world_size_style(rng, DrawingHabits(hand_world=1.0)) == world_size_style(
            untouched, DrawingHabits(hand_world=1.0, **habit_at_0)
        )
        assert rng.random() == untouched.random()


def test_world_arms_draws_hand_drawn_crosses_at_the_worlds_sizes_thin_to_stout_and_nothing_without_it():
    """`--world-arms`: at a tenth of the canvas the other program's crosses, their arms 0.28 to 0.4
    of the half-width, were read as circles and squares; stage 4 drew every cross at the world's
    sizes with arms of 0.4. A share of the hand-stroked drawings at the world's sizes takes a big
    cross's arms (`BIG_ARMS`), and a thin-armed cross leaves less ink; without it, the stream is as before."""
    styles = [world_size_style(random.Random(seed), DrawingHabits(hand_world=1.0, world_arms=0.5)) for seed in range(400)]
    varied = [s.arm for s in styles if s.arm != 0.4]
    assert 0.35 * len(styles) < len(varied) < 0.65 * len(styles)
    assert all(BIG_ARMS[0] <= arm <= BIG_ARMS[1] for arm in varied)
    assert min(varied) < BIG_ARMS[0] + 0.03 and max(varied) > BIG_ARMS[1] - 0.03, varied
    stage_4 = [world_size_style(random.Random(seed), DrawingHabits(world_arms=1.0)) for seed in range(50)]
    assert stage_4 == [None] * 50  # not stroked by hand: stage 4's drawing, arms and all
    assert_draws_at_the_worlds_sizes_as_without_it(world_arms=0.0)
    scene = Scene((ShapeObject("blue", "cross", "large", 32, 32),))
    style = DrawnStyle(256, 256, (255, 255, 255), "filled", 2.0, False, 1.0, 0.0, None, 0)
    thin, stout = (render_drawn(scene, random.Random(0), replace(style, arm=arm)).image for arm in BIG_ARMS)
    assert dark_pixels(thin) < 0.8 * dark_pixels(stout)
    habits = TrainConfig(hand_world_size=1.0, world_arms=0.7).drawing_habits()
    assert habits.world_arms == 0.7 and habits.hand_world == 1.0


def test_fine_pens_draw_a_share_of_hand_drawn_shapes_at_the_worlds_sizes_finer_and_nothing_without_it():
    """`--fine-pens`: stage 4's pens (1 to 4 scene pixels) fill a small shape into a blob, where the
    other program outlines one at a tenth of the canvas 1 to 1.6 pixels wide. A share of the
    hand-stroked drawings at the world's sizes takes a fine pen, which leaves a thinner line;
    without it, the stream is as before."""
    styles = [world_size_style(random.Random(seed), DrawingHabits(hand_world=1.0, fine_pens=0.5)) for seed in range(400)]
    finer_than_stage_4 = [s.stroke for s in styles if s.stroke < 1.0]  # stage 4's pens start at 1: only fine ones below
    expected = 0.5 * (1.0 - FINE_PEN[0]) / (FINE_PEN[1] - FINE_PEN[0]) * len(styles)  # half the drawings, two thirds of their range
    assert 0.7 * expected < len(finer_than_stage_4) < 1.3 * expected
    assert min(finer_than_stage_4) < FINE_PEN[0] + 0.05 and all(s.stroke >= FINE_PEN[0] for s in styles)
    assert_draws_at_the_worlds_sizes_as_without_it(fine_pens=0.0)
    scene = Scene((ShapeObject("blue", "square", "small", 32, 32),))
    style = DrawnStyle(320, 320, (255, 255, 255), "outline", 3.0, False, 1.0, 0.0, None, 0)
    thick, fine_line = (render_drawn(scene, random.Random(0), replace(style, stroke=pen)).image for pen in (3.0, FINE_PEN[0]))
    assert dark_pixels(fine_line) < 0.5 * dark_pixels(thick)
    assert TrainConfig(fine_pens=0.4).drawing_habits().fine_pens == 0.4


def test_dense_hatching_draws_a_share_of_hand_hatched_fills_closer_and_nothing_without_it():
    """`--dense-hatching`: hatched squares drawn as densely as a pen fills in were read as circles.
    The share is of the hand-stroked hatched fills; a dense one leaves more ink than a sparse one."""
    styles = [world_size_style(random.Random(seed), DrawingHabits(hand_world=1.0, dense_hatching=0.5)) for seed in range(400)]
    hatched = [s for s in styles if s.fill == "hatched"]
    dense = [s for s in hatched if s.hatch_gap]
    assert 0.3 * len(hatched) < len(dense) < 0.7 * len(hatched)
    assert all(DENSE_HATCH_GAP[0] <= s.hatch_gap <= DENSE_HATCH_GAP[1] for s in dense)
    assert not any(s.hatch_gap for s in styles if s.fill != "hatched")
    for seed in range(4):
        rng, untouched = random.Random(seed), random.Random(seed)
        plain = sample_big_style(rng, 2.0, DrawingHabits(hand_big=1.0))
        assert sample_big_style(untouched, 2.0, DrawingHabits(hand_big=1.0, dense_hatching=0.0)) == plain
        assert rng.random() == untouched.random()  # without it, the stream is what it was
    scene = Scene((ShapeObject("blue", "square", "large", 32, 32),))
    style = DrawnStyle(256, 256, (255, 255, 255), "hatched", 2.5, False, 2.5, 0.0, None, 0)
    sparse, close = (render_drawn(scene, random.Random(0), replace(style, hatch_gap=gap)).image for gap in (0.0, 1.0))
    assert dark_pixels(close) > 1.3 * dark_pixels(sparse)


def test_ink_variety_draws_a_share_of_drawings_paler_or_darker_in_the_colour_their_name_says():
    """`--ink-variety`: a thin pale-teal circle was read as a square and a dark hatched square as a
    circle, both read right in red. A share of big drawings and of drawings at the world's sizes
    is inked paler (most) or darker, its hue jittered further; without it, the stream is as before."""
    habits = DrawingHabits(ink_variety=0.5)
    big = [sample_big_style(random.Random(seed), 2.0, habits) for seed in range(600)]
    drawn = [s for s in big if s.background != BACKGROUND or s.fill != "filled" or s.width != IMAGE_SIZE]  # not the world's render
    inked = [s for s in drawn if s.ink]
    assert 0.35 * len(drawn) < len(inked) < 0.65 * len(drawn)
    assert all(0 < s.ink <= PALEST_INK or -(1 - DARKEST_INK) <= s.ink < 0 for s in inked)
    assert 0.5 * len(inked) < sum(s.ink > 0 for s in inked) < 0.8 * len(inked)  # paler two times in three
    assert all(25 <= s.colour_jitter <= INK_HUE_JITTER for s in inked)
    world_size = [world_size_style(random.Random(seed), habits) for seed in range(200)]
    assert all(s is not None for s in world_size) and 0.3 * 200 < sum(bool(s.ink) for s in world_size) < 0.7 * 200
    for seed in range(4):
        rng, untouched = random.Random(seed), random.Random(seed)
        assert sample_big_style(rng, 2.0, DrawingHabits(hand_big=0.5)) == sample_big_style(
            untouched, 2.0, DrawingHabits(hand_big=0.5, ink_variety=0.0)
        )
        assert rng.random() == untouched.random()
    scene = Scene((ShapeObject("red", "square", "large", 32, 32),))
    style = DrawnStyle(128, 128, (255, 255, 255), "filled", 2.0, False, 1.0, 0.0, None, 0)
    centre = {ink: render_drawn(scene, random.Random(0), replace(style, ink=ink)).image.getpixel((64, 64)) for ink in (0.0, 0.5, -0.3)}
    assert centre[0.0] == COLOURS["red"] and centre[0.5] == (238, 148, 148) and centre[-0.3] == (154, 28, 28)
    red, green, blue = centre[0.5]
    assert red > green and red > blue  # paler, still red


def test_near_large_draws_a_share_of_big_objects_between_the_worlds_large_and_a_quarter_of_the_image():
    """`--near-large`: the sizes where plain crosses were read as squares while bigger ones were read right."""
    scales = [sample_big_scene(random.Random(seed), near_large=0.5)[1] * SIZES["large"] for seed in range(400)]
    near = [s for s in scales if s <= NEAR_LARGE_HALF_WIDTH[1]]
    assert all(BIG_HALF_WIDTH[0] <= s <= BIG_HALF_WIDTH[1] for s in scales)
    assert 0.55 * len(scales) < len(near) < 0.8 * len(scales)  # half of them, and a third of the rest
    rng, untouched = random.Random(5), random.Random(5)
    assert sample_big_scene(rng) == sample_big_scene(untouched, near_large=0.0) and rng.random() == untouched.random()


def test_between_sizes_draws_a_share_of_big_objects_between_the_worlds_small_and_large():
    """`--between-sizes`: half-widths 6.5 to 8, which no stage drew, all "large", and none as
    small as the largest drawn small object (the world's 5, drawn at most 1.2 times as big)."""
    drawn = [sample_big_scene(random.Random(seed), between_sizes=0.3) for seed in range(400)]
    halves = [scale * SIZES["large"] for _, scale in drawn]
    between = [h for h in halves if h < BIG_HALF_WIDTH[0]]
    assert all(BETWEEN_HALF_WIDTH[0] <= h <= BIG_HALF_WIDTH[1] for h in halves)
    assert 0.2 * len(halves) < len(between) < 0.4 * len(halves)
    assert BETWEEN_HALF_WIDTH[0] > 1.2 * SIZES["small"] and all(scene.objects[0].size == "large" for scene, _ in drawn)
    rng, untouched = random.Random(5), random.Random(5)
    assert sample_big_scene(rng) == sample_big_scene(untouched, between_sizes=0.0) and rng.random() == untouched.random()
    scene, picture = render_big(random.Random(2), habits=DrawingHabits(between_sizes=1.0))
    box = picture.index_map.getbbox()  # the object as drawn, in scene pixels: about 13 to 16 across
    assert 2 * BETWEEN_HALF_WIDTH[0] - 4 <= max(box[2] - box[0], box[3] - box[1]) <= 2 * BETWEEN_HALF_WIDTH[1] + 4, box


def test_a_batch_with_every_question_about_one_big_object_asks_only_the_kinds_that_allow_it():
    processor, world = build_processor(), ShapesWorld()
    batch = qa_batch(processor, world, random.Random(0), 48, REREADING_WEIGHTS, 0.5, 0.6, big_share=1.0)
    for kind, scene in zip(batch.kinds, batch.scenes):
        if kind in BIG_KINDS:
            assert len(scene.objects) == 1 and scene.objects[0].size == "large"
    big = [m for k, m in zip(batch.kinds, batch.index_maps) if k in BIG_KINDS]
    assert big and max(max(b[2] - b[0], b[3] - b[1]) for b in (m.getbbox() for m in big)) > 2 * SIZES["large"] + 4


def test_without_big_drawings_a_batch_is_what_it_was_before_stage_6():
    """Stages 2 to 5 draw from the same random stream as before: `big_share` = 0 takes nothing from it."""
    processor, world = build_processor(), ShapesWorld()
    plain = qa_batch(processor, world, random.Random(1), 8, REREADING_WEIGHTS, 0.5, 0.6)
    again = qa_batch(processor, world, random.Random(1), 8, REREADING_WEIGHTS, 0.5, 0.6, big_share=0.0, habits=DrawingHabits())
    assert plain.questions == again.questions and torch.equal(plain.inputs["pixel_values"], again.inputs["pixel_values"])


def test_stage_6s_tower_is_taught_world_sized_hand_drawings_only_when_asked():
    """`--taught-world-drawings`: a share of the tower's images that are not big is drawn at the
    world's sizes by hand, and those rows, as the big ones, are taught by the probes and not held
    by the anchor, which never saw such drawings. At 0 the batch is stage 6's as it was: big
    objects and the world's scenes, rendered or drawn in stage 4's style, all of them held."""
    world = ShapesWorld()
    settings = {"big_share": 0.4, "hand_strokes": 1.0, "hand_world_size": 1.0, "vision_batch": 64}
    cfg = TrainConfig(**settings)
    scenes, pictures, big, taught = enlarging_batch(world, random.Random(3), cfg)
    assert taught == big and 15 < sum(big) < 40
    rng = random.Random(3)  # the loop stage 6 ran before the option, from the same stream
    for scene, drawing, is_big in zip(scenes, pictures, big):
        assert (rng.random() < cfg.big_share) == is_big
        if is_big:
            expected_scene, expected = render_big(rng, habits=cfg.drawing_habits())
        else:
            expected_scene = world.sample_scene(rng)
            expected = picture(world, expected_scene, rng, cfg.drawn_share)
        assert scene == expected_scene and drawing.image.tobytes() == expected.image.tobytes()

    scenes, pictures, big, taught = enlarging_batch(world, random.Random(3), TrainConfig(**settings, taught_world_drawings=1.0))
    assert all(taught) and 15 < sum(big) < 40
    world_sized = [(s, p) for s, p, b in zip(scenes, pictures, big) if not b]
    assert all(p.drawn for _, p in world_sized)
    assert all(o.size in ("small", "large") for s, _ in world_sized for o in s.objects)
    assert max(len(s.objects) for s, _ in world_sized) > 1  # the world's scenes, not single objects


def test_the_big_drawings_are_drawn_by_a_program_the_training_never_imports():
    from sav_explorer.teaching import batches, drawn, probes, recipe, stages, targets
    from sav_explorer.teaching import train as training

    for module in (training, stages, recipe, batches, targets, probes, drawn):
        imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(module))) if isinstance(node, ast.ImportFrom)}
        assert not any(name and name.endswith("bigdrawings") for name in imported), module.__name__


def tiny_checkpoint_before(stage: str, folder) -> LlavaForConditionalGeneration:
    """A tiny model saved in `folder` as `train --checkpoints` would save it just before `stage`,
    its log listing every stage before as done; returned, so that a test can compare with it."""
    processor = build_processor()
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(build_config(processor.tokenizer, text_layers=3, text_heads=8, width=64))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    done = [{"stage": name, "steps": 0, "seconds": 0, "history": []} for name in STAGES[: STAGES.index(stage)]]
    (folder / "training_log.json").write_text(json.dumps({"stages": done}))
    return model


def test_stage_6_resumes_a_model_of_the_five_stages_and_logs_both_parts(tmp_path):
    """A few steps of each part on a tiny model: the tower learns with its anchor, the decoder alone
    after it, and the log records the two parts after the five stages before them."""
    before = tmp_path / "stage5"
    model = tiny_checkpoint_before("enlarging", before)
    cfg = TrainConfig(
        enlarging_steps=2,
        rereading_steps=2,
        vision_batch=8,
        batch=4,
        warmup=1,
        threads=1,
        hand_strokes=1.0,
        hand_world_size=1.0,
        enlarging_reads=1.0,
        reads_world_size=0.5,
        dense_hatching=1.0,
        near_large=0.5,
        ink_variety=0.5,
        between_sizes=0.3,
        taught_world_drawings=0.5,
    )
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    train(tmp_path / "stage6", cfg, resume=before)
    log = json.loads((tmp_path / "stage6" / "training_log.json").read_text())
    assert [s["stage"] for s in log["stages"]] == list(STAGES) and STAGES[-2:] == ("enlarging", "rereading")
    assert "anchor" in log["stages"][-2]["history"][-1]
    assert log["config"]["dense_hatching"] == 1.0 and log["config"]["near_large"] == 0.5  # the habits are in the record
    assert log["config"]["ink_variety"] == 0.5 and log["config"]["between_sizes"] == 0.3
    assert log["config"]["taught_world_drawings"] == 0.5
    trained = LlavaForConditionalGeneration.from_pretrained(tmp_path / "stage6")
    assert any(not torch.equal(tower_before[k], v) for k, v in trained.model.vision_tower.state_dict().items())


def test_rereading_presence_weighs_presence_questions_in_stage_6s_second_part_only(tmp_path, monkeypatch):
    """`--rereading-presence`: the decoder's part of stage 6 cost a presence question or two; a
    heavier presence weight there keeps them. The option reaches that part's weights, and no other
    kind's weight moves."""
    assert TrainConfig().rereading_weights() == REREADING_WEIGHTS
    heavier = TrainConfig(rereading_presence=6.0).rereading_weights()
    assert heavier == {**REREADING_WEIGHTS, "presence": 6.0} and REREADING_WEIGHTS["presence"] == 3.0
    before = tmp_path / "after-enlarging"
    tiny_checkpoint_before("rereading", before)
    seen = []

    def answering(name, model, probe, processor, world, rng, cfg, steps, weights, lr, *args, **kwargs):
        seen.append((name, weights))
        return {"stage": name, "steps": 0, "seconds": 0, "history": []}

    monkeypatch.setattr(train_module, "train_answering", answering)
    train(tmp_path / "out", TrainConfig(rereading_presence=6.0, threads=1), resume=before)
    assert seen == [("rereading", heavier)]
    assert json.loads((tmp_path / "out" / "training_log.json").read_text())["config"]["rereading_presence"] == 6.0


def test_a_sharpened_patch_kernel_reads_an_image_as_the_old_kernel_reads_its_block_averages():
    torch.manual_seed(0)
    kernel, image = torch.randn(6, 3, 8, 8), torch.randn(2, 3, 32, 32)
    sharp = sharpen_patch_kernel(kernel, 2)
    assert sharp.shape == (6, 3, 16, 16)
    read = torch.nn.functional.conv2d(image, sharp, stride=16)
    torch.testing.assert_close(read, torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(image, 2), kernel, stride=8))


def test_a_sharpened_model_reads_twice_the_pixels_with_the_same_tokens_and_answers_as_it_did(tmp_path):
    """Same prompt, same image tokens; on any 128-pixel image the sharpened model's logits are the
    old model's on that image's 2 x 2 block averages, so stage 6 starts from the model it had."""
    model = tiny_checkpoint_before("enlarging", tmp_path / "before").eval()
    sharpen_folder(tmp_path / "before", 2, tmp_path / "sharp")
    sharp = LlavaForConditionalGeneration.from_pretrained(tmp_path / "sharp").eval()
    scene = ShapesWorld().render(ShapesWorld().sample_scene(random.Random(1), n_objects=2), random.Random(1))
    prompt = "user : <image> what colour is the circle ? assistant :"
    inputs = AutoProcessor.from_pretrained(tmp_path / "sharp")(images=[scene], text=[prompt], return_tensors="pt")
    before = build_processor()(images=[scene], text=[prompt], return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (128, 128) and before["pixel_values"].shape[-2:] == (64, 64)
    assert torch.equal(inputs["input_ids"], before["input_ids"])
    with torch.no_grad():
        logits = sharp(**inputs).logits
        blocks = torch.nn.functional.avg_pool2d(inputs["pixel_values"], 2)
        as_before = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=blocks).logits
    torch.testing.assert_close(logits, as_before, atol=1e-4, rtol=1e-4)
    log = json.loads((tmp_path / "sharp" / "training_log.json").read_text())
    assert log["sharpened"]["factor"] == 2 and [s["stage"] for s in log["stages"]] == list(STAGES[: STAGES.index("enlarging")])


def test_stage_6_resumes_a_sharpened_model_with_a_processor_that_reads_its_pixels(tmp_path):
    tiny_checkpoint_before("enlarging", tmp_path / "before")
    sharpen_folder(tmp_path / "before", 2, tmp_path / "sharp")
    cfg = TrainConfig(enlarging_steps=1, rereading_steps=1, vision_batch=4, batch=2, warmup=1, threads=1)
    train(tmp_path / "stage6", cfg, resume=tmp_path / "sharp")
    saved = json.loads((tmp_path / "stage6" / "processor_config.json").read_text())
    assert saved["image_processor"]["size"] == {"height": 128, "width": 128} and saved["patch_size"] == 16
    assert LlavaForConditionalGeneration.from_pretrained(tmp_path / "stage6").config.vision_config.image_size == 128
    assert json.loads((tmp_path / "stage6" / "training_log.json").read_text())["sharpened"]["factor"] == 2


def test_a_mix_of_sharpened_runs_keeps_the_record_of_the_sharpening(tmp_path):
    tiny_checkpoint_before("enlarging", tmp_path / "before")
    sharpen_folder(tmp_path / "before", 2, tmp_path / "sharp")
    mix_folders(tmp_path / "sharp", tmp_path / "sharp", 0.5, tmp_path / "mixed")
    assert json.loads((tmp_path / "mixed" / "training_log.json").read_text())["sharpened"]["factor"] == 2
