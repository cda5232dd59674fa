"""SAVClassifier: fitting rules, re-selection, explanations, and safe save / load."""

import json

import pytest
import torch

from sav_explorer import ClassifierFileError, DataError, HeadLayout, LayerBlock, SAVClassifier
from sav_explorer.capture import HeadActivations
from sav_explorer.classifier import DEFAULT_HEAD_ORDER
from sav_explorer.encoding import Encoding
from sav_explorer.manifest import _digest


def activations(blocks, layers=None):
    layers = layers or list(range(len(blocks)))
    layout = HeadLayout(tuple(LayerBlock(layer, b.shape[1], b.shape[2]) for layer, b in zip(layers, blocks)))
    return HeadActivations(layout, blocks)


def separable(n_per_class=4, classes=("cat", "dog", "eel"), seed=0):
    """Two layers (3 heads of 4, 2 heads of 6); layer 1 head 1 separates the classes cleanly."""
    torch.manual_seed(seed)
    labels = [c for c in classes for _ in range(n_per_class)]
    index = torch.tensor([classes.index(c) for c in labels])
    layer0 = torch.randn(len(labels), 3, 4)
    layer1 = torch.randn(len(labels), 2, 6)
    layer1[:, 1] = torch.eye(6)[index] * 5 + 0.1 * torch.randn(len(labels), 6)
    return activations([layer0, layer1]), labels


def test_cleanly_separable_set_is_classified_exactly():
    acts, labels = separable()
    clf = SAVClassifier(k=1).fit(acts, labels)
    assert clf.classes_ == ["cat", "dog", "eel"]
    assert clf.selected_heads == [(1, 1)]
    assert clf.predict(acts) == labels
    assert clf.leave_one_out_accuracy() == 1.0


def test_explain_gives_votes_and_per_head_similarities():
    acts, labels = separable()
    clf = SAVClassifier(k=3).fit(acts, labels)
    first = clf.explain(acts)[0]
    assert sum(first.votes.values()) == 3
    assert [(h.layer, h.head) for h in first.heads] == clf.selected_heads
    assert set(first.heads[0].similarities) == {"cat", "dog", "eel"}
    assert first.heads[0].vote == max(first.heads[0].similarities, key=first.heads[0].similarities.get)


def test_select_changes_heads_without_refitting():
    acts, labels = separable()
    clf = SAVClassifier(k=2).fit(acts, labels)
    clf.select(heads=[(0, 2), (1, 1)])
    assert clf.selected_heads == [(0, 2), (1, 1)] and clf.k == 2
    clf.select(k=5)
    assert len(clf.selected_heads) == 5
    with pytest.raises(DataError, match="no such head"):
        clf.select(heads=[(7, 0)])


def test_prediction_needs_only_the_selected_layers():
    acts, labels = separable()
    clf = SAVClassifier(k=1).fit(acts, labels)
    only_layer1 = activations([acts.blocks[1]], layers=[1])
    assert clf.needed_layers() == [1]
    assert clf.predict(only_layer1) == labels


def test_renaming_classes_changes_no_prediction():
    acts, labels = separable(classes=("cat", "dog", "eel"))
    renamed = {"cat": "zebra", "dog": "ant", "eel": "mole"}
    a = SAVClassifier(k=3).fit(acts, labels)
    b = SAVClassifier(k=3).fit(acts, [renamed[x] for x in labels])
    assert a.selected_heads == b.selected_heads
    assert [renamed[x] for x in a.predict(acts)] == b.predict(acts)


@pytest.mark.parametrize(
    "labels, settings, message",
    [
        (["cat"] * 12, {}, "need at least 2 classes; got 1: 'cat'"),
        (["cat"] * 11 + ["  "], {}, "empty label"),
        (["cat"] * 11 + ["dog"], {"scoring": "loo"}, "needs at least 2 examples per class; 'dog' has 1"),
        (["cat"] * 6 + ["dog"] * 6, {"k": 0}, "k must be between 1 and the number of heads \\(5\\); got 0"),
        (["cat"] * 6 + ["dog"] * 6, {"k": 6}, "got 6"),
    ],
)
def test_bad_support_sets_are_refused_with_a_clear_message(labels, settings, message):
    acts, _ = separable()
    with pytest.raises(DataError, match=message):
        SAVClassifier(**settings).fit(acts, labels)


def test_predict_before_fit_says_so():
    with pytest.raises(RuntimeError, match="not fitted yet"):
        SAVClassifier().predict(separable()[0])


def test_labels_with_stray_spaces_are_trimmed():
    acts, labels = separable()
    clf = SAVClassifier(k=2).fit(acts, [f" {x}  " for x in labels])
    assert clf.classes_ == ["cat", "dog", "eel"]


def saved(tmp_path, **settings):
    acts, labels = separable()
    clf = SAVClassifier(k=3, **settings).fit(acts, labels)
    clf.encoding = Encoding("what is it?", max_pixels=448 * 448, max_image_tokens=256)
    folder = clf.save(tmp_path / "clf", model_id="org/model", revision="abc123")
    return clf, acts, folder


@pytest.mark.parametrize(
    "settings", [{}, {"scoring": "loo", "tie_break": "rank"}, {"head_order": "margin"}, {"head_order": "official", "scoring": "loo"}]
)
def test_save_load_predict_is_identical(tmp_path, settings):
    clf, acts, folder = saved(tmp_path, **settings)
    loaded = SAVClassifier.load(folder)
    manifest = loaded.manifest_
    assert loaded.explain(acts) == clf.explain(acts)
    assert loaded.selected_heads == clf.selected_heads
    assert loaded.leave_one_out_accuracy() == clf.leave_one_out_accuracy()
    assert (manifest.model_id, manifest.revision, manifest.question) == ("org/model", "abc123", "what is it?")
    assert manifest.labels == ["cat", "dog", "eel"] and manifest.format_version == 3
    assert loaded.encoding == clf.encoding  # how its examples were read travels with it
    assert manifest.layout == acts.layout
    assert manifest.layout.heads[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)] and manifest.layout.sizes == [4, 4, 4, 6, 6]
    expected = {"k": 3, "scoring": "in-sample", "tie_break": "similarity", "head_order": DEFAULT_HEAD_ORDER, **settings}
    assert {name: getattr(manifest.settings, name) for name in expected} == expected
    assert loaded.select(k=5).selected_heads == clf.select(k=5).selected_heads  # a new k ranks the same after loading


def test_a_reselected_classifier_saves_its_selection(tmp_path):
    clf, acts, folder = saved(tmp_path)
    clf.select(heads=[(0, 1), (1, 0)])
    clf.save(folder, model_id="org/model", revision="abc123")
    assert SAVClassifier.load(folder).selected_heads == [(0, 1), (1, 0)]


def test_tampered_tensors_are_refused(tmp_path):
    _, _, folder = saved(tmp_path)
    data = bytearray((folder / "tensors.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (folder / "tensors.safetensors").write_bytes(bytes(data))
    with pytest.raises(ClassifierFileError, match="does not match its manifest"):
        SAVClassifier.load(folder)


def rewrite_manifest(folder, edit, resign=True):
    """Edits manifest.json; `resign` recomputes its checksum, as a forger would, to reach the field checks."""
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    if resign:
        manifest["manifest_sha256"] = _digest({k: v for k, v in manifest.items() if k != "manifest_sha256"})
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(labels=["cat", "eel", "dog"][::-1]),  # swapped labels would flip predictions silently
        lambda m: m["encoding"].update(question="something else"),
        lambda m: m["encoding"].update(max_pixels=1024 * 1024),
        lambda m: m["model"].update(id="org/other-model"),
        lambda m: m.update(selected=m["selected"][:1] * 2),
    ],
)
def test_any_edit_of_the_manifest_is_refused(tmp_path, edit):
    _, _, folder = saved(tmp_path)
    rewrite_manifest(folder, edit, resign=False)
    with pytest.raises(ClassifierFileError, match="'manifest_sha256' does not match the manifest"):
        SAVClassifier.load(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("labels"), "'labels' must be a list of non-empty strings"),
        (lambda m: m.update(format_version=99), "'format_version' is 99; this version of SAV Explorer reads 1, 2"),
        (lambda m: m["settings"].update(scoring="magic"), "'settings.scoring' must be one of"),
        (lambda m: m["settings"].update(k=99), "'settings.k' must be a whole number from 1 to 5; got 99"),
        (lambda m: m.update(heads=m["heads"][:-1]), "'heads' do not form a head layout"),
        (lambda m: m.update(heads=m["heads"][:1] * 5), "'heads' lists a head twice"),
        (lambda m: m.update(selected=[["x", 1]]), "'selected' must be a list of \\[layer, head\\] pairs"),
        (lambda m: m.update(selected=[[0, 1], [0, 1]]), "'selected' lists a head twice"),
        (lambda m: m.update(selected=[[7, 0]]), "'selected' names heads outside the layout"),
        (lambda m: m.update(selected=[]), "'selected' must name at least one head"),
        (lambda m: m.update(labels=["dog", "cat", "eel"]), "'labels' must be at least 2 unique labels in sorted order"),
        (lambda m: m.update(labels=["cat", "cat", "eel"]), "'labels' must be at least 2 unique labels in sorted order"),
        (lambda m: m.update(labels=["", "dog", "eel"]), "'labels' must be a list of non-empty strings"),
        (lambda m: m.update(labels=[{"a": 1}, "dog", "eel"]), "'labels' must be a list of non-empty strings"),
        (lambda m: m["model"].update(id=""), "'model' must be an object with a non-empty 'id'"),
        (lambda m: m.update(head_scores=[0.5]), "'head_scores' must be 5 numbers"),
        (lambda m: m.update(head_scores=[0.0] * 5), "head scores differ from the stored tensors"),
    ],
)
def test_each_manifest_field_is_validated_with_a_message_naming_it(tmp_path, edit, message):
    _, _, folder = saved(tmp_path)
    rewrite_manifest(folder, edit)
    with pytest.raises(ClassifierFileError, match=message):
        SAVClassifier.load(folder)


def test_a_manifest_nested_too_deeply_gets_a_clear_message(tmp_path):
    _, _, folder = saved(tmp_path)
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ClassifierFileError, match="nested too deeply"):
        SAVClassifier.load(folder)


def test_format_1_folders_are_still_read(tmp_path):
    """Format 1 had no manifest checksum and no head order; it loads with the defaults."""
    clf, acts, folder = saved(tmp_path)

    def as_version_1(m):
        m.update(format_version=1, question=m.pop("encoding")["question"])
        m.pop("manifest_sha256")
        m["settings"].pop("head_order")

    rewrite_manifest(folder, as_version_1, resign=False)
    loaded = SAVClassifier.load(folder)
    assert loaded.manifest_.format_version == 1 and loaded.manifest_.settings.head_order == "layer-head"
    assert loaded.encoding == Encoding("what is it?")  # no pixel cap and the processor's own tokens: as format 1 ran
    assert loaded.explain(acts) == clf.explain(acts)


def test_format_2_folders_read_their_question_and_budget_as_the_encoding(tmp_path):
    clf, acts, folder = saved(tmp_path)

    def as_version_2(m):
        encoding = m.pop("encoding")
        m.update(format_version=2, question=encoding["question"])
        m["settings"]["max_image_tokens"] = encoding["max_image_tokens"]

    rewrite_manifest(folder, as_version_2)
    loaded = SAVClassifier.load(folder)
    assert loaded.manifest_.format_version == 2
    assert loaded.encoding == Encoding("what is it?", max_image_tokens=256)
    assert loaded.explain(acts) == clf.explain(acts)


@pytest.mark.parametrize(
    "encoding, field",
    [({"question": "q", "max_pixels": 0}, "max pixels"), ({"question": "q", "dpi": 3}, "dpi"), ("448", "JSON object")],
)
def test_a_damaged_encoding_is_refused_by_name(tmp_path, encoding, field):
    _, _, folder = saved(tmp_path)
    rewrite_manifest(folder, lambda m: m.update(encoding=encoding))
    with pytest.raises(ClassifierFileError, match=f"field 'encoding' is not an encoding.*{field}"):
        SAVClassifier.load(folder)


def test_missing_files_and_garbage_are_refused(tmp_path):
    _, _, folder = saved(tmp_path)
    (folder / "tensors.safetensors").unlink()
    with pytest.raises(ClassifierFileError, match="no tensors.safetensors"):
        SAVClassifier.load(folder)
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ClassifierFileError, match="not valid JSON"):
        SAVClassifier.load(folder)
    with pytest.raises(ClassifierFileError, match="not found"):
        SAVClassifier.load(tmp_path / "nowhere")


def test_classifier_for_another_model_is_refused(tmp_path):
    _, acts, folder = saved(tmp_path)
    manifest = SAVClassifier.load(folder).manifest_
    layout = acts.layout
    manifest.check_matches("org/model", "abc123", layout)  # the same model passes
    manifest.check_matches("/models/copy-of-model", "abc123", layout)  # the same weights under another name pass
    fewer = HeadLayout(layout.blocks[:1])
    with pytest.raises(ClassifierFileError, match="heads differ"):
        manifest.check_matches("org/model", "abc123", fewer)
    with pytest.raises(ClassifierFileError, match="at revision abc123; the loaded model is at revision zzz"):
        manifest.check_matches("org/model", "zzz", layout)
    with pytest.raises(ClassifierFileError, match="made for 'org/model'; the loaded model is 'org/other'"):
        manifest.check_matches("org/other", "unknown", layout)  # same head layout, another model


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.to(torch.float64), "class means are float64"),
        (lambda t: t.to(torch.float16), "class means are float16"),
        (lambda t: t.to(torch.bfloat16), "class means are bfloat16"),
        (lambda t: t.to(torch.int64), "class means are int64"),
        (lambda t: torch.full_like(t, float("nan")), "class means hold NaN"),
    ],
)
def test_a_resealed_file_with_means_of_another_dtype_or_nan_is_refused_at_restore(tmp_path, change, message):
    """The forger re-signs both files: the load still refuses, naming what is wrong, instead of failing
    at every classification later or classifying by NaN."""
    from safetensors.torch import load_file, save_file

    from sav_explorer.classifier import _sha256

    _, _, folder = saved(tmp_path)
    tensors = load_file(folder / "tensors.safetensors")
    tensors["class_means.layer0"] = change(tensors["class_means.layer0"])
    save_file(tensors, folder / "tensors.safetensors")
    rewrite_manifest(folder, lambda m: m.update(tensors_sha256=_sha256(folder / "tensors.safetensors")))
    with pytest.raises(ClassifierFileError, match=message):
        SAVClassifier.load(folder)


def test_a_resealed_manifest_carrying_a_huge_question_is_refused(tmp_path):
    _, _, folder = saved(tmp_path)
    rewrite_manifest(folder, lambda m: m["encoding"].update(question="x" * 100_000))
    with pytest.raises(ClassifierFileError, match="100,000 characters long"):
        SAVClassifier.load(folder)


def test_a_data_row_with_a_huge_question_is_refused_naming_it(tmp_path):
    from sav_explorer.data import load_examples
    from sav_explorer.errors import DataError

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"image": "a.png", "question": "q" * 10_000, "label": "x"}) + "\n")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match="the question of a.png is 10,000 characters long"):
        load_examples(rows)
