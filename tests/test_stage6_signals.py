"""What stage 6 of the recipe holds big drawings to: the decoder's own reading, as SAV reads it."""

from __future__ import annotations

import random

import pytest
import torch

from sav_explorer import Example, capture_heads, load_model
from sav_explorer.teaching.drawn import render_big
from sav_explorer.teaching.shapes import QUESTIONS, ShapesWorld
from sav_explorer.teaching.stages import as_loaded, last_position_heads, reads_as_rendered


@pytest.fixture(scope="module")
def teaching_model():
    return load_model(device="cpu")


def scenes_and_renders(n: int, seed: str):
    world, rng = ShapesWorld(), random.Random(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    return scenes, [world.render(scene) for scene in scenes]


def test_the_heads_stage_6_reads_are_the_heads_sav_captures(teaching_model):
    """Same examples, same numbers: stage 6 teaches the very outputs SAV's classifier reads, through
    the library's own encoding and trace, on the model in training seen as a loaded one."""
    _, images = scenes_and_renders(3, "heads")
    examples = [Example((image,), QUESTIONS["shape"]) for image in images]
    captured = capture_heads(teaching_model, examples).uniform()
    with torch.no_grad():
        read = last_position_heads(as_loaded(teaching_model.model, teaching_model.processor), examples)
    assert read.shape == (3, captured.shape[1] * captured.shape[2])
    torch.testing.assert_close(read, captured.flatten(1), atol=1e-5, rtol=1e-4)


def test_a_render_read_as_itself_costs_nothing_and_a_big_drawing_of_it_teaches_the_tower(teaching_model):
    model = teaching_model.model
    loaded = as_loaded(model, teaching_model.processor)
    scenes, small = scenes_and_renders(2, "gap")
    questions = [QUESTIONS["shape"], QUESTIONS["colour"]]
    assert reads_as_rendered(loaded, small, small, questions).item() == pytest.approx(0.0, abs=1e-6)

    big = [
        render_big(random.Random(f"big-{i}"), scene.objects[0].colour, scene.objects[0].shape)[1].image for i, scene in enumerate(scenes)
    ]
    tower = model.model.vision_tower
    model.zero_grad(set_to_none=True)
    gap = reads_as_rendered(loaded, small, big, questions)
    assert gap.item() > 0.01
    gap.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.parameters())  # the tower can learn from it
    model.zero_grad(set_to_none=True)
