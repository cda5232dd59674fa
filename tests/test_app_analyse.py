"""The Analyse tab through the HTTP API: the model's own answers beside SAV, ablation of the voting
heads against random heads, accuracy against k, and two tasks compared. Checked against the library."""

from __future__ import annotations

import json
import re

import pytest
import torch
from gradio_client.exceptions import AppError

from app_harness import client
from sav_explorer import Encoding, RunOptions, fit_examples, load_examples, load_model
from sav_explorer.ablation import ablation_study
from sav_explorer.analysis import accuracy_curve, compare_tasks
from sav_explorer.answers import zero_shot
from sav_explorer.capture import capture_heads
from sav_explorer.models import EXAMPLES_DIR, default_model_id

SIZE = EXAMPLES_DIR / "size"
COLOUR = EXAMPLES_DIR / "colour"
NUMBER = r"\*\*([0-9.]+)\*\*"


@pytest.fixture(scope="module")
def model():
    return load_model(default_model_id())


@pytest.fixture(scope="module")
def visitor(url):
    """A visitor who fitted the size task (k = 8)."""
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    visitor.predict("", 200704, 4, 8, "in-sample", api_name="/extract")
    return visitor


@pytest.fixture(scope="module")
def reference(model):
    support = load_examples(SIZE / "support.jsonl")
    clf, activations = fit_examples(model, support, Encoding(max_pixels=200704), RunOptions(batch_size=4), k=8)
    return clf, activations, support, load_examples(SIZE / "queries.jsonl")


def test_the_models_own_answers_sit_beside_savs_accuracy(visitor, model, reference):
    clf, _, _, queries = reference
    summary, rows = visitor.predict([], True, "generate", "", api_name="/own_answers")
    own = zero_shot(model, queries, clf.classes_)
    accuracies = [float(x) for x in re.findall(NUMBER, summary)]
    assert "SAV" in summary and "the model's own answers" in summary and f"On {len(queries)} queries" in summary
    assert accuracies[1] == pytest.approx(own.accuracy, abs=5e-4)
    assert f"{own.unmatched} answers named no class" in summary
    assert rows["headers"] == ["example", "label", "answer", "after ablation"]
    assert len(rows["data"]) == sum(len(v) for v in own.samples.values())


def test_ablating_the_voting_heads_reports_all_three_accuracies_and_each_answer(visitor, model, reference):
    clf, _, support, queries = reference
    summary, rows = visitor.predict([], True, "zero", "generate", 2, "", api_name="/ablate")
    expected = ablation_study(model, queries, clf.classes_, clf.selected_heads, mode="zero", n_random=2)
    assert f"{expected.ablated.accuracy:.3f}" in summary and f"{expected.baseline.accuracy:.3f}" in summary
    assert f"{expected.random_accuracy:.3f}" in summary and "mean of 2 draws" in summary
    assert [row[2:] for row in rows["data"]] == [[b, a] for b, a in zip(expected.baseline.answers, expected.ablated.answers)]
    mean_summary, _ = visitor.predict([], True, "mean", "generate", 0, "", api_name="/ablate")
    mean = ablation_study(model, queries, clf.classes_, clf.selected_heads, mode="mean", support=support, n_random=0)
    assert f"{mean.ablated.accuracy:.3f}" in mean_summary and "no random control asked for" in mean_summary


def test_the_curve_shows_loo_nested_and_test_accuracy_for_every_k(visitor, model, reference):
    clf, activations, _, queries = reference
    figure, note = visitor.predict([], True, True, "", api_name="/curve")
    traces = {trace["name"]: trace["y"] for trace in json.loads(figure["plot"])["data"]}
    assert len(traces["95 % interval"]) == 2 * len(traces["test set"])  # a band around the test line
    test = capture_heads(model, queries)
    labels = torch.tensor([clf.classes_.index(q.label) for q in queries])
    expected = accuracy_curve(clf, activations, clf.similarities(test), labels)
    assert traces["leave-one-out, heads chosen on all (optimistic)"] == pytest.approx(expected.loo)
    assert traces["nested leave-one-out (heads re-chosen)"] == pytest.approx(expected.nested_loo)
    assert traces["test set"] == pytest.approx(expected.test)
    assert "optimistic" in note and "Best k by the test set" in note


def test_two_fitted_tasks_are_compared_side_by_side(url, model):
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    visitor.predict("", 200704, 4, 8, "in-sample", api_name="/extract")
    with pytest.raises(AppError, match="compare needs two fitted tasks"):
        visitor.predict("size", "size", 5, api_name="/compare")
    visitor.predict("colour", api_name="/load_example")
    visitor.predict("", 200704, 4, 8, "in-sample", api_name="/extract")
    first, second = visitor.predict(api_name="/task_choices")
    assert {c[0] for c in first["choices"]} == {"size", "colour"} and first["value"] != second["value"]
    left, right, summary = visitor.predict("size", "colour", 5, api_name="/compare")
    size, _ = fit_examples(model, load_examples(SIZE / "support.jsonl"), Encoding(max_pixels=200704), RunOptions(batch_size=4), k=8)
    colour, _ = fit_examples(model, load_examples(COLOUR / "support.jsonl"), Encoding(max_pixels=200704), RunOptions(batch_size=4), k=8)
    expected = compare_tasks(size, colour, 5)
    assert f"**{expected.shared}** shared" in summary and f"Jaccard **{expected.jaccard:.3f}**" in summary
    assert f"(Spearman) **{expected.spearman:.3f}**" in summary
    assert json.loads(left["plot"])["data"] and json.loads(right["plot"])["data"]


def test_analysis_before_extraction_says_what_to_do(url):
    visitor = client(url)
    for args, api in [(([], True, "generate", ""), "/own_answers"), (([], True, "zero", "generate", 1, ""), "/ablate")]:
        with pytest.raises(AppError, match="extract heads first"):
            visitor.predict(*args, api_name=api)


def test_the_image_token_budget_is_counted_before_extraction_and_kept_by_the_fit(tmp_path):
    """On a SmolVLM-shaped model (tiny): the support set's tokens under the budget show before extraction,
    the extraction runs under it, and the page says which settings the images got."""
    from app_harness import running_app
    from tiny_models import build_tiny

    folder = build_tiny("smolvlm", tmp_path / "smolvlm")
    with running_app(default_model=str(folder)) as (url, _):
        visitor = client(url)
        visitor.predict("colour", api_name="/load_example")
        preview = visitor.predict(4, api_name="/token_preview")
        assert "once the model is loaded" in preview
        visitor.predict("", 200704, 4, 8, "in-sample", 4, api_name="/extract")
        preview = visitor.predict(4, api_name="/token_preview")
        assert "Image tokens per example: 4–4" in preview and "one view, no splitting" in preview
        assert "ms per image token measured" in preview
        own = visitor.predict(0, api_name="/token_preview")
        assert "the processor's own settings" in own and "Image tokens per example: 4–4" not in own
        status = visitor.predict("", 200704, 4, 8, "in-sample", 4, api_name="/extract")[-1]
        assert "a budget of 4 image tokens each" in status and "one view, no splitting" in status
