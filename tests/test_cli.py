"""The command line: fit, eval and predict on a tiny LLaVA, and one clear line for every bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from sav_explorer import SAVClassifier
from sav_explorer.__main__ import main
from sav_explorer.manifest import _digest
from tests.conftest import REPO
from tiny_models import build_tiny

COLOUR = REPO / "assets" / "examples" / "colour"


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return str(build_tiny("llava", tmp_path_factory.mktemp("models") / "llava"))


@pytest.fixture(scope="module")
def fitted(tiny_llava, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "colour"
    assert (
        main(["fit", "--model", tiny_llava, "--data", str(COLOUR / "support.jsonl"), "--out", str(out), "--k", "4", "--save-activations"])
        == 0
    )
    return out


def run(capsys, *args):
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_fit_writes_manifest_tensors_and_activations(fitted, tiny_llava):
    manifest = json.loads((fitted / "manifest.json").read_text())
    assert manifest["labels"] == sorted(["red", "green", "blue", "yellow", "purple", "orange"])
    assert manifest["model"]["id"] == tiny_llava and manifest["model"]["revision"].startswith("sha256-headers:")
    assert manifest["encoding"] == {
        "question": "what color is the shape ?",
        "max_pixels": None,
        "max_image_tokens": None,
        "video_frames": None,
    }
    assert len(manifest["selected"]) == 4 and manifest["settings"]["k"] == 4
    assert len(manifest["heads"]) == len(manifest["head_sizes"]) == 8  # 2 layers x 4 heads
    saved = load_file(fitted / "activations.safetensors")
    assert saved["activations"].shape == (30, 8, 8)  # examples x heads x head size
    rows = [json.loads(line)["label"] for line in (COLOUR / "support.jsonl").read_text().splitlines()]
    assert [manifest["labels"][i] for i in saved["labels"].tolist()] == rows  # indices into the manifest's labels, in file order
    assert (fitted / "tensors.safetensors").is_file()


def test_later_commands_read_with_the_fits_encoding_and_name_an_override(tiny_llava, tmp_path, capsys):
    support = COLOUR / "support.jsonl"
    status, _, _ = run(capsys, "fit", "--model", tiny_llava, "--data", support, "--out", tmp_path / "c", "--k", "3", "--max-pixels", "1024")
    assert status == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["encoding"]["max_pixels"] == 1024
    status, out, err = run(capsys, "eval", "--classifier", tmp_path / "c", "--data", COLOUR / "queries.jsonl", "--json")
    assert status == 0 and json.loads(out)["encoding"]["max_pixels"] == 1024 and "warning" not in err  # the fit's, silently
    image = str(COLOUR / "queries_red_0.png")
    status, _, err = run(capsys, "predict", "--classifier", tmp_path / "c", "--max-pixels", "4096", image)
    assert status == 0 and "max pixels 4,096 instead of the fit's 1,024" in err


def test_eval_json_reports_accuracy_and_confusion(fitted, capsys):
    status, out, _ = run(capsys, "eval", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", "--json")
    report = json.loads(out)
    assert status == 0 and report["n"] == 60
    assert {"accuracy", "n", "per_class_accuracy", "confusion"} <= set(report)  # the keys scripts rely on
    extra = {"predictions", "accuracy_interval", "per_class_interval", "encoding", "max_image_tokens", "image_tokens"}
    assert set(report) - {"accuracy", "n", "per_class_accuracy", "confusion"} == extra
    assert report["max_image_tokens"] is None and report["image_tokens"] == {"min": 16, "mean": 16.0, "max": 16}  # 4 x 4 patches
    predictions = report["predictions"]
    rows = [json.loads(line) for line in (COLOUR / "queries.jsonl").read_text().splitlines()]
    assert [(p["example"], p["label"]) for p in predictions] == [(r["image"], r["label"]) for r in rows]  # file order, by name
    right = sum(p["label"] == p["predicted"] for p in predictions)
    assert report["accuracy"] == right / 60 and sum(map(sum, report["confusion"]["matrix"])) == 60
    diagonal = sum(report["confusion"]["matrix"][i][i] for i in range(len(report["confusion"]["predicted"])))
    assert diagonal == right
    assert set(report["per_class_accuracy"]) == set(json.loads((fitted / "manifest.json").read_text())["labels"])


def test_predict_json_gives_label_and_votes_per_image(fitted, capsys):
    images = [COLOUR / "queries_red_0.png", COLOUR / "queries_blue_0.png"]
    status, out, _ = run(capsys, "predict", "--classifier", fitted, *images, "--json")
    rows = json.loads(out)
    assert status == 0 and [r["image"] for r in rows] == [str(p) for p in images]
    assert all(sum(r["votes"].values()) == 4 and r["label"] in r["votes"] for r in rows)


def one_class_data(tmp_path):
    rows = [{"image": str(COLOUR / f"support_red_{i}.png"), "question": "q?", "label": "red"} for i in range(3)]
    (tmp_path / "one.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "one.jsonl"


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t, m: ["fit", "--model", m, "--data", one_class_data(t), "--out", t / "o"], "need at least 2 classes; got 1: 'red'"),
        (
            lambda t, m: ["fit", "--model", m, "--data", COLOUR / "support.jsonl", "--out", t / "o", "--k", "0"],
            "k must be between 1 and the number of heads \\(8\\); got 0",
        ),
        (lambda t, m: ["fit", "--model", m, "--data", COLOUR / "support.jsonl", "--out", t / "o", "--k", "9"], "got 9"),
        (lambda t, m: ["fit", "--model", m, "--data", t / "missing.jsonl", "--out", t / "o"], "data not found"),
        (
            lambda t, m: ["fit", "--model", t / "no-model-here", "--data", COLOUR / "support.jsonl", "--out", t / "o"],
            "could not load model",
        ),
        (lambda t, m: ["eval", "--classifier", t / "nothing", "--data", COLOUR / "queries.jsonl"], "classifier folder not found"),
        (
            lambda t, m: ["fit", "--model", m, "--data", COLOUR / "support.jsonl", "--out", t / "o", "--image-cache-mb", "lots"],
            "--image-cache-mb is a size in MB \\(0 turns the image cache off\\); got 'lots'",
        ),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(tmp_path, tiny_llava, capsys, make_args, message):
    status, _, err = run(capsys, *make_args(tmp_path, tiny_llava))
    assert status == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_a_fit_without_the_image_cache_writes_the_same_classifier(fitted, tiny_llava, tmp_path, capsys):
    out = tmp_path / "uncached"
    status, _, _ = run(
        capsys, "fit", "--model", tiny_llava, "--data", COLOUR / "support.jsonl", "--out", out, "--k", "4", "--image-cache-mb", "0"
    )
    assert status == 0
    assert (out / "tensors.safetensors").read_bytes() == (fitted / "tensors.safetensors").read_bytes()


def test_unknown_hub_id_fails_fast_offline(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status, _, err = run(capsys, "fit", "--model", "no-such-org/no-such-model", "--data", COLOUR / "support.jsonl", "--out", tmp_path / "o")
    assert status == 2 and "could not load model 'no-such-org/no-such-model'" in err and "Hub cannot be reached" in err


def test_unreadable_image_is_named(tmp_path, tiny_llava, capsys):
    shutil.copytree(COLOUR, tmp_path / "colour")
    (tmp_path / "colour" / "support_red_1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    status, _, err = run(
        capsys, "fit", "--model", tiny_llava, "--data", tmp_path / "colour" / "support.jsonl", "--out", tmp_path / "o", "--k", "4"
    )
    assert status == 2 and "support_red_1.png" in err


def test_tampered_classifier_and_classifier_for_another_model(fitted, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(fitted, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["labels"] = manifest["labels"][::-1]  # swapped labels would flip every prediction
    (copy / "manifest.json").write_text(json.dumps(manifest))
    status, _, err = run(capsys, "predict", "--classifier", copy, COLOUR / "queries_red_0.png")
    assert status == 2 and "'manifest_sha256' does not match the manifest" in err

    manifest["labels"] = manifest["labels"][::-1]
    manifest["model"]["revision"] = "sha256-headers:0000000000000000"
    manifest["manifest_sha256"] = _digest({k: v for k, v in manifest.items() if k != "manifest_sha256"})  # a forger re-signs
    (copy / "manifest.json").write_text(json.dumps(manifest))
    status, _, err = run(capsys, "predict", "--classifier", copy, COLOUR / "queries_red_0.png")
    assert status == 2 and "at revision sha256-headers:0000000000000000" in err

    with open(copy / "tensors.safetensors", "r+b") as handle:
        handle.seek(-8, 2)
        handle.write(b"\x00" * 8)
    status, _, err = run(capsys, "predict", "--classifier", copy, COLOUR / "queries_red_0.png")
    assert status == 2 and "does not match its manifest" in err


def test_the_real_command_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sav_explorer", "eval", "--classifier", str(tmp_path), "--data", str(COLOUR / "queries.jsonl")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path} has no manifest.json: not a saved classifier"


def test_default_k_is_every_head_of_a_model_with_fewer_than_20(tiny_llava, tmp_path, capsys):
    status, out, err = run(capsys, "fit", "--model", tiny_llava, "--data", COLOUR / "support.jsonl", "--out", tmp_path / "o", "--json")
    assert status == 0, err
    assert json.loads(out)["k"] == 8  # 2 layers x 4 heads
    status, _, err = run(capsys, "fit", "--model", tiny_llava, "--data", COLOUR / "support.jsonl", "--out", tmp_path / "o", "--k", "20")
    assert status == 2 and "k must be between 1 and the number of heads (8); got 20" in err  # an explicit k stays checked


def test_a_reader_that_goes_away_ends_the_command_quietly(fitted):
    images = " ".join(str(COLOUR / f"queries_red_{i}.png") for i in range(3))
    command = f"{sys.executable} -m sav_explorer predict --classifier {fitted} {images} | true"  # `true` never reads
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert "BrokenPipe" not in result.stderr and "error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_attention_json_gives_each_selected_heads_shares_and_maps(fitted, tmp_path, capsys):
    images = [COLOUR / "queries_red_0.png", COLOUR / "queries_blue_0.png"]
    status, out, err = run(capsys, "attention", "--classifier", fitted, "--json", "--out", tmp_path / "overlays", *images)
    assert status == 0, err
    report = json.loads(out)["images"]
    selected = [tuple(h) for h in json.loads((fitted / "manifest.json").read_text())["selected"]]
    assert [entry["image"] for entry in report] == [str(p) for p in images]
    for entry in report:
        assert [(h["layer"], h["head"]) for h in entry["heads"]] == selected  # no --heads: the classifier's heads
        for head in entry["heads"]:
            assert head["image_share"] + head["layout_share"] + head["text_share"] == pytest.approx(1, abs=1e-5)
            (grid,) = head["maps"]  # LLaVA: one grid per image, over the whole (square) image
            assert (grid["rows"], grid["cols"]) == (4, 4) and grid["box"] == [0.0, 0.0, 64.0, 64.0]
            assert sum(map(sum, grid["grid"])) == pytest.approx(head["image_share"], abs=1e-5)
    written = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert written == sorted(f"{p.stem}_L{layer}H{head}.png" for p in images for layer, head in selected)


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "name the heads to look at with --heads L:H"),
        (["--heads", "1-2"], "heads are written layer:head, e.g. 2:0; got '1-2'"),
        (["--heads", "7:0", "--question", "q ?"], "no head 0 in layer 7 of this model"),
        (["--heads", "1:0"], "no question: give --question"),
    ],
)
def test_attention_refuses_unclear_requests_with_one_line(tiny_llava, capsys, extra, message):
    status, _, err = run(capsys, "attention", "--model", tiny_llava, *extra, COLOUR / "queries_red_0.png")
    assert status == 2 and message in err and "Traceback" not in err


def test_fit_names_the_words_of_the_question_the_model_does_not_know(tmp_path, capsys):
    rows = [{"image": str(COLOUR / f"support_{c}_{i}.png"), "label": c} for c in ("red", "blue") for i in range(2)]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    status, _, err = run(capsys, "fit", "--data", data, "--question", "what colour is the picture ?", "--out", tmp_path / "o", "--k", "3")
    assert status == 0 and "will not see them: 'colour', 'picture'" in err


def test_a_manifest_nested_too_deeply_gets_one_line_naming_the_problem(fitted, tmp_path, capsys):
    copy = tmp_path / "deep"
    shutil.copytree(fitted, copy)
    (copy / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    status, _, err = run(capsys, "predict", "--classifier", copy, COLOUR / "queries_red_0.png")
    assert status == 2 and "nested too deeply" in err and "RecursionError" not in err


def test_compare_prints_shared_heads_jaccard_and_spearman(fitted, tiny_llava, tmp_path, capsys):
    other = tmp_path / "other"
    rows = [{"image": str(COLOUR / f"support_{c}_{i}.png"), "question": "q ?", "label": c} for c in ("red", "blue") for i in range(3)]
    (tmp_path / "two.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["fit", "--model", tiny_llava, "--data", str(tmp_path / "two.jsonl"), "--out", str(other), "--k", "4"]) == 0
    capsys.readouterr()
    status, out, _ = run(capsys, "compare", fitted, other, "--k", "4", "--json")
    result = json.loads(out)
    assert status == 0 and set(result) == {"k", "shared", "jaccard", "spearman"} and result["k"] == 4
    first = {tuple(h) for h in json.loads((fitted / "manifest.json").read_text())["selected"]}
    second = {tuple(h) for h in json.loads((other / "manifest.json").read_text())["selected"]}
    assert result["shared"] == len(first & second) and result["jaccard"] == pytest.approx(len(first & second) / len(first | second))


def test_curve_json_gives_accuracy_for_every_k(fitted, capsys):
    status, out, err = run(capsys, "curve", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", "--json")
    curve = json.loads(out)
    assert status == 0, err
    assert {"k", "loo", "nested_loo", "test"} <= set(curve) and curve["k"] == list(range(1, 9))  # 2 layers x 4 heads
    assert set(curve) - {"k", "loo", "nested_loo", "test"} == {"loo_interval", "nested_loo_interval", "test_interval"}
    assert all(low <= value <= high for value, (low, high) in zip(curve["test"], curve["test_interval"]))
    assert len(curve["loo"]) == len(curve["test"]) == 8 and curve["nested_loo"] is not None  # activations were saved at fit
    clf = SAVClassifier.load(fitted)
    assert curve["loo"][3] == pytest.approx(clf.select(k=4).leave_one_out_accuracy())


def test_eval_zero_shot_adds_the_models_own_answers_beside_sav(fitted, capsys):
    status, out, _ = run(capsys, "eval", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", "--zero-shot", "--json")
    report = json.loads(out)
    assert status == 0 and report["zero_shot_method"] == "generate"
    low, high = report["zero_shot_interval"]
    assert 0 <= low <= report["zero_shot_accuracy"] <= high <= 1
    samples = report["zero_shot_samples"]
    assert set(samples) == {"right", "wrong", "unmatched"} and all(len(rows) <= 3 for rows in samples.values())
    assert 0 <= report["zero_shot_unmatched"] <= 60 and (report["zero_shot_unmatched"] > 0) == bool(samples["unmatched"])
    status, out, _ = run(capsys, "eval", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", "--zero-shot", "likelihood", "--json")
    report = json.loads(out)
    assert report["zero_shot_method"] == "likelihood" and report["zero_shot_unmatched"] == 0  # forced choice: always a label


def test_ablate_json_gives_baseline_ablated_and_random_accuracies(fitted, capsys):
    args = ["ablate", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", "--mode", "zero", "--random", "2", "--json"]
    status, out, _ = run(capsys, *args)
    report = json.loads(out)
    assert status == 0
    assert {"baseline_accuracy", "ablated_accuracy", "random_accuracy", "random_accuracies", "n", "heads"} <= set(report)
    assert report["n"] == 60 and len(report["heads"]) == 4 and len(report["random_accuracies"]) == 2
    assert report["random_accuracy"] == pytest.approx(sum(report["random_accuracies"]) / 2)
    status, out, _ = run(capsys, *args[:-1], "--heads", "0:1", "1:2", "--json")
    assert json.loads(out)["heads"] == [[0, 1], [1, 2]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "mean"], "needs the support set"),
        (["--mode", "zero", "--heads", "7:0"], "no head 7:0"),
        (["--mode", "zero", "--heads", "two"], "layer:head"),
    ],
)
def test_ablate_refuses_unclear_requests_with_one_line(fitted, capsys, extra, message):
    status, _, err = run(capsys, "ablate", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", *extra)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_saved_classifier_loads_its_own_revision_and_another_only_when_asked(fitted, tmp_path, capsys, monkeypatch):
    """A hub repository that moved on: with no --revision the CLI asks for the manifest's commit (and
    predicts); --revision loads another on purpose, the two revisions named on stderr."""
    import sav_explorer.cli.common as common

    copy = tmp_path / "hub-classifier"
    shutil.copytree(fitted, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["model"]["id"] = "someone/tiny-llava"
    manifest["model"]["revision"] = "a" * 40
    manifest["manifest_sha256"] = _digest({k: v for k, v in manifest.items() if k != "manifest_sha256"})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    real_load, tiny_path, asked = common.load_model, json.loads((fitted / "manifest.json").read_text())["model"]["id"], []

    def hub(model_id, revision=None, **options):  # the hub at a later commit: its head is not the saved one
        asked.append(revision)
        loaded = real_load(tiny_path, **options)
        loaded.model_id, loaded.revision = model_id, revision or "b" * 40
        return loaded

    monkeypatch.setattr(common, "load_model", hub)
    status, out, err = run(capsys, "predict", "--classifier", copy, COLOUR / "queries_red_0.png")
    assert status == 0 and asked == ["a" * 40] and "warning" not in err
    status, out, err = run(capsys, "predict", "--classifier", copy, "--revision", "main", COLOUR / "queries_red_0.png")
    assert status == 0 and asked[-1] == "main"
    assert f"--revision main loads main; this classifier was made at revision {'a' * 40}" in err


def test_report_writes_one_offline_file_with_the_evaluation_and_the_lens(fitted, tmp_path, capsys):
    from plotly.offline import get_plotlyjs

    out = tmp_path / "report.html"
    status, printed, _ = run(
        capsys, "report", "--classifier", fitted, "--data", COLOUR / "queries.jsonl", "--support", COLOUR / "support.jsonl", "--out", out
    )
    assert status == 0 and f"report written to {out}" in printed and "on 60 queries" in printed
    text = out.read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()) == 1 and text.count("Plotly.newPlot(") == 3  # heatmap, confusion matrix, curve
    assert "Held-out accuracy" in text and "nested leave-one-out" in text  # fit saved the activations
    assert "Where the top heads look" in text and "over the support images" in text
    assert text.count("<img src='data:image/") >= 3 * 6 * 2  # 3 heads x 6 classes x (overlay, class mean)
    assert "float32" in text and "Not part of this report (not run): the model&#x27;s own answers, ablation" in text

    bare = tmp_path / "bare.html"  # no queries, no support: the model is not even loaded
    status, printed, _ = run(capsys, "report", "--classifier", fitted, "--out", bare)
    text = bare.read_text(encoding="utf-8")
    assert status == 0 and "not loaded" in text and text.count("Plotly.newPlot(") == 2  # heatmap, curve
    assert "Where the top heads look" not in text and "held-out accuracy" in text.split("Not run")[1]
