"""The atlas: every task fitted on every model, one table row per pair, heads placed by relative depth."""

from __future__ import annotations

import csv
import json

import pytest

from sav_explorer import fit_examples, load_examples, load_model
from sav_explorer.__main__ import main
from sav_explorer.analysis import accuracy_curve
from sav_explorer.classifier import SAVClassifier
from tests.conftest import REPO
from tiny_models import build_tiny

EXAMPLES = REPO / "assets" / "examples"


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return str(build_tiny("qwen2_vl", tmp_path_factory.mktemp("models") / "qwen2_vl"))


def test_atlas_fits_each_task_on_each_model_and_writes_table_plot_and_classifiers(tiny_qwen, tmp_path, capsys):
    tasks = [str(EXAMPLES / name / "support.jsonl") for name in ("colour", "size")]
    status = main(
        ["atlas", "--models", "sav-explorer/shapes-llava", tiny_qwen, "--tasks", *tasks, "--out", str(tmp_path), "--k", "5", "--json"]
    )
    assert status == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["model"], e["task"]) for e in entries] == [
        ("sav-explorer/shapes-llava", "colour"),
        ("sav-explorer/shapes-llava", "size"),
        (tiny_qwen, "colour"),
        (tiny_qwen, "size"),
    ]
    for entry in entries:
        saved = SAVClassifier.load(tmp_path / "classifiers" / entry["model"].replace("/", "_").strip("._") / entry["task"])
        assert [list(h) for h in saved.selected_heads] == entry["selected"] and entry["k"] == 5
        assert entry["relative_depths"] == [round(layer / (entry["n_layers"] - 1), 4) for layer, _ in entry["selected"]]
        assert 0 <= entry["leave_one_out_accuracy"] <= 1 and entry["nested_leave_one_out_accuracy"] is not None
    bundled_colour = entries[0]
    from sav_explorer.atlas import relative_depth

    assert relative_depth(0, 8) == 0.0 and relative_depth(7, 8) == relative_depth(29, 30) == 1.0
    # The atlas's leave-one-out is the engine's, for the same fit; and the teaching model reads colour:
    # far above chance (1 in 6), though left out of a 5-example class mean an example meets its twins
    # (same shape, size and place) in every other class's mean.
    clf, activations = fit_examples(load_model(), load_examples(EXAMPLES / "colour" / "support.jsonl"), k=5)
    assert bundled_colour["leave_one_out_accuracy"] == pytest.approx(accuracy_curve(clf, activations).loo[4])
    assert bundled_colour["n_layers"] == 8 and bundled_colour["leave_one_out_accuracy"] >= 0.7
    rows = list(csv.DictReader(open(tmp_path / "atlas.csv")))
    assert [(r["model"], r["task"], r["selected"].split()[0]) for r in rows] == [
        (e["model"], e["task"], "{}:{}".format(*e["selected"][0])) for e in entries
    ]
    page = (tmp_path / "atlas.html").read_text()
    assert "relative depth" in page and page.count('"type":"box"') == 2  # one trace per model


def test_atlas_refuses_two_tasks_of_one_name_and_a_single_class_task(tmp_path, capsys):
    colour = str(EXAMPLES / "colour" / "support.jsonl")
    assert main(["atlas", "--models", "sav-explorer/shapes-llava", "--tasks", colour, colour, "--out", str(tmp_path)]) == 2
    assert "share a name" in capsys.readouterr().err
    one_class = tmp_path / "one.jsonl"
    one_class.write_text(json.dumps({"image": str(EXAMPLES / "colour" / "support_red_0.png"), "label": "red", "question": "q ?"}))
    assert main(["atlas", "--models", "sav-explorer/shapes-llava", "--tasks", str(one_class), "--out", str(tmp_path / "o")]) == 2
    assert "class" in capsys.readouterr().err and not (tmp_path / "o").exists()
