"""The app through its HTTP API (gradio_client), against a launched server: the whole flow, every
bad input, escaping of user text, and two visitors who never see each other's data.

Each `Client` is a separate visitor (session). Results are checked against the engine itself.
"""

from __future__ import annotations

import json
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import load_file

from app_harness import client
from sav_explorer import Encoding, RunOptions, SAVClassifier, evaluate, fit_examples, load_examples, load_model, predict_examples
from sav_explorer.data import Example
from sav_explorer.lens import look
from sav_explorer.models import EXAMPLES_DIR, default_model_id
from sav_explorer.ui.blocks import Explorer
from sav_explorer.ui.session import Session

SIZE = EXAMPLES_DIR / "size"
PRESENCE = EXAMPLES_DIR / "presence"
LOO = re.compile(r"Leave-one-out accuracy: \*\*([0-9.]+)\*\*")


@pytest.fixture(scope="module")
def model():
    return load_model(default_model_id())


def loo_of(summary: str) -> float:
    return float(LOO.search(summary)[1])


def heads_of(update: dict) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in re.findall(r"\d+", name)) for name in update["value"]]


def plot_json(value: dict) -> dict:
    return json.loads(value["plot"])


def write_images(folder: Path, colours: dict[str, tuple]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, colour in colours.items():
        paths[name] = folder / f"{name}.png"
        Image.new("RGB", (64, 64), colour).save(paths[name])
    return paths


# ----------------------------------------------------------------------------- the whole flow
@pytest.fixture(scope="module")
def flow(url, model):
    """One visitor: the size task, extracted with k=8; and the engine's own classifier on the same data."""
    visitor = client(url)
    table, gallery, question, status = visitor.predict("size", api_name="/load_example")
    extracted = visitor.predict("", 200704, 4, 8, "in-sample", api_name="/extract")
    examples = load_examples(SIZE / "support.jsonl")
    reference, _ = fit_examples(model, examples, Encoding(max_pixels=200704), RunOptions(batch_size=4), k=8)
    return visitor, (table, gallery, question, status), extracted, reference


def test_example_task_loads_labels_and_its_question(flow):
    _, (table, gallery, question, status), _, _ = flow
    assert len(table["data"]) == 10 and {row[2] for row in table["data"]} == {"large", "small"}
    assert question == "is the shape small or large ?"
    assert len(gallery) == 10 and "10 examples" in status


def test_extraction_matches_the_engine(flow):
    _, _, (heatmap, summary, selection, heads, k, status), reference = flow
    assert heads_of(heads) == reference.selected_heads
    assert loo_of(summary) == pytest.approx(reference.leave_one_out_accuracy(), abs=5e-4)
    assert k["value"] == 8 and len(selection["data"]) == 8
    figure = plot_json(heatmap)
    grid, marks = figure["data"][0], figure["data"][1]
    assert len(grid["z"]) == 8 and "leave-one-out" in grid["hovertemplate"]
    assert sorted(zip(marks["y"], marks["x"])) == sorted(reference.selected_heads)
    assert "64 heads in 8 layers from 10 examples" in status


def test_k_and_head_toggles_rescore_like_the_engine(flow):
    visitor, _, _, reference = flow
    _, summary, selection, heads, k, _ = visitor.predict(3, api_name="/set_k")
    reference.select(k=3)
    assert heads_of(heads) == reference.selected_heads and len(selection["data"]) == 3
    assert "value" not in k  # the slider keeps what the visitor set: a late answer never pulls the thumb back
    assert loo_of(summary) == pytest.approx(reference.leave_one_out_accuracy(), abs=5e-4)

    extra = next(h for h in reference.heads_ if h not in reference.selected_heads)
    heatmap, summary, _, heads, k, _ = visitor.predict(f"{extra[0]},{extra[1]},12345", api_name="/toggle_head")
    reference.select(heads=[*reference.selected_heads, extra])
    assert heads_of(heads) == reference.selected_heads and k["value"] == 3  # k stays the top-k value; a custom set of 4 votes
    assert "A custom set of 4 heads votes" in summary
    assert loo_of(summary) == pytest.approx(reference.leave_one_out_accuracy(), abs=5e-4)
    marks = plot_json(heatmap)["data"][1]
    assert (extra[0], extra[1]) in set(zip(marks["y"], marks["x"]))

    _, summary, _, heads, _, _ = visitor.predict(f"{extra[0]},{extra[1]}", api_name="/toggle_head")  # off again
    reference.select(heads=[h for h in reference.selected_heads if h != extra])
    assert heads_of(heads) == reference.selected_heads

    _, summary, _, heads, _, _ = visitor.predict(["L0 H0", "L1 H1", "L2 H2"], api_name="/set_heads")
    reference.select(heads=[(0, 0), (1, 1), (2, 2)])
    assert heads_of(heads) == [(0, 0), (1, 1), (2, 2)]
    assert loo_of(summary) == pytest.approx(reference.leave_one_out_accuracy(), abs=5e-4)
    visitor.predict(8, api_name="/set_k")
    reference.select(k=8)


@pytest.mark.parametrize("bad", [0, 200, 2.5])
def test_a_k_out_of_range_puts_the_box_back_and_every_view_keeps_the_k_that_votes(flow, bad):
    visitor = flow[0]
    visitor.predict(8, api_name="/set_k")
    heatmap, summary, selection, heads, k, _ = visitor.predict(bad, api_name="/set_k")
    assert k["value"] == 8 and len(heads_of(heads)) == 8 and len(selection["data"]) == 8
    assert (
        "20 selected" not in plot_json(heatmap)["layout"]["title"]["text"] and "8 selected" in plot_json(heatmap)["layout"]["title"]["text"]
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "three", None, 2.5, -1, 6])
def test_whole_numbers_from_the_page_are_checked_with_a_message(bad):
    from sav_explorer.errors import DataError
    from sav_explorer.ui.common import whole_number

    assert whole_number(3.0, "k", 1, 5) == 3
    with pytest.raises(DataError, match="k must be a whole number between 0 and 5"):
        whole_number(bad, "k", 0, 5)


def test_a_fraction_of_random_draws_gets_a_clear_message(flow):
    """(NaN, which the client cannot send as JSON, meets the same check: the test above.)"""
    with pytest.raises(AppError, match="random-head draws must be a whole number between 0 and 5; got 2.5"):
        flow[0].predict([], True, "zero", "generate", 2.5, "", api_name="/ablate")


def test_classify_and_held_out_accuracy_match_the_engine(flow, model):
    visitor, _, _, reference = flow
    queries = load_examples(SIZE / "queries.jsonl")
    picked = [queries[0], queries[-1]]
    results, choice, label, votes, head_table, answer, shown = visitor.predict(
        [handle_file(str(e.images[0])) for e in picked], "", api_name="/classify"
    )
    expected = predict_examples(model, reference, [Example(e.images, picked[0].question) for e in picked])
    assert [row[1] for row in results["data"]] == [p.label for p in expected]
    assert [item["caption"] for item in shown] == [p.label for p in expected]
    assert f"SAV prediction: **{expected[0].label}**" in label
    assert f"{expected[0].votes[expected[0].label]} of 8 heads voted for it" in label
    assert plot_json(votes)["data"][0]["y"] == [expected[0].votes[c] for c in reference.classes_]
    assert sum(expected[0].votes.values()) == 8 and len(head_table["data"]) == 8
    assert [row[2] for row in head_table["data"]] == [h.vote for h in expected[0].heads]
    assert head_table["headers"] == ["layer", "head", "vote", "sim large", "sim small"]
    assert isinstance(answer, str) and all(row[3] == results["data"][i][3] for i, row in enumerate(results["data"]))

    label2, _, _, _ = visitor.predict(choice["choices"][1][0], api_name="/show_detail")
    assert f"SAV prediction: **{expected[1].label}**" in label2

    accuracy, confusion, per_class = visitor.predict([], True, "", api_name="/evaluate")
    truth = [e.label for e in queries]
    report = evaluate([p.label for p in predict_examples(model, reference, queries)], truth, reference.classes_)
    assert f"**{report.accuracy:.3f}** on 20 examples" in accuracy
    matrix = plot_json(confusion)["data"][0]["z"]
    assert matrix == report.confusion_matrix and sum(map(sum, matrix)) == 20
    assert {row[0] for row in per_class["data"]} == {"large", "small"}


def test_export_and_restore_round_trip(flow, url, tmp_path):
    visitor, _, _, reference = flow
    clf_zip, scores_csv, heatmap_png, activations, status = visitor.predict(api_name="/export")
    lines = Path(scores_csv).read_text().strip().splitlines()
    assert lines[0] == "layer,head,in_sample_accuracy,leave_one_out_accuracy,selected" and len(lines) == 65
    assert sum(line.endswith(",1") for line in lines[1:]) == 8
    assert Image.open(heatmap_png).size[0] > 200
    tensors = load_file(activations)
    assert tuple(tensors["activations"].shape[:2]) == (10, 64) and tensors["labels"].tolist().count(0) == 5
    with zipfile.ZipFile(clf_zip) as zf:
        zf.extractall(tmp_path / "clf")
    saved = SAVClassifier.load(tmp_path / "clf")
    assert saved.selected_heads == reference.selected_heads and saved.manifest_.question == "is the shape small or large ?"

    newcomer = client(url)  # a new visitor restores the file and gets the same classifier
    heatmap, summary, _, heads, _, _, question = newcomer.predict(handle_file(clf_zip), api_name="/restore")
    assert heads_of(heads) == reference.selected_heads and question == "is the shape small or large ?"
    assert loo_of(summary) == pytest.approx(reference.leave_one_out_accuracy(), abs=5e-4)
    _, _, label, _, _, _, _ = newcomer.predict([handle_file(str(SIZE / "queries_small_0.png"))], "", api_name="/classify")
    assert re.search(r"SAV prediction: \*\*(large|small)\*\*", label)


# ----------------------------------------------------------------------------- bad input, clear messages
def test_bad_inputs_get_clear_messages_and_the_app_keeps_serving(url, tmp_path):
    visitor = client(url)
    images = write_images(tmp_path / "img", {"red": (220, 20, 20), "blue": (20, 20, 220)})
    cases = [
        (("", 200704, 4, 8, "in-sample"), "/extract", "no support examples"),
        (([], "red"), "/add_images", "no images"),
        (([handle_file(str(images["red"]))], "   "), "/add_images", "unlabeled images"),
        ((3,), "/set_k", "extract heads first"),
        (("evil/model", "default", ""), "/load_model", "not allowed"),
        (("/etc", "default", ""), "/load_model", "not allowed"),
        (("nonexistent-task",), "/load_example", "not in the list of choices"),
        (([],), "/upload_support", "no file uploaded"),
    ]
    for args, endpoint, message in cases:
        with pytest.raises(AppError, match=message):
            visitor.predict(*args, api_name=endpoint)

    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(AppError, match="not an image"):
        visitor.predict([handle_file(str(not_image))], "red", api_name="/add_images")

    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../escape.png", b"x")
    with pytest.raises(AppError, match="escapes its folder"):
        visitor.predict([handle_file(str(slip))], api_name="/upload_support")

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("red/a.png", b"\0" * (30 * 1024 * 1024))
    with pytest.raises(AppError, match="zip bomb"):
        visitor.predict([handle_file(str(bomb))], api_name="/upload_support")

    corrupt = tmp_path / "classifier.zip"
    with zipfile.ZipFile(corrupt, "w") as zf:
        zf.writestr("manifest.json", "{not json")
        zf.writestr("tensors.safetensors", b"garbage")
    with pytest.raises(AppError, match="not valid JSON"):
        visitor.predict(handle_file(str(corrupt)), api_name="/restore")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(AppError, match="not a classifier zip"):
        visitor.predict(handle_file(str(tmp_path / "junk.zip")), api_name="/restore")

    # a label with stray spaces is trimmed (with a warning), so " red" and "red" are one class
    table, *_ = visitor.predict([handle_file(str(images["red"]))], "  red ", api_name="/add_images")
    table, *_ = visitor.predict([handle_file(str(images["red"]))], "red", api_name="/add_images")
    assert [row[2] for row in table["data"]] == ["red", "red"]
    with pytest.raises(AppError, match="need at least 2 classes"):
        visitor.predict("what colour ?", 200704, 4, 2, "in-sample", api_name="/extract")
    table, *_ = visitor.predict("size", api_name="/load_example")  # still serving this visitor
    assert len(table["data"]) == 10


def test_user_text_is_escaped_everywhere(url, tmp_path):
    visitor = client(url)
    evil = "<b>x</b>"
    images = write_images(tmp_path / "img", {"a": (220, 20, 20), "b": (210, 40, 30), "c": (20, 20, 220), "d": (30, 40, 210)})
    visitor.predict([handle_file(str(images["a"])), handle_file(str(images["b"]))], evil, api_name="/add_images")
    with pytest.raises(AppError) as single:
        visitor.predict("what colour ?", 200704, 4, 4, "in-sample", api_name="/extract")
    assert "&lt;b&gt;x&lt;/b&gt;" in str(single.value) and evil not in str(single.value)

    table, gallery, _, status, _, _ = visitor.predict(
        [handle_file(str(images["c"])), handle_file(str(images["d"]))], "y", api_name="/add_images"
    )
    assert [row[2] for row in table["data"]] == [evil, evil, "y", "y"]  # a table cell is text, shown as typed
    assert evil not in status and "&lt;b&gt;x&lt;/b&gt;" in status
    visitor.predict("what colour ?", 200704, 4, 4, "in-sample", api_name="/extract")
    _, _, label, votes, head_table, _, _ = visitor.predict([handle_file(str(images["a"]))], "", api_name="/classify")
    bars = plot_json(votes)
    assert "&lt;b&gt;x&lt;/b&gt;" in bars["data"][0]["x"] and evil not in json.dumps(bars)
    assert evil not in label and ("&lt;b&gt;x&lt;/b&gt;" in label or "**y**" in label)  # escaped: shown as text, never markup

    rows = [{"image": "a.png", "label": evil}, {"image": "c.png", "label": "y"}]
    (tmp_path / "img" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    files = [handle_file(str(tmp_path / "img" / name)) for name in ("test.jsonl", "a.png", "c.png")]
    _, confusion, _ = visitor.predict(files, False, "", api_name="/evaluate")
    assert evil not in json.dumps(plot_json(confusion)) and "&lt;b&gt;x&lt;/b&gt;" in plot_json(confusion)["data"][0]["y"]


# ----------------------------------------------------------------------------- isolation and concurrency
def test_two_visitors_on_different_tasks_never_see_each_others_data(url):
    a, b = client(url), client(url)
    a.predict("size", api_name="/load_example")
    b.predict("presence", api_name="/load_example")
    with ThreadPoolExecutor(2) as pool:  # both extractions queued at once in the shared model group
        jobs = [pool.submit(v.predict, "", 200704, 4, 4, "in-sample", api_name="/extract") for v in (a, b)]
        results = [job.result() for job in jobs]
    for result in results:
        assert len(result[2]["data"]) == 4
    _, _, label_a, votes_a, _, _, _ = a.predict([handle_file(str(SIZE / "queries_large_0.png"))], "", api_name="/classify")
    _, _, label_b, votes_b, _, _, _ = b.predict([handle_file(str(PRESENCE / "queries_yes_0.png"))], "", api_name="/classify")
    assert set(plot_json(votes_a)["data"][0]["x"]) == {"large", "small"} and re.search(r"\*\*(large|small)\*\*", label_a)
    assert set(plot_json(votes_b)["data"][0]["x"]) == {"no", "yes"} and re.search(r"\*\*(no|yes)\*\*", label_b)
    accuracy_a, confusion_a, _ = a.predict([], True, "", api_name="/evaluate")
    accuracy_b, confusion_b, _ = b.predict([], True, "", api_name="/evaluate")
    assert set(plot_json(confusion_a)["data"][0]["x"]) == {"large", "small"}
    assert set(plot_json(confusion_b)["data"][0]["x"]) == {"no", "yes"}
    assert "on 20 examples" in accuracy_a and "on 20 examples" in accuracy_b
    table_a, *_ = a.predict("size", api_name="/load_example")
    assert all("small" in row[1] or "large" in row[1] for row in table_a["data"])
    a.predict("colour", api_name="/load_example")  # a new support set, not yet extracted:
    accuracy_a2, confusion_a2, _ = a.predict([], True, "", api_name="/evaluate")  # the classifier's own task's queries
    assert set(plot_json(confusion_a2)["data"][0]["y"]) == {"large", "small"}


def test_model_work_shares_one_group_and_rescoring_never_queues_behind_it(app):
    _, demo = app
    by_name = {fn.api_name: fn for fn in demo.fns.values()}
    for name in (
        "extract",
        "classify",
        "evaluate",
        "load_model",
        "restore",
        "inspect",
        "inspect_image",
        "voting_heads",
        "classify_drawing",
        "classify_on_drop",
        "steer",
        "patch",
        "sweep",
        "attribute",
        "report",
    ):
        assert by_name[name].concurrency_id == "model" and by_name[name].concurrency_limit == 1
    for name in ("set_k", "toggle_head", "set_heads", "show_detail", "cancel", "toggle_inspected", "colour_heads", "causal_choices"):
        assert by_name[name].concurrency_id != "model" and by_name[name].concurrency_limit is None


def test_cancel_stops_between_batches_and_keeps_the_previous_result():
    explorer = Explorer(default_model_id())
    session, *_ = explorer.load_example("size", None)
    calls = []

    def progress(value, desc=None, unit=None):  # stands in for gr.Progress; the visitor presses Cancel after one batch
        calls.append(value)
        if isinstance(value, tuple) and value[0] > 0:
            explorer.cancel(session)

    session, heatmap, summary, _, _, _, status = explorer.extract("", 200704, 2, 4, "in-sample", session, progress=progress)
    assert "cancelled after 2 of 10 examples" in status and session.clf is None and summary == ""
    assert calls[-1] == (2, 10)
    session.close()
    assert not session.workdir.exists()
    first, second = Session.new(), Session.new()
    assert first.id != second.id and not first.workdir.exists()  # a folder is made on first use only


def test_model_loading_reports_the_model_or_what_went_wrong(url, monkeypatch):
    visitor = client(url)
    status = visitor.predict(default_model_id(), "default", "", api_name="/load_model")
    assert "8 layers, 64 heads" in status and "float32" in status
    other = client(url)  # another visitor picks the same model in bfloat16: a separate registry entry
    assert "bfloat16" in other.predict(default_model_id(), "bfloat16", "", api_name="/load_model")
    visitor.predict("size", api_name="/load_example")
    _, summary, *_ = visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
    assert "float32" in visitor.predict(default_model_id(), "default", "", api_name="/load_model")  # unchanged for the first
    with pytest.raises(AppError, match="not in the list of choices"):
        visitor.predict(default_model_id(), "int3", "", api_name="/load_model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the app runs in this process: the hub is now unreachable
    with pytest.raises(AppError, match="could not load model 'Qwen/Qwen2-VL-2B-Instruct'"):
        visitor.predict("Qwen/Qwen2-VL-2B-Instruct", "default", "", api_name="/load_model")
    table, *_ = visitor.predict("size", api_name="/load_example")  # this visitor still has a working session
    assert len(table["data"]) == 10


def test_support_from_a_jsonl_with_its_images_and_from_a_class_folder_zip(url, model, tmp_path):
    visitor = client(url)
    files = [SIZE / "support.jsonl", *sorted(SIZE.glob("support_*.png"))]
    table, _, question, status = visitor.predict([handle_file(str(p)) for p in files], api_name="/upload_support")
    assert len(table["data"]) == 10 and question == "is the shape small or large ?"

    archive = tmp_path / "classes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(SIZE.glob("support_*.png")):
            label = path.stem.split("_")[1]
            zf.write(path, f"my-set/{label}/{path.name}")
    table, _, _, status = visitor.predict([handle_file(str(archive))], api_name="/upload_support")
    assert sorted(row[2] for row in table["data"]) == ["large"] * 5 + ["small"] * 5
    _, summary, *_ = visitor.predict("is the shape small or large ?", 200704, 4, 4, "in-sample", api_name="/extract")
    engine, _ = fit_examples(model, load_examples(SIZE / "support.jsonl"), Encoding(max_pixels=200704), k=4)  # the same images and labels
    assert loo_of(summary) == pytest.approx(engine.leave_one_out_accuracy(), abs=5e-4)


def test_sessions_expire_and_uploads_are_capped(app):
    _, demo = app
    from gradio.components import State

    states = [block for block in demo.blocks.values() if isinstance(block, State)]
    assert len(states) == 1 and states[0].time_to_live == 2 * 60 * 60 and states[0].delete_callback is not None
    assert demo.max_file_size == 100 * 1024 * 1024


def test_labels_can_be_edited_one_by_one_in_the_support_table(url):
    visitor = client(url)
    table, *_ = visitor.predict("size", api_name="/load_example")
    rows = [list(row) for row in table["data"]]
    rows[0][2] = "  tiny "
    edited, _, _, status = visitor.predict({"headers": table["headers"], "data": rows, "metadata": None}, api_name="/edit_labels")
    assert edited["data"][0][2] == "tiny" and [r[2] for r in edited["data"][1:]] == [r[2] for r in table["data"][1:]]
    assert "1 label(s) changed" in status
    rows[1][2] = " "
    with pytest.raises(AppError, match="unlabeled image in row 2"):
        visitor.predict({"headers": table["headers"], "data": rows, "metadata": None}, api_name="/edit_labels")


def test_cancel_over_http_reaches_a_running_extraction(url, monkeypatch):
    """The cancel event is not queued behind the model work it cancels, and it stops it between batches."""
    import dataclasses
    import threading

    from sav_explorer.ui import explore

    first_batch_done, release = threading.Event(), threading.Event()
    real_fit = explore.fit_examples

    def fit_that_pauses(loaded, examples, encoding, run, **kwargs):
        def report(done, total):
            run.on_batch(done, total)
            first_batch_done.set()
            for _ in range(600):  # waits (at most a minute) until the visitor's cancel has arrived
                if run.should_stop():
                    break
                release.wait(0.1)

        return real_fit(loaded, examples, encoding, dataclasses.replace(run, on_batch=report), **kwargs)

    monkeypatch.setattr(explore, "fit_examples", fit_that_pauses)
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    job = visitor.submit("", 200704, 2, 4, "in-sample", api_name="/extract")
    assert first_batch_done.wait(120)
    assert "Cancelling" in visitor.predict(api_name="/cancel")
    _, summary, selection, _, _, status = job.result(timeout=120)
    assert "cancelled after 2 of 10 examples" in status and summary == "" and selection["data"] == []


def test_caps_on_examples_and_images_are_enforced(url, flow, monkeypatch):
    from sav_explorer.ui import classify, support

    monkeypatch.setattr(support, "MAX_SUPPORT", 6)
    monkeypatch.setattr(classify, "MAX_CLASSIFY", 1)
    with pytest.raises(AppError, match="10 examples; the limit here is 6"):
        client(url).predict("size", api_name="/load_example")
    visitor = flow[0]
    two = [handle_file(str(SIZE / "queries_small_0.png")), handle_file(str(SIZE / "queries_small_1.png"))]
    with pytest.raises(AppError, match="2 images at once; the limit is 1"):
        visitor.predict(two, "", api_name="/classify")
    with pytest.raises(AppError, match="greater than maximum value"):  # the slider itself refuses
        visitor.predict("", 10**9, 4, 8, "in-sample", api_name="/extract")


def test_inspect_shows_where_a_head_looks_its_class_maps_and_the_voting_heads(url, model):
    """On the colour task: head (2, 0) was trained to point at the object, and the page says so."""
    visitor = client(url)
    visitor.predict("colour", api_name="/load_example")
    visitor.predict("", 200704, 8, 5, "in-sample", api_name="/extract")
    title, image_choice, overlay, shares, class_maps = visitor.predict("2,0,123", None, api_name="/inspect")  # buttons are not returned
    support = load_examples(EXAMPLES_DIR / "colour" / "support.jsonl")
    expected = look(model, support[0], [(2, 0)]).heads[(2, 0)]
    assert "Layer 2, head 0" in title and "selected, rank" in title
    assert image_choice["value"] == f"support 1: {support[0].name} (red)" and len(image_choice["choices"]) == 30
    assert f"image {expected.image_share:.1%}" in shares
    assert Image.open(overlay).size == (256, 256)  # the 64-pixel image, enlarged so the map can be read
    assert sorted(item["caption"].split(" ")[0] for item in class_maps) == sorted({e.label for e in support})

    chosen = f"support 7: {support[6].name} ({support[6].label})"
    _, image_choice, _, shares, _ = visitor.predict("", chosen, api_name="/inspect_image")  # same head, another image
    assert image_choice["value"] == chosen
    assert f"image {look(model, support[6], [(2, 0)]).heads[(2, 0)].image_share:.1%}" in shares

    _, _, _, heads, _, _ = visitor.predict(api_name="/toggle_inspected")
    assert (2, 0) not in heads_of(heads)

    query = handle_file(str(EXAMPLES_DIR / "colour" / "queries_red_0.png"))
    visitor.predict([query], "", api_name="/classify")
    maps = visitor.predict("1: queries_red_0.png", api_name="/voting_heads")
    assert len(maps) == 4 and all(item["caption"].startswith("L") and "→" in item["caption"] for item in maps)
    with pytest.raises(AppError, match="no head 9 in layer 0"):
        visitor.predict("0,9,1", None, api_name="/inspect")


def test_a_row_of_the_per_head_votes_names_that_head_and_image_for_inspect():
    """The select event of the per-head table: its row's head, on that classified image, goes to Inspect."""
    from types import SimpleNamespace

    from sav_explorer.classifier import HeadVote, Prediction
    from sav_explorer.ui.session import Classified

    session = Session.new()
    votes = [HeadVote(2, 0, "red", {"red": 0.9}), HeadVote(3, 6, "red", {"red": 0.8})]
    session.predictions = [Classified("a.png", Path("a.png"), "q ?", Prediction("red", {"red": 2}, votes), "")]
    cell, image, _ = Explorer(default_model_id()).inspect_vote_row(SimpleNamespace(index=[1, 2]), "1: a.png", session)
    assert cell.startswith("3,6,row,") and image["value"] == "query 1: a.png" and "query 1: a.png" in image["choices"]


def test_questions_too_long_are_refused_before_the_model_runs(flow):
    """A question over the character limit is refused at once; one within it but longer, as tokens, than
    the bundled model's 256 positions is refused naming both lengths."""
    import time

    visitor = flow[0]
    image = handle_file(str(SIZE / "queries_small_0.png"))
    started = time.perf_counter()
    with pytest.raises(AppError, match="200,000 characters long; questions are limited to 4,000"):
        visitor.predict([image], "a" * 200_000, api_name="/classify")
    assert time.perf_counter() - started < 30
    with pytest.raises(AppError, match=r"tokens long with its question and images; the model reads at most 256"):
        visitor.predict([image], " ".join(["what"] * 600), api_name="/classify")


def test_moving_k_during_a_classification_leaves_it_with_the_heads_it_started_with(monkeypatch):
    """The model's pass is held back while another request moves k from 8 to 3: the classification
    still succeeds and 8 heads vote (it failed half the time with "activations lack layer(s)")."""
    import threading
    import time

    import sav_explorer.ui.classify as classify
    from app_harness import running_app

    real = classify.predict_examples

    def held_back(*args, **kwargs):
        time.sleep(3)
        return real(*args, **kwargs)

    monkeypatch.setattr(classify, "predict_examples", held_back)
    with running_app() as (url, _):
        visitor = client(url)
        visitor.predict("size", api_name="/load_example")
        visitor.predict("", 200704, 4, 8, "in-sample", api_name="/extract")
        result = {}
        worker = threading.Thread(
            target=lambda: result.update(out=visitor.predict([handle_file(str(SIZE / "queries_small_0.png"))], "", api_name="/classify"))
        )
        worker.start()
        time.sleep(1.5)
        visitor.predict(3, api_name="/set_k")
        worker.join(120)
        _, _, label, votes, head_table, _, _ = result["out"]
        assert len(head_table["data"]) == 8


def test_one_voting_head_is_said_in_the_singular(flow):
    visitor = flow[0]
    _, summary, _, _, _, _ = visitor.predict(1, api_name="/set_k")
    assert "1 head votes ·" in summary and "1 heads" not in summary
    visitor.predict(8, api_name="/set_k")


def test_the_report_holds_the_fit_and_the_results_this_session_ran(flow, url):
    from plotly.offline import get_plotlyjs

    visitor = flow[0]
    visitor.predict([], True, "", api_name="/evaluate")
    visitor.predict([], True, True, "", api_name="/curve")
    path, status = visitor.predict(api_name="/report")
    assert "Report ready" in status and "evaluation" in status and "curve" in status and "ablation" not in status
    text = Path(path).read_text(encoding="utf-8")
    assert text.count(get_plotlyjs()) == 1 and text.count("Plotly.newPlot(") == 3  # heatmap, confusion matrix, curve
    assert "task size" in text and "&#x27;is the shape small or large ?&#x27;" in text and "large 5 · small 5 (10 in all)" in text
    assert "k = 8: the top 8 heads of 64" in text and "on 20 labelled queries" in text
    assert "over the support images" in text and text.count("<img src='data:image/") >= 3 * 2 * 2  # 3 heads x 2 classes x 2
    assert "Not part of this report (not run): the model&#x27;s own answers, ablation, steering" in text
    with pytest.raises(AppError, match="extract heads first"):
        client(url).predict(api_name="/report")
