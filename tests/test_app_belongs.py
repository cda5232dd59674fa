"""Results belong to what made them, over HTTP (gradio_client): a visitor who edits the support set while
an extraction runs, switches task, restores a classifier or draws again sees results that say what
they belong to, and never a result of one thing under the name of another.

Each test names the defect it guards against (issue "What a visitor can still break or be misled by").
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from app_harness import client
from sav_explorer.models import EXAMPLES_DIR

SIZE = EXAMPLES_DIR / "size"


def size_zip(path: Path) -> Path:
    """The size task's support images as a zip of class folders: an upload, whose files live in the session."""
    with zipfile.ZipFile(path, "w") as zf:
        for image in sorted(SIZE.glob("support_*.png")):
            zf.write(image, f"{image.stem.split('_')[1]}/{image.name}")
    return path


@pytest.fixture
def paused_extraction(monkeypatch):
    """Extractions pause after their first batch until `release` is set: the visitor's edit lands mid-run."""
    from sav_explorer.ui import explore

    first_batch_done, release = threading.Event(), threading.Event()
    real_fit = explore.fit_examples

    def fit_that_pauses(loaded, examples, encoding, run, **kwargs):
        def report(done, total):
            run.on_batch(done, total)
            first_batch_done.set()
            release.wait(120)

        return real_fit(loaded, examples, encoding, dataclasses.replace(run, on_batch=report), **kwargs)

    monkeypatch.setattr(explore, "fit_examples", fit_that_pauses)
    return first_batch_done, release


def title_of(heatmap: dict) -> str:
    return json.loads(heatmap["plot"])["layout"]["title"]["text"]


@pytest.mark.parametrize("edit", ["load another task", "clear the support set", "rename a class"])
def test_an_edit_during_an_extraction_leaves_the_fit_with_what_it_read_marked_out_of_date(url, tmp_path, paused_extraction, edit):
    """The fit was recorded under the new task's name and classes, or as a task with no examples, with no
    out-of-date mark; and a support set cleared mid-run deleted the files the run was still reading."""
    first_batch_done, release = paused_extraction
    visitor = client(url)
    table, *_ = visitor.predict([handle_file(str(size_zip(tmp_path / "size.zip")))], api_name="/upload_support")
    job = visitor.submit("is the shape small or large ?", 200704, 2, 4, "in-sample", api_name="/extract")
    assert first_batch_done.wait(120)
    if edit == "load another task":
        visitor.predict("shape", api_name="/load_example")
    elif edit == "clear the support set":
        visitor.predict(api_name="/clear_support")
    else:
        rows = [[*row[:2], "huge" if row[2] == "large" else row[2], row[3]] for row in table["data"]]
        visitor.predict({"headers": table["headers"], "data": rows, "metadata": None}, api_name="/edit_labels")
    release.set()
    heatmap, summary, *_, status = job.result(timeout=300)
    assert "Extracted" in status  # the files it read were still there
    assert "2 classes · 10 support examples" in summary
    assert "task my task" in title_of(heatmap) and "2 classes: large, small" in title_of(heatmap)
    banner, _ = visitor.predict("", api_name="/banners")
    assert "Out of date" in banner and "the support set" in banner
    assert "2 classes: large, small" in banner


# ----------------------------------------------------------------------------- a visitor who has gone
def test_the_model_pass_of_a_visitor_who_has_gone_stops_at_the_next_batch(app, monkeypatch):
    """A visitor asks for a held-out evaluation (20 queries, 3 batches) and closes the connection during
    the first batch: the pass went on to its end, holding the shared model queue for everyone."""
    from sav_explorer.ui import classify

    url, demo = app
    batches_done, stopped = [], threading.Event()
    real_query_run = classify.query_run

    def query_run_that_waits(on_batch=None, should_stop=None):
        run = real_query_run(on_batch, should_stop)

        def report(done, total):
            batches_done.append(done)
            if on_batch is not None:
                on_batch(done, total)  # the page's progress message: the visitor closes the connection on it
            for _ in range(600):  # at most a minute, until the pass is told to stop
                if run.should_stop is not None and run.should_stop():
                    stopped.set()
                    return
                time.sleep(0.1)

        return dataclasses.replace(run, on_batch=report)

    monkeypatch.setattr(classify, "query_run", query_run_that_waits)
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
    index = next(i for i, fn in demo.fns.items() if fn.api_name == "evaluate")
    with httpx.Client(base_url=f"{url}/gradio_api", timeout=60) as http:  # the page's own protocol: join, then listen
        joined = http.post("/queue/join", json={"data": [None, True, "", None], "fn_index": index, "session_hash": visitor.session_hash})
        assert joined.status_code == 200
        with http.stream("GET", "/queue/data", params={"session_hash": visitor.session_hash}) as events:
            for line in events.iter_lines():
                if '"progress"' in line:  # the first batch is done
                    break
        # the connection is closed here: the visitor has gone
    assert stopped.wait(120)
    other = client(url)  # the model's queue is free again: another visitor's request runs, after the pass ended
    other.predict("size", api_name="/load_example")
    other.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
    assert batches_done == [8]  # the pass stopped before its second batch


# ----------------------------------------------------------------------------- drawings
def drawing(colour: tuple, box: tuple) -> str:
    """A canvas as the page sends it: a PNG data URL of a white 256 x 256 square with one filled rectangle."""
    canvas = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(canvas).rectangle(box, fill=colour)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def pixels(gallery: list) -> list[bytes]:
    return [Image.open(item["image"]).convert("RGB").tobytes() for item in gallery]


def draw(visitor, data_url: str) -> list[bytes]:
    """A finished stroke, as the page's events run it: the votes, the Classify views, the voting heads' overlays."""
    visitor.predict(data_url, "", api_name="/classify_drawing")
    visitor.predict(api_name="/classified_views")
    return pixels(visitor.predict("1: drawing.png", api_name="/voting_heads"))


def test_the_voting_heads_overlays_follow_each_new_drawing(url):
    """Every stroke overwrites the same file, and the overlays were cached by its path: after a second
    drawing the voting heads' overlays still showed where they looked on the first."""
    red_top_left, blue_bottom_right = drawing((220, 30, 30), (20, 20, 90, 90)), drawing((30, 30, 220), (160, 160, 236, 236))
    visitor, newcomer = client(url), client(url)
    for who in (visitor, newcomer):
        who.predict("colour", api_name="/load_example")
        who.predict("", 200704, 8, 5, "in-sample", api_name="/extract")
    first, second = draw(visitor, red_top_left), draw(visitor, blue_bottom_right)
    assert second == draw(newcomer, blue_bottom_right)  # the second drawing, in a session that saw no other
    assert second != first


# ----------------------------------------------------------------------------- Gradio's upload cache
def test_refused_uploads_leave_gradios_cache_within_its_bound(tmp_path, monkeypatch):
    """Every upload stays in Gradio's cache, refused ones included, outside the session's quota: it grew
    to 217 MB in one run and was never cleaned. Bounded here to 1 MB, swept every second."""
    from app_harness import running_app
    from sav_explorer.ui.housekeeping import disk_use

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setenv("SAV_UPLOAD_CACHE_MB", "1")
    monkeypatch.setenv("SAV_UPLOAD_SWEEP_S", "1")
    with running_app() as (url, demo):
        assert demo.delete_cache is not None  # and Gradio deletes by age
        visitor = client(url)
        visitor.predict("size", api_name="/load_example")
        visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
        for i in range(4):
            junk = tmp_path / f"junk-{i}.png"
            junk.write_bytes(bytes([i]) * 600 * 1024)  # named like an image, is not one
            with pytest.raises(AppError, match="junk-"):
                visitor.predict([handle_file(str(junk))], "", api_name="/classify")
        for _ in range(600):  # at most a minute: the sweep runs every second
            if disk_use(cache) <= 2**20:
                break
            time.sleep(0.1)
        assert disk_use(cache) <= 2**20
        image = handle_file(str(SIZE / "queries_small_0.png"))  # a classified image outlives its cached upload
        visitor.predict([image], "", api_name="/classify")
        visitor.predict("1: queries_small_0.png", api_name="/voting_heads")
