"""Reading the model's own answers as labels: whole words, longer labels first, no other label."""

import pytest

from sav_explorer.answers import ZeroShotReport, labels_named

LABELS = ["blue", "light blue", "red", "no", "yes"]


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ("Blue.", ["blue"]),
        ("It is LIGHT blue!", ["light blue"]),  # not also "blue"
        ("light blue and blue", ["light blue", "blue"]),
        ("reddish", []),  # whole words only
        ("Yes, it is.", ["yes"]),
        ("nothing", []),  # "no" is not inside "nothing"
        ("red or blue?", ["blue", "red"]),
    ],
)
def test_an_answer_names_labels_as_whole_words_longer_labels_first(answer, named):
    assert sorted(labels_named(answer, LABELS)) == sorted(named)


def test_an_answer_naming_no_label_is_unmatched_and_one_naming_two_is_wrong():
    report = ZeroShotReport("generate", predicted=["red", None, ""], truth=["red", "blue", "blue"], answers=["red", "purple", "red blue"])
    assert report.accuracy == pytest.approx(1 / 3) and report.unmatched == 1
    low, high = report.interval
    assert low < 1 / 3 < high
    assert report.to_json()["zero_shot_unmatched"] == 1


@pytest.fixture(scope="module")
def paligemma(tmp_path_factory):
    from sav_explorer import load_model
    from tiny_models import build_tiny

    return load_model(str(build_tiny("paligemma", tmp_path_factory.mktemp("paligemma") / "m")), device="cpu")


def test_a_scored_label_is_found_from_the_processors_own_ids_even_where_it_appends_tokens(paligemma):
    """PaliGemma's processor puts "\\n" after any text: the scored window is the label and its ending, not the "\\n"."""
    from PIL import Image

    from sav_explorer import Encoding, Example, encode
    from sav_explorer.models.prompts import answer_ending

    ending = answer_ending(paligemma.processor)
    batch = encode(paligemma, [Example((Image.new("RGB", (64, 64)),), "What colour?")], Encoding(), answers=["red" + ending])
    ids, span = batch.input_ids[0].tolist(), batch.answer_spans[0]
    scored = ids[len(ids) - span.after - span.length : len(ids) - span.after]
    assert paligemma.processor.tokenizer.decode(scored).strip() == "red" + ending == "red<eos>"
    assert paligemma.processor.tokenizer.decode(ids[len(ids) - span.after :]) == "\n"


def test_a_label_that_is_a_prefix_of_another_does_not_win_by_being_shorter():
    """On the bundled model, the description of a scene of several objects against its first object alone:
    scored as whole answers (each followed by what ends an answer), the full description wins."""
    from sav_explorer import Example, load_model
    from sav_explorer.answers import zero_shot
    from sav_explorer.teaching.evaluate import held_out

    loaded = load_model()
    scenes = [(image, question, truth) for image, question, truth in held_out("describe", 60, "eval") if "," in truth][:12]
    chosen = []
    for image, question, truth in scenes:
        first = truth.split(" , ")[0]  # "small blue square" of "small blue square , large red circle"
        report = zero_shot(loaded, [Example((image,), question, truth)], [first, truth], method="likelihood")
        chosen.append(report.answers[0] == truth)
    assert sum(chosen) >= 0.9 * len(scenes), f"the full description won on {sum(chosen)} of {len(scenes)} scenes"


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "paligemma", "mllama"])
def test_likelihood_keeps_only_the_scored_positions_and_chooses_as_the_full_vocabulary_would(tmp_path, family):
    """The chosen labels equal those of an independent computation: the whole sequence's logits, with the
    cache on, the label's tokens read at the span the processor's own ids give; and the pass's logits
    hold only the scored positions (a hook reads their shape)."""
    import torch
    from PIL import Image

    from sav_explorer import Encoding, Example, encode, load_model
    from sav_explorer.answers import zero_shot
    from sav_explorer.models.prompts import answer_ending
    from tiny_models import build_tiny

    loaded = load_model(str(build_tiny(family, tmp_path / "m")), device="cpu")
    classes = ["red", "blue", "light red", "a red square"]  # a prefix, and different token lengths
    queries = [Example((Image.new("RGB", (48, 40), (20 * i, 90, 160)),), "What colour?", "red") for i in range(3)]
    seen = []
    handle = loaded.model.register_forward_hook(lambda module, args, output: seen.append(tuple(output.logits.shape)))
    try:
        chosen = zero_shot(loaded, queries, classes, method="likelihood").answers
    finally:
        handle.remove()

    ending = answer_ending(loaded.processor)
    expected = []
    for query in queries:
        scores = []
        for label in classes:
            batch = encode(loaded, [query], Encoding(), answers=[label + ending])
            with torch.no_grad():
                logits = loaded.model(**batch.inputs).logits.float()[0]
            ids, span = batch.input_ids[0], batch.answer_spans[0]
            end = len(ids) - span.after
            positions = range(end - span.length, end)
            scores.append(sum(logits[p - 1].log_softmax(-1)[ids[p]].item() for p in positions))
        expected.append(classes[max(range(len(classes)), key=scores.__getitem__)])
    assert chosen == expected
    sequence = encode(loaded, queries, Encoding(), answers=["a red square" + ending] * 3).input_ids.shape[1]
    assert all(kept < sequence // 2 for _, kept, _ in seen), (seen, sequence)


def test_the_memory_estimate_counts_the_logits_likelihood_keeps(paligemma):
    """Scoring 20 appended positions over a vocabulary needs the logits' bytes in the estimate."""
    from PIL import Image

    from sav_explorer import Encoding, Example, encode
    from sav_explorer.models.memory import activation_estimate

    batch = encode(paligemma, [Example((Image.new("RGB", (64, 64)),), "What colour?")] * 8, Encoding())
    vocab = paligemma.model.config.get_text_config().vocab_size
    one, twenty = activation_estimate(paligemma, batch.inputs), activation_estimate(paligemma, batch.inputs, logits_positions=20)
    assert twenty.bytes - one.bytes >= 1.5 * 3 * 4 * 8 * 19 * vocab * 0.99 or twenty.bytes > 1.5 * 3 * 4 * 8 * 20 * vocab
    assert twenty.sequence == one.sequence + 19
