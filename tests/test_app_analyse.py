"""The Analyse tab through the HTTP API: the model's own answers beside SAV, ablation of the voting
heads against random heads, accuracy against k, and two tasks compared. Checked against the library."""

from __future__ import annotations

import json
import re

import pytest
import torch
from gradio_client.exceptions import AppError
from PIL import Image

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


def answers_by_hand(model, queries, zeroed=()) -> list[str]:
    """The bundled model's greedy answers, one query at a time, from the processor's chat template and
    `generate` alone; `zeroed` heads' slices of their layer's o_proj input set to 0 by a hook written here."""
    processor, hooks = model.processor, []
    head_dim = model.model.config.text_config.head_dim
    for layer in {layer for layer, _ in zeroed}:
        heads = [head for at, head in zeroed if at == layer]

        def zero(module, args, heads=heads):
            x = args[0].clone()
            for head in heads:
                x[..., head * head_dim : (head + 1) * head_dim] = 0
            return (x,)

        hooks.append(model.model.model.language_model.layers[layer].self_attn.o_proj.register_forward_pre_hook(zero))
    answers = []
    try:
        for query in queries:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query.question}]}]
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = processor(images=[Image.open(query.images[0]).convert("RGB")], text=[prompt], return_tensors="pt")
            output = model.model.generate(**inputs, max_new_tokens=16, do_sample=False)
            answers.append(processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    finally:
        for hook in hooks:
            hook.remove()
    return answers


def accuracy_by_hand(answers: list[str], queries, classes) -> tuple[float, int]:
    """Right when the answer's words hold the true label and no other (these labels are one word each); and how many name none."""
    named = [[c for c in classes if c in answer.lower().replace(".", " ").split()] for answer in answers]
    right = sum(names == [q.label] for names, q in zip(named, queries))
    return right / len(queries), sum(not names for names in named)


def test_the_models_own_answers_sit_beside_savs_accuracy(visitor, model, reference):
    clf, _, _, queries = reference
    summary, rows = visitor.predict([], True, "generate", "", api_name="/own_answers")
    accuracy, unmatched = accuracy_by_hand(answers_by_hand(model, queries), queries, clf.classes_)
    accuracies = [float(x) for x in re.findall(NUMBER, summary)]
    assert "SAV" in summary and "the model's own answers" in summary and f"On {len(queries)} queries" in summary
    assert accuracies[1] == pytest.approx(accuracy, abs=5e-4)
    assert f"{unmatched} answers named no class" in summary
    assert rows["headers"] == ["example", "label", "the model's answer"]
    own = zero_shot(model, queries, clf.classes_)
    assert len(rows["data"]) == sum(len(v) for v in own.samples.values())


def test_ablating_the_voting_heads_reports_all_three_accuracies_and_each_answer(visitor, model, reference):
    clf, _, support, queries = reference
    summary, rows = visitor.predict([], True, "zero", "generate", 2, "", api_name="/ablate")
    baseline, _ = accuracy_by_hand(answers_by_hand(model, queries), queries, clf.classes_)
    zeroed, _ = accuracy_by_hand(answers_by_hand(model, queries, clf.selected_heads), queries, clf.classes_)
    assert f"{zeroed:.3f}" in summary and f"{baseline:.3f}" in summary
    expected = ablation_study(model, queries, clf.classes_, clf.selected_heads, mode="zero", n_random=2)
    assert f"{expected.random_accuracy:.3f}" in summary and "mean of 2 draws" in summary
    assert [row[2:] for row in rows["data"]] == [[b, a] for b, a in zip(expected.baseline.answers, expected.ablated.answers)]
    mean_summary, _ = visitor.predict([], True, "mean", "generate", 0, "", api_name="/ablate")
    mean = ablation_study(model, queries, clf.classes_, clf.selected_heads, mode="mean", support=support, n_random=0)
    assert f"{mean.ablated.accuracy:.3f}" in mean_summary and "no random control asked for" in mean_summary


def curve_by_hand(support: torch.Tensor, labels: list[int], queries: torch.Tensor, truth: list[int], n_classes: int) -> dict:
    """The curve's three series, written out loop by loop from the method's definitions (DESIGN.md),
    sharing no code with `analysis` or `method`: cosines to six decimals, in-sample head scores, heads ranked by score, then
    by margin (own class's cosine minus the nearest other's, averaged) to six decimals, then (layer,
    head); a vote whose ties go to the tied class of highest summed cosine."""
    n, n_heads, _ = support.shape

    def means(rows: list[int]) -> list[list[torch.Tensor | None]]:
        return [
            [support[[i for i in rows if labels[i] == c], h].mean(0) if any(labels[i] == c for i in rows) else None for h in range(n_heads)]
            for c in range(n_classes)
        ]

    def cosines(vector, class_means, h) -> list[float]:
        return [
            float("-inf") if m[h] is None else round(torch.nn.functional.cosine_similarity(vector, m[h], dim=0).item(), 6)
            for m in class_means
        ]

    def ranking(rows: list[int]) -> list[int]:
        fitted = means(rows)
        scores, margins = [], []
        for h in range(n_heads):
            sims = [cosines(support[i, h], fitted, h) for i in rows]
            scores.append(sum(max(range(n_classes), key=s.__getitem__) == labels[i] for s, i in zip(sims, rows)))
            margins.append(
                sum(s[labels[i]] - max(s[c] for c in range(n_classes) if c != labels[i]) for s, i in zip(sims, rows)) / len(rows)
            )
        return sorted(range(n_heads), key=lambda h: (-scores[h], -round(margins[h], 6), h))

    def predict(sims_per_head: list[list[float]], heads: list[int]) -> int:
        votes = [0] * n_classes
        summed = [0.0] * n_classes
        for h in heads:
            votes[max(range(n_classes), key=sims_per_head[h].__getitem__)] += 1
            for c in range(n_classes):
                summed[c] += sims_per_head[h][c]
        tied = [c for c in range(n_classes) if votes[c] == max(votes)]
        return max(tied, key=summed.__getitem__)

    everyone = list(range(n))
    order, fitted = ranking(everyone), means(everyone)
    ks = range(1, n_heads + 1)
    left_out = [means([j for j in everyone if j != i]) for i in everyone]
    loo_sims = [[cosines(support[i, h], left_out[i], h) for h in range(n_heads)] for i in everyone]
    test_sims = [[cosines(q[h], fitted, h) for h in range(n_heads)] for q in queries]
    nested_orders = [ranking([j for j in everyone if j != i]) for i in everyone]
    return {
        "loo": [sum(predict(loo_sims[i], order[:k]) == labels[i] for i in everyone) / n for k in ks],
        "nested": [sum(predict(loo_sims[i], nested_orders[i][:k]) == labels[i] for i in everyone) / n for k in ks],
        "test": [sum(predict(test_sims[q], order[:k]) == truth[q] for q in range(len(truth))) / len(truth) for k in ks],
    }


def test_the_curve_shows_loo_nested_and_test_accuracy_for_every_k(visitor, model, reference):
    clf, activations, support, queries = reference
    figure, note = visitor.predict([], True, True, "", api_name="/curve")
    traces = {trace["name"]: trace["y"] for trace in json.loads(figure["plot"])["data"]}
    assert len(traces["95 % interval"]) == 2 * len(traces["test set"])  # a band around the test line
    encoding = Encoding(max_pixels=200704)
    expected = curve_by_hand(
        activations.uniform(),
        [clf.classes_.index(e.label) for e in support],
        capture_heads(model, queries, encoding).uniform(),
        [clf.classes_.index(q.label) for q in queries],
        len(clf.classes_),
    )
    assert traces["leave-one-out, heads chosen on all (optimistic)"] == pytest.approx(expected["loo"])
    assert traces["nested leave-one-out (heads re-chosen)"] == pytest.approx(expected["nested"])
    assert traces["test set"] == pytest.approx(expected["test"])
    assert "optimistic" in note and "Best k by the test set" in note


def test_the_curve_says_why_nested_leave_one_out_was_skipped():
    """Over 200 examples it is the count, not a restored file, that skips it."""
    from sav_explorer.capture import HeadActivations
    from sav_explorer.heads import HeadLayout, LayerBlock
    from sav_explorer.pipeline import fit_activations

    torch.manual_seed(0)
    layout = HeadLayout((LayerBlock(0, 3, 4),))
    activations = HeadActivations(layout, [torch.randn(201, 3, 4)])
    clf = fit_activations(activations, ["a", "b", "c"] * 67, k=2)
    assert "skipped for 201 examples" in accuracy_curve(clf, activations).nested_skipped
    assert "restored" in accuracy_curve(clf, None).nested_skipped


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


def test_steering_patching_and_attribution_through_the_page(url, model):
    """The colour task at k = 5: steering to green turns the other colours' answers (random heads do not),
    patching a red support image into a blue one turns the answer, the sweep colours the heads, and
    attribution draws the map and the scatter."""
    visitor = client(url)
    visitor.predict("colour", api_name="/load_example")
    visitor.predict("", 200704, 4, 5, "in-sample", api_name="/extract")
    target, source, into = visitor.predict(api_name="/causal_choices")
    assert {c[0] for c in target["choices"]} == {"red", "green", "blue", "yellow", "purple", "orange"}
    summary, rows = visitor.predict("green", "replace", 1.0, 1, [], True, "generate", "", api_name="/steer")
    rates = [float(x) for x in re.findall(NUMBER, summary)]
    assert "Flip rate" in summary and rates[0] >= 0.95 and rates[-1] <= 0.1  # the flip rate, then the random draw's
    assert len(rows["data"]) == 50 and all(row[1] != "green" for row in rows["data"])
    red = next(c[0] for c in source["choices"] if c[0].endswith("(red)"))
    blue = next(c[0] for c in source["choices"] if c[0].endswith("(blue)"))
    summary, _, _ = visitor.predict(red, blue, api_name="/patch")
    before, after = (float(x) for x in re.findall(r"\*\*(-?[0-9.]+)\*\*", summary)[-2:])
    assert before < 0 < after and "→ **red**" in summary
    summary, figure, colouring = visitor.predict(red, blue, api_name="/sweep")
    assert colouring in ("patching effect", {"value": "patching effect", "__type__": "update"})
    grid = json.loads(figure["plot"])["data"][0]["z"]
    assert len(grid) == 8 and max(v for row in grid for v in row if v is not None) > 0.3
    figure, scatter, note, _ = visitor.predict([], True, "", "direct logit attribution", api_name="/attribute")
    assert "Logit lens" in note and json.loads(scatter["plot"])["data"][1]["name"] == "voting heads"
    figure, _, _ = visitor.predict("patching effect", api_name="/colour_heads")
    assert json.loads(figure["plot"])["data"][0]["z"] == grid
