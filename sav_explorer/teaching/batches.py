"""What the model is shown in training: the scenes' pictures and batches of questions and answers.

`picture` renders a scene or, with a chance, draws it as people draw (`drawn`); `qa_batch` makes
the model inputs with labels on the answers. Both draw from the stage's seeded `random.Random`,
so a stage sees the same images and questions on every run. The targets each stage is taught
from these are in `targets`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw
from transformers import LlavaProcessor

from ..models import build_prompt
from .drawn import AS_STAGE_4, DrawingHabits, Picture, render_big, render_drawn, world_size_style
from .shapes import IMAGE_SIZE, QUESTION_KINDS, Scene, ShapesWorld, draw_shape


def index_map(scene: Scene) -> Image.Image:
    """Which object covers which pixel of the world's own render: object i has value i + 1."""
    objects = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    draw = ImageDraw.Draw(objects)
    for i, obj in enumerate(scene.objects):
        draw_shape(draw, obj, i + 1)
    return objects


# The questions stage 6 asks about one big object: every kind a lone object answers but its side
# (a big object's centre is near the middle) and the kinds that need several objects.
BIG_KINDS = ("colour", "shape", "size", "presence", "describe")


def picture(world: ShapesWorld, scene: Scene, rng: random.Random, drawn_share: float = 0.0, habits: DrawingHabits = AS_STAGE_4) -> Picture:
    """The scene rendered by the world, or with chance `drawn_share` drawn as people draw (`drawn`),
    in stage 6 with its `habits` (`drawn.world_size_style`)."""
    if drawn_share and rng.random() < drawn_share:
        return render_drawn(scene, rng, world_size_style(rng, habits))
    return Picture(world.render(scene, rng), index_map(scene))


@dataclass
class QABatch:
    """A batch of (image, question, answer): model inputs with labels on the answer tokens and
    the end token only, and for each row the kind of question, the question, the scene and its
    picture's index map."""

    inputs: dict[str, torch.Tensor]
    kinds: list[str]
    questions: list[str]
    scenes: list[Scene]
    index_maps: list[Image.Image]


def qa_batch(
    processor: LlavaProcessor,
    world: ShapesWorld,
    rng: random.Random,
    batch: int,
    weights: dict[str, float],
    drawn_share: float = 0.0,
    same_colour: float = 0.0,
    big_share: float = 0.0,
    habits: DrawingHabits = AS_STAGE_4,
) -> QABatch:
    """`big_share` of the questions of `BIG_KINDS` are about one object drawn big (`render_big`, stage 6);
    stage 6's drawings, big or not, are drawn with its `habits`."""
    kinds = rng.choices(QUESTION_KINDS, weights=[weights[k] for k in QUESTION_KINDS], k=batch)
    images, texts, questions, answer_lengths, scenes, index_maps = [], [], [], [], [], []
    for kind in kinds:
        big = kind in BIG_KINDS and big_share and rng.random() < big_share
        scene, drawn = render_big(rng, habits=habits) if big else (world.sample_scene_for(rng, kind), None)
        if kind == "presence" and same_colour:
            # the case the model got wrong before stage 5: it answered yes to every object of the colour named
            question, answer = world.presence_question(scene, rng, same_colour, same_colour_only=True)
        else:
            question, answer = world.question(scene, kind, rng)
        drawn = drawn or picture(world, scene, rng, drawn_share, habits)
        images.append(drawn.image)
        index_maps.append(drawn.index_map)
        questions.append(question)
        scenes.append(scene)
        texts.append(f"{build_prompt(processor, question)} {answer} </s>")
        answer_lengths.append(len(processor.tokenizer(f"{answer} </s>", add_special_tokens=False).input_ids))
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    labels = torch.full_like(inputs["input_ids"], -100)
    for row, length in enumerate(answer_lengths):  # left padding: the answer ends every row
        labels[row, -length:] = inputs["input_ids"][row, -length:]
    inputs["labels"] = labels
    return QABatch(dict(inputs), kinds, questions, scenes, index_maps)
