"""End to end on the bundled teaching model: it loads offline, answers, and its heads specialise.

Targets (issue 3) are 95 %; these seeded held-out checks allow at most 5 points below them.
"""

from __future__ import annotations

import json

import pytest
import torch

from sav_explorer import load_model
from sav_explorer.models import BUNDLED_ID, BUNDLED_MODEL
from sav_explorer.teaching.evaluate import (
    ATTRIBUTES,
    RESULTS,
    answer_accuracy,
    big_drawing_accuracy,
    drawn_accuracy,
    sav_task,
    specialisation,
)
from sav_explorer.teaching.examples import TASK_NAMES
from sav_explorer.teaching.shapes import QUESTION_KINDS

FLOOR = 0.90


@pytest.fixture(scope="module")
def teaching_model():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def tasks(teaching_model):
    return {name: sav_task(teaching_model, name) for name in TASK_NAMES}


def test_the_bundled_model_is_a_real_llava_loaded_by_from_pretrained(teaching_model):
    assert teaching_model.model_id == BUNDLED_ID
    assert type(teaching_model.model).__name__ == "LlavaForConditionalGeneration"
    assert len(teaching_model.sites) >= 8 and all(s.n_heads >= 8 for s in teaching_model.sites)
    weights = sum(p.stat().st_size for p in BUNDLED_MODEL.glob("*.safetensors"))
    assert weights <= 30 * 2**20


@pytest.fixture(scope="module")
def answers(teaching_model):
    exact, description = answer_accuracy(teaching_model, n_per_kind=100, seed="test")
    return {**exact, **{f"describe/{a}": v for a, v in description.items()}}


# What the shipped model does not do yet, with its figure on 200 held-out questions per kind from
# `python -m sav_explorer.teaching.evaluate`. Strict: the day a retrained model does it, the test
# fails until its mark goes. (Presence, 78.0 % before stage 5, is 98.5 % now and left this list.)
SHORTFALLS: dict[str, str] = {}
SAV_SHORTFALLS: dict[str, str] = {}


def known_shortfalls(names, reasons):
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=reasons[n])) if n in reasons else n for n in names]


@pytest.mark.parametrize("kind", known_shortfalls([*QUESTION_KINDS, *(f"describe/{a}" for a in ATTRIBUTES)], SHORTFALLS))
def test_generated_answers_are_right_for_every_kind_of_question(answers, kind):
    assert answers[kind] >= FLOOR, f"{kind}: {answers[kind]:.3f}"


@pytest.mark.parametrize("name", known_shortfalls(["colour", "shape", "size", "count"], SAV_SHORTFALLS))
def test_sav_with_5_examples_per_class_meets_the_target(tasks, name):
    assert tasks[name].accuracy >= FLOOR, f"{name}: {tasks[name].accuracy:.3f}"


def test_each_example_tasks_recorded_accuracy_is_reproduced(tasks):
    recorded = json.loads(RESULTS.read_text())
    assert set(recorded) == set(TASK_NAMES)
    for name, result in tasks.items():
        # The same heads and, up to one query, the same accuracy. Float rounding differs between CPUs,
        # and a support example whose two nearest class means are almost equally near can move one
        # head's score by one example; scores tie at the k-th place, so such a head may enter or leave
        # the selection. Only heads within one example of the k-th score may differ.
        clf = result.classifier
        recorded_heads = [tuple(h) for h in recorded[name]["selected"]]
        one_example = 1 / clf.support_labels_.numel() + 1e-6
        kth = float(clf.head_scores_[clf.selected_[-1]])
        moved = set(recorded_heads) ^ set(clf.selected_heads)
        assert len(moved) <= 4, (name, moved)
        assert all(abs(float(clf.head_scores_[clf.layout_.position(*h)]) - kth) <= one_example for h in moved), (name, moved)
        assert abs(recorded[name]["accuracy"] - result.accuracy) <= 1 / result.n + 1e-9, name


def test_colour_and_shape_heads_specialise(tasks):
    spec = specialisation(tasks["colour"].classifier, tasks["shape"].classifier)
    assert spec["best_colour_head"] >= 0.85 and spec["best_shape_head"] >= 0.85, spec
    assert spec["top10_overlap"] < 5, spec


def test_prediction_reads_only_up_to_the_deepest_selected_layer(teaching_model, tasks):
    clf = tasks["size"].classifier
    clf_layers = clf.needed_layers()
    seen = []
    handles = [
        layer.register_forward_pre_hook(lambda m, a, i=i: seen.append(i))
        for i, layer in enumerate(teaching_model.model.get_decoder().layers)
    ]
    try:
        from sav_explorer import predict_examples
        from sav_explorer.data import load_examples
        from sav_explorer.models import EXAMPLES_DIR as EXAMPLES

        with torch.no_grad():
            predict_examples(teaching_model, clf, load_examples(EXAMPLES / "size" / "queries.jsonl")[:2])
    finally:
        for handle in handles:
            handle.remove()
    assert max(seen) == max(clf_layers)


def test_comparing_colour_and_shape_equals_a_direct_set_computation(tasks):
    from sav_explorer.analysis import compare_tasks
    from sav_explorer.teaching.evaluate import top_heads

    colour, shape = tasks["colour"].classifier, tasks["shape"].classifier
    comparison = compare_tasks(colour, shape, 10)
    shared = top_heads(colour) & top_heads(shape)
    assert comparison.shared == len(shared) and comparison.jaccard == pytest.approx(len(shared) / (20 - len(shared)))


@pytest.mark.parametrize("task", ["colour", "shape"])
def test_sav_reads_drawings_by_another_program_with_the_bundled_support_sets(teaching_model, task):
    """Fitted on the world's 64-pixel renders, asked about sketches on canvases of 64 to 400 pixels
    (filled, outlined, scribbled; every fourth a small tinted thumbnail) that training never saw."""
    result = drawn_accuracy(teaching_model, task)
    assert result.n >= 80 and result.accuracy >= FLOOR, (task, result.accuracy, result.per_style)


@pytest.fixture(scope="module")
def big_drawings(teaching_model):
    return big_drawing_accuracy(teaching_model)


# Issue 28's target on big drawings, every size band, 96 shape drawings a band. The shipped model
# (stage 6 run again on a tower sharpened to 128 pixels, see the README's *Sharper eyes*) reads
# shapes at 95.8 % or more at every size, colours at 97.2 % or more. Strict, as SHORTFALLS.
BIG_FLOOR = 0.95
BIG_READERS = ("shape_sav", "shape_answers", "colour_sav", "colour_answers")
BIG_SHORTFALLS: dict[str, str] = {}


@pytest.mark.parametrize("reader", known_shortfalls(BIG_READERS, BIG_SHORTFALLS))
def test_shapes_and_colours_drawn_big_are_read_at_every_size(big_drawings, reader):
    """Drawings by `bigdrawings` (never trained on), their radius 10 % to 45 % of the canvas width:
    SAV on the bundled support sets and the model's own answers, band by band (issue 28)."""
    per_band = getattr(big_drawings, reader)
    assert min(per_band.values()) >= BIG_FLOOR, per_band


def test_no_size_band_of_big_drawings_falls_below_the_teaching_floor(big_drawings):
    """What the shipped model reads already stays read: every band at 90 % or more, for shape and
    colour, by SAV and by the model's own answers (stage 5's model: 0 % at the largest bands)."""
    for reader in BIG_READERS:
        per_band = getattr(big_drawings, reader)
        assert min(per_band.values()) >= FLOOR, (reader, per_band)


def test_the_sketches_are_drawn_by_a_program_the_training_never_imports():
    import ast
    import inspect

    from sav_explorer.teaching import batches, drawn, probes, recipe, stages, targets, train

    for module in (train, stages, recipe, batches, targets, probes, drawn):
        imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(module))) if isinstance(node, ast.ImportFrom)}
        assert not any(name and name.endswith("sketches") for name in imported), module.__name__


def test_ablating_savs_colour_heads_hurts_the_models_own_answers_more_than_random_heads(teaching_model, tasks):
    """The heads SAV picks are heads the model uses: mean-ablating the colour task's 20 drops its own
    colour answers far below ablating as many random heads of the same layers."""
    from sav_explorer.ablation import ablation_study
    from sav_explorer.data import load_examples
    from sav_explorer.encoding import RunOptions
    from sav_explorer.models import EXAMPLES_DIR

    clf = tasks["colour"].classifier
    queries = load_examples(EXAMPLES_DIR / "colour" / "queries.jsonl")
    support = load_examples(EXAMPLES_DIR / "colour" / "support.jsonl")
    study = ablation_study(
        teaching_model, queries, clf.classes_, clf.selected_heads, run=RunOptions(batch_size=30), support=support, n_random=2
    )
    assert study.baseline.accuracy >= FLOOR
    assert study.ablated.accuracy <= min(study.random_accuracies) - 0.2, study.to_json()
