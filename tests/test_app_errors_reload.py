"""The errors of an evaluation (thumbnails with their votes, a head's projection) against the engine and an
independent PCA; and a reload, which finds the session by the browser's token while another visitor, a
forged token or no token gets a fresh one. Over HTTP (gradio_client), then in Chromium (Playwright).
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from playwright.sync_api import expect
from test_app_browser import settled_box

from app_harness import TIMEOUT_MS, client, load_task_and_extract, open_page
from sav_explorer import Encoding, RunOptions, fit_examples, load_examples, load_model
from sav_explorer.models import EXAMPLES_DIR, default_model_id
from sav_explorer.pipeline import Evaluation, capture_for, evaluate
from sav_explorer.ui.blocks import Explorer
from sav_explorer.ui.registry import ModelKey
from sav_explorer.ui.session import Fit, HeldOut, Session, SessionStore

SIZE = EXAMPLES_DIR / "size"
STORAGE_KEY = "sav-explorer-session"  # where gr.BrowserState keeps the token (encrypted) in the page's localStorage
K = 1  # at k = 1 the size task gets a few of its 20 queries wrong: errors to look at


@pytest.fixture(scope="module")
def model():
    return load_model(default_model_id())


@pytest.fixture(scope="module")
def engine(model):
    """The engine's own classifier on the size task at k = 1, its support and query activations, its predictions."""
    support, queries = load_examples(SIZE / "support.jsonl"), load_examples(SIZE / "queries.jsonl")
    clf, support_acts = fit_examples(model, support, Encoding(max_pixels=200704), RunOptions(batch_size=4), k=K)
    query_acts = capture_for(model, clf, queries)
    return SimpleNamespace(
        clf=clf, support=support, queries=queries, support_acts=support_acts, query_acts=query_acts, predictions=clf.explain(query_acts)
    )


@pytest.fixture(scope="module")
def visitor(url):
    """One visitor with a browser token: the size task extracted at k = 1 and evaluated on its queries."""
    visitor = client(url)
    token, *untouched = visitor.predict(None, api_name="/resume")
    assert all(view == {"__type__": "update"} for view in untouched)  # a fresh session: the page stays as it loaded
    visitor.predict("size", api_name="/load_example")
    extracted = visitor.predict("", 200704, 4, K, "in-sample", api_name="/extract")
    evaluated = visitor.predict([], True, "", api_name="/evaluate")
    errors = visitor.predict(None, api_name="/mistakes")
    return SimpleNamespace(client=visitor, token=token, extracted=extracted, evaluated=evaluated, errors=errors)


def independent_pca(rows: np.ndarray) -> np.ndarray:
    """Unit rows, centred, on the two largest eigenvectors of their scatter matrix, each flipped so that its
    largest-magnitude entry is positive: numpy's eigh, not the library's SVD."""
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    components = vectors[:, np.argsort(values)[::-1][:2]].T
    for row in components:
        row *= np.sign(row[np.argmax(np.abs(row))])
    return centred @ components.T


def test_the_misclassified_queries_show_as_thumbnails_with_their_votes_as_the_engine_finds_them(visitor, engine):
    truth = [e.label for e in engine.queries]
    wrong = [(e, p) for e, p in zip(engine.queries, engine.predictions) if p.label != e.label]
    assert len(wrong) >= 1  # the premise of the page's view: at k = 1 the size task has errors
    note, thumbnails, head, _ = visitor.errors
    assert f"**{len(wrong)} of 20 misclassified**" in note
    assert [Path(item["image"]).name for item in thumbnails] == [e.name for e, _ in wrong]
    for item, (example, prediction) in zip(thumbnails, wrong):
        ranked = ", ".join(f"{c} {v}" for c, v in sorted(prediction.votes.items(), key=lambda cv: (-cv[1], cv[0])))
        assert item["caption"] == f"{example.label} → {prediction.label} · {ranked}"
    assert head["value"] == "L{} H{}".format(*engine.clf.selected_heads[0]) and len(head["choices"]) == K
    report = evaluate([p.label for p in engine.predictions], truth, engine.clf.classes_)
    assert f"**{report.accuracy:.3f}** on 20 examples" in visitor.evaluated[0]


def test_the_projection_is_the_pca_of_the_heads_unit_activations_with_the_wrong_ones_crossed(visitor, engine):
    layer, index = engine.clf.selected_heads[0]
    support_rows = engine.support_acts.blocks[engine.support_acts.layout.layers.index(layer)][:, index]
    query_rows = engine.query_acts.blocks[engine.query_acts.layout.layers.index(layer)][:, index]
    expected = independent_pca(torch.cat([support_rows, query_rows]).double().numpy())
    names = [e.name for e in engine.support] + [e.name for e in engine.queries]
    where = dict(zip(names, expected.tolist()))
    figure = json.loads(visitor.errors[3]["plot"])
    seen, crossed = {}, set()
    for trace in figure["data"]:
        for x, y, text, custom in zip(trace["x"], trace["y"], trace["text"], trace["customdata"]):
            name = text.split("<br>")[0]
            seen[name] = (x, y)
            assert custom[0].startswith("data:image/png;base64,")  # the page's hover shows the image
            if trace["marker"]["symbol"] == "x":
                crossed.add(name)
    assert set(seen) == set(names)
    for name, point in seen.items():
        assert point == pytest.approx(where[name], abs=1e-4)
    assert crossed == {e.name for e, p in zip(engine.queries, engine.predictions) if p.label != e.label}
    assert f"Head L{layer} H{index}" in figure["layout"]["title"]["text"]
    again = visitor.client.predict(f"L{layer} H{index}", api_name="/project_head")  # another draw, the same picture
    assert json.loads(again["plot"])["data"] == figure["data"]


def evaluated_session(explorer: Explorer, engine, restored: bool = False) -> Session:
    """A session holding the engine's fit and its evaluation, as the page's Evaluate leaves it (`restored`: a
    classifier restored from a file, without support activations or images)."""
    session = explorer.session(None)
    clf = engine.clf
    labels, examples = ([], []) if restored else ([e.label for e in engine.support], engine.support)
    acts = None if restored else engine.support_acts
    session.keep_fit(Fit(clf, acts, labels, ModelKey(default_model_id()), "", 8, "size", "size", examples))
    head = clf.selected_heads[0]
    rows = {head: engine.query_acts.blocks[engine.query_acts.layout.layers.index(head[0])][:, head[1]]}
    evaluation = Evaluation.of(engine.queries, engine.predictions, clf.classes_)
    session.evaluation = HeldOut(**vars(evaluation), heads=[head], rows=rows, fit_created=session.fit.created)
    return session


def test_a_click_on_a_thumbnail_inspects_the_projected_head_on_that_image(engine):
    """The gallery's select event: the projected head and that test image go to Inspect, and the Explore tab
    comes to the front; Inspect then shows that head on that image."""
    explorer = Explorer(default_model_id())
    session = evaluated_session(explorer, engine)
    head = engine.clf.selected_heads[0]
    wrong = [i for i, (e, p) in enumerate(zip(engine.queries, engine.predictions)) if p.label != e.label]
    cell, image, tabs = explorer.inspect_mistake(SimpleNamespace(index=len(wrong) - 1), "L{} H{}".format(*head), session)
    query = engine.queries[wrong[-1]]
    assert cell.startswith(f"{head[0]},{head[1]},mistake,") and tabs.selected == "explore"
    assert image["value"].startswith(f"test {wrong[-1] + 1}: {query.name} ({query.label} → ") and image["value"] in image["choices"]
    _, title, choices, overlay, shares, _, _ = explorer.inspect(cell, image["value"], session)
    assert f"Layer {head[0]}, head {head[1]}" in title and choices["value"] == image["value"] and overlay.size[0] >= 64
    with pytest.raises(Exception, match="click one of its misclassified images"):
        explorer.inspect_mistake(SimpleNamespace(index=99), None, session)


def test_a_restored_classifier_projects_its_queries_only_and_a_new_fit_empties_the_errors(engine):
    explorer = Explorer(default_model_id())
    session = evaluated_session(explorer, engine, restored=True)
    note, thumbnails, _, figure = explorer.mistakes_views(None, session)
    assert sum(len(trace["x"]) for trace in figure.to_dict()["data"]) == 20 and "queries only" in figure.layout.title.text
    assert len(thumbnails) == len([p for e, p in zip(engine.queries, engine.predictions) if p.label != e.label])
    session.keep_fit(session.fit)  # as an extraction or a restore does: the evaluation belonged to the fit before
    accuracy, _, per_class, note, thumbnails, head, figure = explorer.held_out_views(session)
    assert (accuracy, per_class, note, thumbnails, head["choices"]) == ("", [], "", [], []) and not figure.data


def test_a_reload_brings_the_session_back_and_no_one_else_gets_it(url, visitor):
    """The browser's token is the only way back to a session: the same token (a reload) restores support set,
    question, heatmap, k and results; no token, an unknown token or a malformed one gets a fresh session."""
    reloaded = client(url).predict(visitor.token, api_name="/resume")  # a new page load with the same browser storage
    token, _, task, table, gallery, question, _, heatmap, summary, _, heads, k, _, *rest = reloaded
    accuracy, _, _, note, thumbnails, _, projection = rest[-7:]
    assert token == visitor.token and task["value"] == "size"
    assert len(table["data"]) == 10 and len(gallery) == 10 and question == "is the shape small or large ?"
    assert json.loads(heatmap["plot"])["data"] == json.loads(visitor.extracted[0]["plot"])["data"]
    assert summary == visitor.extracted[1] and k["value"] == K and heads == visitor.extracted[3]
    assert accuracy == visitor.evaluated[0] and note == visitor.errors[0]
    assert [t["caption"] for t in thumbnails] == [t["caption"] for t in visitor.errors[1]]
    assert json.loads(projection["plot"])["data"] == json.loads(visitor.errors[3]["plot"])["data"]

    stranger = client(url)  # one other visitor, who tries a token of its own and then guesses
    for other in (None, secrets.token_urlsafe(32), visitor.token[:-1] + ("A" if visitor.token[-1] != "A" else "B"), {"token": 1}):
        token, *views = stranger.predict(other, api_name="/resume")
        assert token != visitor.token and len(token) >= 43 and all(view == {"__type__": "update"} for view in views)
        note, thumbnails, _, _ = stranger.predict(None, api_name="/mistakes")  # nothing of the visitor's
        assert note == "" and thumbnails == []


def test_the_errors_and_the_reload_never_wait_for_the_model(app):
    """Neither needs a model call: they run at once, never queued behind another visitor's extraction."""
    by_name = {fn.api_name: fn for fn in app[1].fns.values()}
    for name in ("mistakes", "project_head", "resume"):
        assert by_name[name].concurrency_id != "model" and by_name[name].concurrency_limit is None


def test_the_store_keeps_sessions_for_their_time_to_live_only(tmp_path, monkeypatch):
    monkeypatch.setattr("sav_explorer.ui.session.session_root", lambda: tmp_path)
    store = SessionStore(ttl_s=60)
    kept, other = Session.new(), Session.new()
    kept.subdir("support")
    token = store.issue(kept)
    assert store.find(token) is kept and store.find("forged") is None and store.find(None) is None and store.find(7) is None
    store.release(kept)  # Gradio dropped the page's State (tab closed or reloaded): the store still holds it
    assert kept.workdir.is_dir() and store.find(token) is kept
    other.subdir("support")
    store.release(other)  # a session the store does not hold closes at once
    assert not other.workdir.exists()
    kept.last_used -= 61
    assert store.find(token) is None and not kept.workdir.exists() and len(store) == 0  # expired: closed and forgotten


# ----------------------------------------------------------------------------- in the browser
def test_in_the_browser_the_errors_show_a_click_inspects_and_a_reload_keeps_everything(browser, url, tmp_path, engine):
    """The size task at k = 1, evaluated: the misclassified thumbnails (as many as the engine finds) and the
    projection (hovering a crossed point shows its image); a click on a thumbnail inspects the head on it. A
    reload brings all of it back; another browser, whose stored token is forged, gets an empty page (a
    well-formed unknown token: over HTTP above)."""
    wrong = [(e, p.label) for e, p in zip(engine.queries, engine.predictions) if p.label != e.label]
    assert wrong  # the premise: at k = 1 the size task has errors to show
    first, first_guess = wrong[0]
    layer, head = engine.clf.selected_heads[0]
    page = open_page(browser, url, TIMEOUT_MS)
    load_task_and_extract(page, "size")
    k_box = page.locator("#sav-k input[type=number]")
    k_box.fill("1")
    k_box.press("Enter")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("1 selected")
    expect(page.get_by_text("1 head votes")).to_be_visible()
    page.get_by_role("tab", name="Classify").click()
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator("#sav-mistakes-note")).to_contain_text(f"{len(wrong)} of 20 misclassified")
    thumbnails = page.locator("#sav-mistakes img")
    expect(thumbnails).to_have_count(len(wrong))
    expect(page.locator("#sav-mistakes")).to_contain_text(f"{first.label} → {first_guess}")
    expect(page.locator("#sav-projection .scatterlayer .point")).to_have_count(30)
    expect(page.locator("#sav-projection .legendtext", has_text="misclassified")).to_have_count(1)

    crossed = page.evaluate(
        """() => { const plot = document.querySelector('#sav-projection .js-plotly-plot');
                   return plot.data.findIndex((trace) => trace.name.includes('misclassified')); }"""
    )
    # Hover the crossed points in turn until one is not under a neighbour: two queries can project a
    # few pixels apart, and the hover names the nearer.
    wrong_names = re.compile("|".join(re.escape(e.name) for e, _ in wrong))
    points = page.locator("#sav-projection .scatterlayer .trace").nth(crossed).locator(".point")
    expect(points).to_have_count(len(wrong))
    for index in range(len(wrong)):
        point = points.nth(index)
        point.scroll_into_view_if_needed()
        box = settled_box(page, point)  # measured once the plot has stopped moving (its late autosize)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        expect(page.locator("#sav-projection .hovertext")).to_be_visible()
        if wrong_names.search(page.locator("#sav-projection .hovertext").text_content() or ""):
            break
    expect(page.locator("#sav-projection .hovertext")).to_contain_text(wrong_names)
    card = page.locator("#sav-hover-thumb img")
    expect(card).to_be_visible()
    assert card.get_attribute("src").startswith("data:image/png;base64,")
    page.screenshot(path=str(tmp_path / "errors-hover.png"))  # the viewport: the card is fixed beside the pointer

    thumbnails.first.click()
    inspect = page.locator("#sav-inspect").first
    expect(inspect).to_contain_text(f"Layer {layer}, head {head}")
    expect(page.locator("#sav-inspect-image input")).to_have_value(
        re.compile(rf"test \d+: {re.escape(first.name)} \({first.label} → {first_guess}\)")
    )
    expect(page.locator("#sav-overlay img")).to_be_visible()
    page.screenshot(path=str(tmp_path / "inspect-error.png"), full_page=True)

    page.reload()
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("task size")
    expect(page.locator("#sav-heatmap .gtitle")).to_contain_text("1 selected")
    expect(page.locator("#sav-gallery img")).to_have_count(10)
    expect(page.locator("#sav-question textarea, #sav-question input").first).to_have_value("is the shape small or large ?")
    page.get_by_role("tab", name="Classify").click()
    expect(page.locator("#sav-mistakes img")).to_have_count(len(wrong))
    expect(page.get_by_text("Held-out accuracy")).to_have_count(2)  # the section's heading and the result
    page.screenshot(path=str(tmp_path / "reloaded.png"), full_page=True)
    page.close()

    other = browser.new_page(viewport={"width": 1440, "height": 1000})  # a new context: another browser, whose stored token is forged
    other.set_default_timeout(TIMEOUT_MS)
    forged = "forged:token"
    other.add_init_script(f"localStorage.setItem('{STORAGE_KEY}', '{forged}')")  # before the page's own script runs
    other.goto(url)
    other.wait_for_function(f"() => (localStorage.getItem('{STORAGE_KEY}') || '{forged}') !== '{forged}'")  # a new token came
    expect(other.get_by_text("No support examples yet.")).to_be_visible()
    assert "task size" not in (other.locator("#sav-heatmap").text_content() or "")
    other.close()
