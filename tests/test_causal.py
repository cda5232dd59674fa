"""Decodable or causal: steering with a class's mean, patching between inputs, direct logit attribution."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sav_explorer import Encoding, Example, encode, fit_examples, load_examples, load_model
from sav_explorer.attribution import attribute, decompose
from sav_explorer.causal import patch, steered_heads, steering_study
from sav_explorer.errors import DataError
from sav_explorer.interventions import support_means
from sav_explorer.models import EXAMPLES_DIR
from tiny_models import build_tiny


def noise(seed: int, size=(48, 40)) -> Image.Image:
    generator = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=generator, dtype=torch.uint8).numpy())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-causal")
    return {family: load_model(str(build_tiny(family, root / family)), device="cpu") for family in ("llava", "qwen2_vl", "gemma3")}


@pytest.fixture(scope="module")
def bundled():
    return load_model()


@pytest.fixture(scope="module")
def colour(bundled):
    support = load_examples(EXAMPLES_DIR / "colour" / "support.jsonl")
    clf, _ = fit_examples(bundled, support, k=5)
    return clf, support, load_examples(EXAMPLES_DIR / "colour" / "queries.jsonl")


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_embeddings_heads_biases_and_mlps_add_up_to_the_logits(tiny, family):
    """The decomposition is exact: every part read on its own, added up, gives the model's logits
    (float32, a padded batch, 40 tokens of the vocabulary)."""
    loaded = tiny[family]
    batch = encode(loaded, [Example((noise(1),), "What is it?"), Example((noise(2),), "What colour is the thing here?")], Encoding())
    assert (batch.attention_mask == 0).any()
    parts = decompose(loaded, batch, range(40))
    assert parts.heads.shape == (2, loaded.layout.n_heads, 40)
    torch.testing.assert_close(parts.heads.sum(1) + parts.rest, parts.logits, atol=1e-4, rtol=0)
    full = loaded.model(**batch.inputs).logits[torch.arange(2), batch.last][:, :40]
    torch.testing.assert_close(parts.logits, full.float(), atol=1e-5, rtol=0)


def test_a_family_that_normalises_attention_outputs_is_refused_by_name(tiny):
    batch = encode(tiny["gemma3"], [Example((noise(1),), "What is it?")], Encoding())
    with pytest.raises(DataError, match="Gemma3ForConditionalGeneration: layer 0's residual update"):
        decompose(tiny["gemma3"], batch, range(4))


def test_labels_that_start_with_the_same_token_are_refused(tiny):
    queries = [Example((noise(i),), "What?", label) for i, label in enumerate(["red", "blue"])]
    with pytest.raises(DataError, match="start with the same token"):
        attribute(tiny["llava"], queries, ["red", "blue"])  # the tiny tokenizer writes " red" as "Ġ", "r", …


def test_attribution_on_the_bundled_model_names_the_colour_heads(bundled, colour):
    """On the colour task the best head by direct attribution pushes the true colour up, the parts add
    up to the logits, and the logit lens ends with the true colours' share rising to the last layer."""
    clf, _, queries = colour
    report = attribute(bundled, queries[::5], clf.classes_, clf.encoding)
    assert report.decomposition_error < 1e-3
    scores = report.head_scores()
    assert float(scores.max()) > 1.0 and len(report.logit_lens) == 8
    assert report.true_class_lens[0] < 0.5 < 0.9 < report.true_class_lens[-1]  # read off the late layers, not the embeddings
    best = report.heads[int(scores.argmax())]
    assert best in clf.selected_heads
    json = report.to_json()
    assert json["heads"][0].keys() == {"layer", "head", "dla"} and set(json["heads"][0]["dla"]) == set(clf.classes_)


def test_steering_to_a_class_with_its_own_mean_changes_nothing_and_alpha_zero_neither(tiny):
    """Replacing heads by the mean of a support set that is the query alone, or adding 0 × anything,
    leaves every logit as it was."""
    loaded = tiny["qwen2_vl"]
    query = Example((noise(4),), "What is it?")
    heads = loaded.layout.heads
    own = support_means(loaded, [query], heads)
    other = support_means(loaded, [Example((noise(5),), "What is it?")], heads)
    inputs = encode(loaded, [query], Encoding()).inputs
    with torch.no_grad():
        plain = loaded.model(**inputs).logits
        with steered_heads(loaded, heads, own):
            replaced = loaded.model(**inputs).logits
        with steered_heads(loaded, heads, other, own, alpha=0.0):
            shifted = loaded.model(**inputs).logits
        with steered_heads(loaded, heads, other):
            moved = loaded.model(**inputs).logits
    torch.testing.assert_close(replaced, plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=0)
    assert not torch.allclose(moved, plain, atol=1e-3)


def test_steering_the_colour_heads_turns_the_answer_and_random_heads_do_not(bundled, colour):
    """The teaching model's colour heads carry the colour: steered to one colour's mean they turn the
    other colours' answers to it; as many random heads of the same layers do not."""
    clf, support, queries = colour
    subset = queries[::3]
    report = steering_study(bundled, subset, clf.classes_, support, "green", clf.selected_heads, clf.encoding, n_random=1)
    assert report.n == sum(q.label != "green" for q in subset) and report.before_rate == 0
    assert report.flip_rate >= 0.9 and report.random_flip_rates[0] <= 0.1
    low, high = report.flip_interval
    assert low <= report.flip_rate <= high
    answers = report.to_json()["answers"]
    assert all(a["label"] != "green" for a in answers) and sum("green" in a["after"] for a in answers) >= 0.9 * len(answers)


def test_patching_an_input_from_itself_changes_nothing_and_a_sweep_equals_heads_patched_one_by_one(bundled, colour):
    clf, _, queries = colour
    red, blue = next(q for q in queries if q.label == "red"), next(q for q in queries if q.label == "blue")
    same = patch(bundled, clf, red, red, clf.selected_heads)
    assert same.logit_diff_after == pytest.approx(same.logit_diff_before, abs=1e-4) and same.answer_after == same.answer_before
    swept = patch(bundled, clf, red, blue, clf.selected_heads, sweep=True, batch_size=16)
    assert (swept.source_label, swept.target_label) == ("red", "blue")
    assert swept.logit_diff_before < 0 < swept.logit_diff_after and "red" in swept.answer_after
    assert len(swept.effects) == bundled.layout.n_heads
    best = max(swept.effects, key=lambda e: e[2])
    alone = patch(bundled, clf, red, blue, [best[:2]])
    everything = patch(bundled, clf, red, blue, bundled.layout.heads)
    change = everything.logit_diff_after - everything.logit_diff_before
    assert best[2] == pytest.approx((alone.logit_diff_after - alone.logit_diff_before) / change, abs=1e-3)


def test_patching_between_inputs_that_cannot_be_matched_is_refused(bundled, colour):
    """Two prompts of different text have no position-for-position match (under an encoding that lets
    each example keep its own question)."""
    clf, _, queries = colour
    other_question = Example(queries[0].images, "what color is the shape in this picture ?", queries[0].label)
    with pytest.raises(DataError, match="text position"):
        patch(bundled, clf, queries[1], other_question, clf.selected_heads, Encoding())


def test_the_commands_print_what_the_issue_names(tmp_path, capsys, colour):
    """steer, patch and attribute with --json, on the bundled colour task fitted by `fit`."""
    import json

    from sav_explorer.__main__ import main

    folder = EXAMPLES_DIR / "colour"
    out = tmp_path / "colour"
    assert main(["fit", "--data", str(folder / "support.jsonl"), "--out", str(out), "--k", "5"]) == 0
    rows = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()][::6]
    for row in rows:
        row["image"] = str(folder / row["image"]) if "image" in row else row.get("image")
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(row) + "\n" for row in rows))
    capsys.readouterr()
    assert main(["steer", "--classifier", str(out), "--data", str(queries), "--support", str(folder / "support.jsonl"),
                 "--to", "red", "--random", "1", "--json"]) == 0  # fmt: skip
    steered = json.loads(capsys.readouterr().out)
    assert {"target", "mode", "n", "heads", "flip_rate", "flip_interval", "random_flip_rates", "answers"} <= steered.keys()
    assert steered["target"] == "red" and steered["flip_rate"] >= 0.9 and len(steered["random_flip_rates"]) == 1
    assert steered["answers"][0].keys() == {"example", "label", "before", "after"}
    assert main(["patch", "--classifier", str(out), "--source", str(folder / "queries_red_0.png"),
                 "--target", str(folder / "queries_blue_0.png"), "--json"]) == 0  # fmt: skip
    patched = json.loads(capsys.readouterr().out)
    assert (patched["source_label"], patched["target_label"]) == ("red", "blue")
    assert patched["logit_diff_before"] < 0 < patched["logit_diff_after"]
    assert main(["attribute", "--classifier", str(out), "--data", str(queries), "--json"]) == 0
    attributed = json.loads(capsys.readouterr().out)
    assert attributed["decomposition_error"] < 1e-3 and len(attributed["heads"]) == 64 and len(attributed["logit_lens"]) == 8
    assert main(["steer", "--classifier", str(out), "--data", str(queries), "--support", str(folder / "support.jsonl"),
                 "--to", "magenta"]) == 2  # fmt: skip
    assert "no class 'magenta' to steer to" in capsys.readouterr().err
