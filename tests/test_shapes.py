"""The shapes world: seeded, deterministic, and its answers agree with its scenes."""

import json
import random

import pytest
import torch

from sav_explorer.teaching.batches import qa_batch
from sav_explorer.teaching.build import build_processor
from sav_explorer.teaching.examples import SUPPORT_PER_CLASS, TASKS, balanced_attributes, write_task
from sav_explorer.teaching.shapes import COLOURS, QUESTION_KINDS, SHAPES, SIZES, ShapesWorld, describe, parse_description
from sav_explorer.teaching.targets import POINTER_HEADS, patch_targets, pointer_targets, stack_targets, word_targets
from tests.conftest import REPO


def test_a_seed_reproduces_image_question_and_answer_exactly():
    world = ShapesWorld()
    for kind in QUESTION_KINDS:
        a, b = world.sample(random.Random(7), kind), world.sample(random.Random(7), kind)
        assert a[0].tobytes() == b[0].tobytes() and a[1:] == b[1:]


def test_scenes_have_one_to_four_objects_that_do_not_overlap():
    world = ShapesWorld()
    rng = random.Random(0)
    for _ in range(200):
        scene = world.sample_scene(rng)
        assert 1 <= len(scene.objects) <= 4
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                reach = SIZES[a.size] + SIZES[b.size]
                assert abs(a.x - b.x) > reach or abs(a.y - b.y) > reach


def test_answers_agree_with_the_scene():
    world = ShapesWorld()
    rng = random.Random(1)
    scene = world.sample_scene(rng, n_objects=3, distinct_colours=True)
    assert world.question(scene, "count", rng)[1] == "three"
    question, answer = world.question(scene, "relation", random.Random(2))
    left, right = question.split(" shape left of the ")
    a = next(o for o in scene.objects if o.colour == left.split()[-1])
    b = next(o for o in scene.objects if o.colour == right.split()[0])
    assert answer == ("yes" if a.x < b.x else "no")


def test_description_is_canonical_and_parses_back():
    scene = ShapesWorld().sample_scene(random.Random(3), n_objects=3)
    text = describe(scene)
    objects = parse_description(text)
    assert [o.x for o in scene.left_to_right()] == sorted(o.x for o in scene.objects)
    assert objects == [(o.size, o.colour, o.shape) for o in scene.left_to_right()]
    assert all(size in SIZES and colour in COLOURS and shape in SHAPES for size, colour, shape in objects)


def test_patch_targets_mark_the_objects_patches():
    scene = ShapesWorld().sample_scene(random.Random(4), n_objects=2)
    targets = patch_targets(scene)
    assert targets["count"].item() == 1
    assert (targets["colour"] > 0).sum() >= 2  # each object covers at least one patch
    assert targets["object_weights"][:2].sum(1).tolist() == pytest.approx([1.0, 1.0])


def pointers_for(kind, seed=0, presence="object", same_colour=0.0):
    processor = build_processor()
    weights = {k: float(k == kind) for k in QUESTION_KINDS}
    batch = qa_batch(processor, ShapesWorld(), random.Random(seed), 8, weights, same_colour=same_colour)
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    targets, mask = pointer_targets(batch, stack_targets(batch.scenes)["object_weights"], image_token, presence)
    return batch, targets, mask, image_token


def single_answer_places(batch, mask, image_token, row):
    """Where head 0 is supervised in a one-word answer's row, the prompt's first token (the
    sink), and a mask of the image tokens."""
    place = int(mask[row, 0].nonzero()[0])
    start = int(batch.inputs["attention_mask"][row].nonzero()[0])
    return place, start, batch.inputs["input_ids"][row] == image_token


def test_pointer_heads_are_taught_to_look_at_each_described_object_in_turn():
    batch, targets, mask, image_token = pointers_for("describe")
    assert targets.shape[1] == POINTER_HEADS and not mask[:, 1].any()  # head 1 is for relations
    for row, scene in enumerate(batch.scenes):
        places = mask[row, 0].nonzero().squeeze(1)
        assert len(places) == 3 * len(scene.objects)  # size, colour and shape of each object
        image = batch.inputs["input_ids"][row] == image_token
        assert targets[row, 0, places][:, ~image].sum() == 0  # only image tokens, all mass on them
        assert targets[row, 0, places].sum(1).tolist() == pytest.approx([1.0] * len(places))
        looked_at = [targets[row, 0, place, image] for place in places[::3]]
        weights = patch_targets(scene)["object_weights"]
        expected = [weights[scene.objects.index(obj)] for obj in scene.left_to_right()]
        assert all(torch.allclose(a, b) for a, b in zip(looked_at, expected))


def test_presence_points_at_the_named_object_or_the_start_when_there_is_none():
    batch, targets, mask, image_token = pointers_for("presence", seed=3)
    seen = set()
    for row, question in enumerate(batch.questions):
        place, start, image = single_answer_places(batch, mask, image_token, row)
        colour, shape = question.split()[3:5]
        present = any(o.colour == colour and o.shape == shape for o in batch.scenes[row].objects)
        assert targets[row, 0, place, image].sum().item() == pytest.approx(1.0 if present else 0.0)
        assert targets[row, 0, place, start].item() == (0.0 if present else 1.0)
        seen.add(present)
    assert seen == {True, False}


def test_stage_5_points_head_0_at_the_colour_named_and_head_1_at_the_shape_named():
    batch, targets, mask, image_token = pointers_for("presence", seed=5, presence="attributes", same_colour=1.0)
    weights = stack_targets(batch.scenes)["object_weights"]
    for row, question in enumerate(batch.questions):
        place, start, image = single_answer_places(batch, mask, image_token, row)
        colour, shape = question.split()[3:5]
        objects = batch.scenes[row].objects
        for head, named in (
            (0, [i for i, o in enumerate(objects) if o.colour == colour]),
            (1, [i for i, o in enumerate(objects) if o.shape == shape]),
        ):
            assert mask[row, head, place]
            if named:
                expected = weights[row, named].sum(0)
                assert torch.allclose(targets[row, head, place, image], expected / expected.sum())
            else:
                assert targets[row, head, place, start].item() == 1.0


def test_stage_5_asks_half_of_its_absent_presence_questions_about_a_colour_in_the_scene_on_another_shape():
    rows = [pointers_for("presence", seed=seed, same_colour=1.0)[0] for seed in range(6)]
    hard = yes = 0
    for batch in rows:
        for question, scene in zip(batch.questions, batch.scenes):
            colour, shape = question.split()[3:5]
            present = any(o.colour == colour and o.shape == shape for o in scene.objects)
            yes += present
            hard += not present and any(o.colour == colour for o in scene.objects)
    assert 12 <= yes <= 36 and hard == 48 - yes  # every "no" names a colour of the scene on another shape


def test_the_word_pointer_is_taught_to_look_at_a_presence_questions_shape_word():
    processor = build_processor()
    batch = qa_batch(processor, ShapesWorld(), random.Random(2), 8, {k: float(k in ("presence", "colour")) for k in QUESTION_KINDS})
    shape_ids = set(processor.tokenizer.convert_tokens_to_ids(list(SHAPES)))
    places = word_targets(batch, shape_ids)
    assert {"presence", "colour"} == set(batch.kinds)
    for row, (kind, question) in enumerate(zip(batch.kinds, batch.questions)):
        if kind == "presence":
            word = processor.tokenizer.convert_ids_to_tokens(int(batch.inputs["input_ids"][row, places[row]]))
            assert word == question.split()[4]
        else:
            assert places[row] == -1


def test_count_points_at_every_object_alike_with_a_share_that_grows_with_the_count():
    batch, targets, mask, image_token = pointers_for("count", seed=1)
    counts = set()
    for row, scene in enumerate(batch.scenes):
        place, start, image = single_answer_places(batch, mask, image_token, row)
        share = len(scene.objects) / 5
        on_image = targets[row, 0, place, image]
        weights = patch_targets(scene)["object_weights"][: len(scene.objects)]
        per_object = (weights * on_image).sum(1) / (weights * weights).sum(1)  # each object's part of the target
        assert per_object.tolist() == pytest.approx([share / len(scene.objects)] * len(scene.objects), rel=0.05)
        assert on_image.sum().item() == pytest.approx(share)
        assert targets[row, 0, place, start].item() == pytest.approx(1 - share)
        counts.add(len(scene.objects))
    assert len(counts) > 1


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_bundled_example_tasks_are_what_the_generator_writes(tmp_path, task):
    write_task(task, tmp_path)
    bundled = REPO / "assets" / "examples" / task.name
    for split in ("support", "queries"):
        rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
        assert (bundled / f"{split}.jsonl").read_text() == (tmp_path / f"{split}.jsonl").read_text()
        assert all(row["question"] == task.question for row in rows)
    support = [json.loads(line)["label"] for line in (tmp_path / "support.jsonl").read_text().splitlines()]
    assert {label: support.count(label) for label in task.labels} == dict.fromkeys(task.labels, SUPPORT_PER_CLASS)


@pytest.mark.parametrize("task", [t for t in TASKS if t.attribute], ids=lambda t: t.name)
def test_single_object_support_sets_differ_between_classes_in_the_label_only(task):
    world, rng = ShapesWorld(), random.Random(0)
    seen = []
    for index in range(SUPPORT_PER_CLASS):
        others = balanced_attributes(task, index)
        assert set(others) == {"colour", "shape", "size"} - {task.attribute}
        for label in task.labels:
            obj = task.scene_for(world, rng, label, **others).objects[0]
            assert getattr(obj, task.attribute) == label
            assert {name: getattr(obj, name) for name in others} == others
        seen.append(tuple(others.values()))
    assert len(set(seen)) > 1  # the examples of one class still vary
