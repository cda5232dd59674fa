"""The model on a Ray cluster: the same activations, classifiers, predictions, ablation reports, lens
and atlas as a local run, with the work done in the cluster's actors and never in this process. CI
starts a real local cluster (`ray start --head`) and names it in $SAV_RAY_ADDRESS; without it these
tests start one in this process ("local")."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from sav_explorer import SAVClassifier
from sav_explorer.__main__ import main
from sav_explorer.capture import capture_heads
from sav_explorer.data import Example, load_examples
from sav_explorer.distributed import ModelSpec, RayOptions, capture_on_ray
from sav_explorer.encoding import RunOptions
from sav_explorer.models import BUNDLED_ID, load_model
from sav_explorer.pipeline import capture_for
from tests.conftest import REPO
from tiny_models import build_tiny

COLOUR = REPO / "assets" / "examples" / "colour"


@pytest.fixture(scope="module")
def address():
    ray = pytest.importorskip("ray")  # requirements-dev installs it: in CI this never skips
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    yield os.environ.get("SAV_RAY_ADDRESS", "local")
    ray.shutdown()


@pytest.fixture(scope="module")
def bundled():
    return load_model()


def assert_same_activations(local, remote):
    assert remote.layout == local.layout
    for mine, theirs in zip(local.blocks, remote.blocks):
        torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)
    assert remote.image_tokens == local.image_tokens


def test_capture_on_ray_equals_the_local_capture_and_runs_in_actors(address, bundled):
    examples = load_examples(COLOUR / "support.jsonl")[:9]
    result = capture_on_ray(RayOptions(address, actors=2), ModelSpec(BUNDLED_ID), examples, batch_size=2)
    assert_same_activations(capture_heads(bundled, examples, run=RunOptions(batch_size=2)), result.activations)
    assert result.worker_pids and os.getpid() not in result.worker_pids  # not a silent local fallback
    assert result.model_id == BUNDLED_ID and result.revision == bundled.revision
    assert result.model_layout == bundled.layout


def test_prediction_captures_only_the_classifiers_layers_on_ray_too(address, bundled, tmp_path):
    support = load_examples(COLOUR / "support.jsonl")
    clf = SAVClassifier(k=3).fit(capture_heads(bundled, support), [e.label for e in support])
    queries = load_examples(COLOUR / "queries.jsonl")[:6]
    result = capture_on_ray(RayOptions(address), ModelSpec(BUNDLED_ID), queries, layers=clf.needed_layers())
    local = capture_for(bundled, clf, queries)
    assert result.activations.layout.layers == clf.needed_layers()
    assert_same_activations(local, result.activations)
    assert clf.predict(result.activations) == clf.predict(local)


def test_another_family_captures_the_same_on_ray(address, tmp_path):
    folder = build_tiny("qwen2_vl", tmp_path / "qwen2_vl")
    examples = [Example((COLOUR / f"support_{name}.png",), "what color is the shape ?") for name in ("red_0", "blue_1", "green_2")]
    result = capture_on_ray(RayOptions(address), ModelSpec(str(folder)), examples, batch_size=2)
    assert_same_activations(capture_heads(load_model(str(folder)), examples, run=RunOptions(batch_size=2)), result.activations)


def no_model_here(monkeypatch):
    """With --ray the driver neither loads the model nor captures: a silent local fallback fails."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran in the driver")

    for target in (
        "sav_explorer.cli.classify.load",
        "sav_explorer.cli.classify.fit_examples",
        "sav_explorer.cli.classify.capture_for",
        "sav_explorer.atlas.capture_heads",
        "sav_explorer.cli.common.load",
        "sav_explorer.cli.heads.model_for",
        "sav_explorer.cli.heads.ablation_study",
    ):
        monkeypatch.setattr(target, refuse)


def test_fit_and_eval_with_ray_write_and_report_what_a_local_run_does(address, tmp_path, capsys, monkeypatch):
    common = ["--data", str(COLOUR / "support.jsonl"), "--k", "6", "--json"]
    queries = ["--classifier", str(tmp_path / "local"), "--data", str(COLOUR / "queries.jsonl"), "--json"]
    assert main(["fit", *common, "--out", str(tmp_path / "local")]) == 0
    assert main(["eval", *queries]) == 0
    local_fit, local_eval = (json.loads(line) for line in capsys.readouterr().out.splitlines())

    no_model_here(monkeypatch)
    assert main(["fit", *common, "--out", str(tmp_path / "ray"), "--ray", address]) == 0
    assert main(["eval", *queries, "--ray", address, "--ray-actors", "2"]) == 0
    ray_fit, ray_eval = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert ray_fit["selected"] == local_fit["selected"] and ray_fit["model"] == local_fit["model"] == BUNDLED_ID
    assert (tmp_path / "ray" / "manifest.json").read_text() == (tmp_path / "local" / "manifest.json").read_text()
    assert ray_eval["predictions"] == local_eval["predictions"] and ray_eval["n"] == 60


def test_the_atlas_on_ray_equals_the_local_atlas(address, tmp_path, capsys, monkeypatch):
    tasks = [str(REPO / "assets" / "examples" / name / "support.jsonl") for name in ("colour", "size")]
    command = ["atlas", "--models", BUNDLED_ID, "--tasks", *tasks, "--k", "5", "--json"]
    assert main([*command, "--out", str(tmp_path / "local")]) == 0
    no_model_here(monkeypatch)
    assert main([*command, "--out", str(tmp_path / "ray"), "--ray", address]) == 0
    local, remote = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert remote == local and [e["task"] for e in remote["entries"]] == ["colour", "size"]


def test_a_bad_image_on_ray_is_one_line_naming_it(address, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"image": name, "label": label}) for name, label in [("broken.png", "a"), ("broken.png", "b")]))
    status = main(["fit", "--data", str(rows), "--question", "what ?", "--out", str(tmp_path / "out"), "--ray", address])
    err = capsys.readouterr().err
    assert status == 2 and "broken.png" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_without_ray_the_flag_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    status = main(["fit", "--data", str(COLOUR / "support.jsonl"), "--out", str(tmp_path / "out"), "--ray", "local"])
    assert status == 2 and "pip install -r requirements-ray.txt" in capsys.readouterr().err


def colour_queries(folder: Path, every: int) -> Path:
    """Every `every`-th bundled colour query, copied with its images into `folder`: a queries file there."""
    rows = (COLOUR / "queries.jsonl").read_text().splitlines()[::every]
    for row in rows:
        name = json.loads(row)["image"]
        (folder / name).write_bytes((COLOUR / name).read_bytes())
    queries = folder / "queries.jsonl"
    queries.write_text("\n".join(rows))
    return queries


def test_ablation_on_ray_reads_the_same_answers_as_a_local_run(address, tmp_path, capsys, monkeypatch):
    queries = colour_queries(tmp_path, every=5)  # 12 queries, every colour
    assert main(["fit", "--data", str(COLOUR / "support.jsonl"), "--k", "6", "--out", str(tmp_path / "clf")]) == 0
    command = ["ablate", "--classifier", str(tmp_path / "clf"), "--data", str(queries), "--support", str(COLOUR / "support.jsonl")]
    command += ["--random", "2", "--batch-size", "4", "--json"]
    capsys.readouterr()
    assert main(command) == 0
    no_model_here(monkeypatch)
    assert main([*command, "--ray", address, "--ray-actors", "2"]) == 0
    local, remote = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert remote == local
    assert remote["ablated_accuracy"] < remote["baseline_accuracy"] == 1.0  # the colour heads matter: a run that did something


def test_the_lens_on_ray_reports_and_draws_what_a_local_run_does(address, tmp_path, capsys, monkeypatch):
    images = [str(COLOUR / "queries_blue_0.png"), str(COLOUR / "queries_red_1.png")]
    command = ["attention", "--heads", "2:0", "2:1", "--question", "what color is the shape ?", "--json", *images]
    assert main([*command, "--out", str(tmp_path / "local")]) == 0
    monkeypatch.setattr("sav_explorer.cli.heads.look", lambda *a, **k: pytest.fail("the lens ran in the driver"))
    monkeypatch.setattr("sav_explorer.cli.heads.load", lambda *a, **k: pytest.fail("the model loaded in the driver"))
    assert main([*command, "--out", str(tmp_path / "ray"), "--ray", address]) == 0
    local, remote = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert remote == local and len(remote["images"]) == 2 and remote["images"][0]["heads"][0]["maps"]
    drawn = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert drawn == sorted(p.name for p in (tmp_path / "ray").iterdir()) and len(drawn) == 4
    assert all((tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes() for name in drawn)


def test_an_address_where_no_cluster_answers_is_one_line_at_once(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    ray.shutdown()  # this process joins one cluster at a time; a later test joins its own again
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    status = main(["fit", "--data", str(COLOUR / "support.jsonl"), "--out", str(tmp_path / "o"), "--ray", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert status == 2 and f"no Ray cluster answers at 127.0.0.1:{port}" in err and "ray start --head" in err


def test_steering_on_ray_reads_the_same_answers_as_a_local_run(address, tmp_path, capsys, monkeypatch):
    """`steer --ray`: the random draws' runs in the cluster's actors, the report equal to a local run's."""
    queries = colour_queries(tmp_path, every=10)  # 6 queries, every colour
    assert main(["fit", "--data", str(COLOUR / "support.jsonl"), "--k", "5", "--out", str(tmp_path / "clf")]) == 0
    command = ["steer", "--classifier", str(tmp_path / "clf"), "--data", str(queries), "--support", str(COLOUR / "support.jsonl")]
    command += ["--to", "red", "--random", "1", "--batch-size", "3", "--json"]
    capsys.readouterr()
    assert main(command) == 0
    no_model_here(monkeypatch)
    monkeypatch.setattr("sav_explorer.cli.causal.model_for", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model in driver")))
    assert main([*command, "--ray", address, "--ray-actors", "2"]) == 0
    local, remote = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert remote == local and remote["flip_rate"] == 1.0 and remote["n"] == 5


def test_a_patching_sweep_on_ray_equals_a_local_sweep(address, tmp_path, capsys, monkeypatch):
    """`patch --sweep --ray`: each head patched alone in the cluster's actors, the report equal to a local run's."""
    assert main(["fit", "--data", str(COLOUR / "support.jsonl"), "--k", "5", "--out", str(tmp_path / "clf")]) == 0
    command = ["patch", "--classifier", str(tmp_path / "clf"), "--source", str(COLOUR / "support_red_0.png")]
    command += ["--target", str(COLOUR / "support_blue_0.png"), "--sweep", "--batch-size", "16", "--json"]
    capsys.readouterr()
    assert main(command) == 0
    no_model_here(monkeypatch)
    monkeypatch.setattr("sav_explorer.cli.causal.model_for", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model in driver")))
    assert main([*command, "--ray", address, "--ray-actors", "2"]) == 0
    local, remote = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    effects = {(layer, head): effect for layer, head, effect in local.pop("effects")}
    remote_effects = {(layer, head): effect for layer, head, effect in remote.pop("effects")}
    assert remote == local and remote["source_label"] == "red" and remote["target_label"] == "blue"
    assert remote_effects.keys() == effects.keys() and len(effects) == 64
    assert all(abs(remote_effects[head] - effects[head]) < 1e-5 for head in effects)
