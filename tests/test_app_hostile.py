"""What a hostile or confused visitor does, over HTTP: disk, model time, sessions, files, labels and words.

Each test names the defect it guards against (issue "Everything a visitor can break or be puzzled by").
"""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_harness import client
from sav_explorer.models import EXAMPLES_DIR
from sav_explorer.ui import housekeeping
from sav_explorer.ui.housekeeping import OWNER, PREFIX, disk_use, sweep_stale_sessions

COLOUR = EXAMPLES_DIR / "colour"


def session_folders() -> set[Path]:
    return set(housekeeping.session_root().glob(f"{PREFIX}*"))


def zeros_zip(path: Path, members: int = 199) -> Path:
    """A small zip of `members` files named like images, each 1 MiB of zeros."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            zf.writestr(f"red/{i}.png" if i % 2 else f"blue/{i}.png", b"\0" * 2**20)
    return path


def png(colour=(200, 30, 30), size=(64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- disk
def test_three_visitors_sending_a_zip_of_zeros_leave_less_than_1_mb_behind(url, tmp_path):
    archive = zeros_zip(tmp_path / "zeros.zip")
    assert archive.stat().st_size < 300 * 1024
    before = session_folders()
    for _ in range(3):
        with pytest.raises(AppError, match="expands|no images"):
            client(url).predict([handle_file(str(archive))], api_name="/upload_support")
    new = session_folders() - before
    assert sum(disk_use(folder) for folder in new) < 2**20


def test_a_zip_whose_files_are_not_images_says_which_were_skipped(url, tmp_path):
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("red/a.png", png())
        zf.writestr("blue/b.png", png((20, 20, 200)))
        zf.writestr("blue/c.png", b"\0" * 5000)  # named like an image, is not one
        zf.writestr("notes.txt", "hello")
    table, _, _, status = client(url).predict([handle_file(str(archive))], api_name="/upload_support")
    status = status.replace("\\", "")  # Markdown escapes
    assert sorted(row[1] for row in table["data"]) == ["a.png", "b.png"]
    assert "Skipped 2 file(s)" in status and "blue/c.png: its content is not a PNG image" in status and "notes.txt" in status


def test_replaced_uploads_are_removed_and_the_session_disk_use_is_capped(url, tmp_path, monkeypatch):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"red/{i}.png", png())
            zf.writestr(f"blue/{i}.png", png((20, 20, 200)))
    visitor = client(url)
    before = session_folders()
    for _ in range(3):
        visitor.predict([handle_file(str(archive))], api_name="/upload_support")
    (folder,) = session_folders() - before
    assert len(list((folder / "support").glob("upload-*"))) == 1  # the earlier two were replaced
    monkeypatch.setenv(housekeeping.DISK_ENV, "0.001")  # 1 KB: the next upload does not fit
    with pytest.raises(AppError, match="the limit per session is|room for"):
        visitor.predict([handle_file(str(COLOUR / "support_red_0.png"))], "red", api_name="/add_images")


def test_a_sweep_removes_stale_folders_of_ended_apps_but_never_a_live_apps(tmp_path):
    ended, live, fresh = (tmp_path / f"{PREFIX}{name}" for name in ("ended", "live", "fresh"))
    for folder, pid in ((ended, 2**22 + 12345), (live, 1), (fresh, 2**22 + 12345)):  # pid 1 is always alive
        (folder / "support").mkdir(parents=True)
        (folder / OWNER).write_text(json.dumps({"pid": pid, "started": 0}))
        (folder / "support" / "a.png").write_bytes(b"x")
    old = time.time() - 3 * 3600
    for folder in (ended, live):
        for path in [folder, *folder.rglob("*")]:
            import os

            os.utime(path, (old, old))
    assert sweep_stale_sessions(2 * 3600, root=tmp_path) == 1
    assert not ended.exists() and live.exists() and fresh.exists()


# ----------------------------------------------------------------------------- model time and sessions
def test_images_per_example_are_capped_with_a_message_naming_the_cap(url, tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "b.png").write_bytes(png((20, 20, 200)))
    rows = [{"image": ["a.png"] * 96, "question": "what color is the shape ?", "label": "red"}, {"image": "b.png", "label": "blue"}]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    files = [handle_file(str(p)) for p in (data, tmp_path / "a.png", tmp_path / "b.png")]
    with pytest.raises(AppError, match="lists 96 images; the limit is 8 per example"):
        client(url).predict(files, api_name="/upload_support")


def test_the_image_tokens_of_one_request_are_capped(url, monkeypatch):
    from sav_explorer.ui import explore

    monkeypatch.setattr(explore, "MAX_IMAGE_TOKENS", 64 * 5)  # five 64-token images
    visitor = client(url)
    visitor.predict("colour", api_name="/load_example")
    with pytest.raises(AppError, match="more than 320 image tokens, the cap here"):
        visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")


def test_cancel_pressed_while_queued_means_the_extraction_never_starts(url, monkeypatch):
    from sav_explorer.ui import explore

    started, release = [], threading.Event()
    real_fit = explore.fit_examples

    def fit_that_waits(*args, **kwargs):
        started.append(kwargs["k"])
        if len(started) == 1:
            release.wait(60)  # the first visitor's extraction holds the model
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(explore, "fit_examples", fit_that_waits)
    first, second = client(url), client(url)
    first.predict("size", api_name="/load_example")
    second.predict("size", api_name="/load_example")
    running = first.submit("", 200704, 4, 3, "in-sample", api_name="/extract")
    for _ in range(600):
        if started:
            break
        time.sleep(0.1)
    second.predict(api_name="/arm_extraction")  # the click: runs at once
    queued = second.submit("", 200704, 4, 5, "in-sample", api_name="/extract")
    time.sleep(1)
    second.predict(api_name="/cancel")
    release.set()
    running.result(timeout=120)
    *_, status = queued.result(timeout=120)
    assert "cancelled before it started" in status and started == [3]  # the second never ran


def test_two_adds_that_arrive_together_in_a_fresh_session_both_land(url, monkeypatch):
    from sav_explorer.ui import support

    real_open = support.open_image

    def slow_open(*args, **kwargs):  # both adds are surely in flight at once
        time.sleep(0.5)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(support, "open_image", slow_open)
    visitor = client(url)
    jobs = [
        visitor.submit([handle_file(str(COLOUR / f"support_{colour}_0.png"))], colour, api_name="/add_images") for colour in ("red", "blue")
    ]
    results = [job.result(timeout=120) for job in jobs]
    labels = max((sorted(row[2] for row in table["data"]) for table, *_ in results), key=len)
    assert labels == ["blue", "red"]


# ----------------------------------------------------------------------------- classifier files and heads
def test_an_edited_manifest_is_refused_on_restore_and_repeated_heads_count_once(url, tmp_path):
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
    _, summary, _, heads, _, _ = visitor.predict(["L2 H0"] * 5000, api_name="/set_heads")
    assert len(heads["value"]) == 1 and "1 heads vote" in summary
    archive, *_ = visitor.predict(api_name="/export")
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(edited, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("manifest.json"):
                manifest = json.loads(data)
                manifest["labels"] = manifest["labels"][::-1]  # swapped labels would flip every prediction
                data = json.dumps(manifest).encode()
            target.writestr(item, data)
    with pytest.raises(AppError, match="manifest_sha256"):
        client(url).predict(handle_file(str(edited)), api_name="/restore")


# ----------------------------------------------------------------------------- images and rows
def exif_rotated(path: Path) -> Path:
    """A landscape image whose EXIF says: show me rotated by 90 degrees (as phones store photos)."""
    image = Image.new("RGB", (80, 40), (220, 40, 40))
    image.paste((40, 80, 220), (0, 0, 40, 40))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_wherever_an_image_is_read(tmp_path):
    from sav_explorer.data import open_image

    shown = open_image(exif_rotated(tmp_path / "phone.jpg"))
    assert shown.size == (40, 80)  # upright, as the visitor saw it
    assert shown.getpixel((20, 5))[2] > 150  # blue is on top after the rotation


def bomb_png(path: Path) -> Path:
    """A PNG whose header declares 20000 x 20000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return path


def test_a_huge_declared_image_is_named_with_its_problem(url, tmp_path):
    with pytest.raises(AppError, match=r"huge\.png is too large to decode safely"):
        client(url).predict([handle_file(str(bomb_png(tmp_path / "huge.png")))], "red", api_name="/add_images")


def test_tiff_is_accepted_everywhere_and_shown_as_png(url, tmp_path):
    Image.new("RGB", (64, 64), (220, 40, 40)).save(tmp_path / "red.tiff")
    table, gallery, *_ = client(url).predict([handle_file(str(tmp_path / "red.tiff"))], "red", api_name="/add_images")
    assert table["data"][0][1] == "red.tiff"
    assert Path(gallery[0]["image"]).suffix == ".png"  # browsers do not show TIFF


@pytest.mark.parametrize(
    "row, message",
    [
        ({"image": "missing.png", "label": "red"}, "row 1: image 'missing.png' not found"),
        ({"image": {"a": 1}, "label": "red"}, "'image' must be a path or a list of paths"),
    ],
)
def test_rows_are_checked_when_they_arrive_and_name_files_as_uploaded(url, tmp_path, row, message):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row))
    with pytest.raises(AppError) as error:
        client(url).predict([handle_file(str(data))], api_name="/upload_support")
    assert message in str(error.value) and "/tmp/" not in str(error.value) and PREFIX not in str(error.value)


def test_messages_never_show_server_paths_or_session_ids(url, tmp_path):
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as zf:
        zf.writestr("inner.zip", b"PK")
    for args, endpoint in (([handle_file(str(nested))],), "/upload_support"), ((handle_file(str(nested)),), "/restore"):
        with pytest.raises(AppError) as error:
            client(url).predict(*args, api_name=endpoint)
        assert "/tmp/" not in str(error.value) and PREFIX not in str(error.value), str(error.value)


def test_labels_differing_only_in_case_are_warned_about(url):
    visitor = client(url)
    visitor.predict([handle_file(str(COLOUR / "support_red_0.png"))], "Red", api_name="/add_images")
    _, _, _, status, _, _ = visitor.predict([handle_file(str(COLOUR / "support_red_1.png"))], "red", api_name="/add_images")
    assert "differ only in case" in status and "'Red', 'red'" in status


# ----------------------------------------------------------------------------- model and words
def test_a_revision_for_the_local_model_is_ignored_with_a_note_and_takes_no_new_slot(app):
    url, demo = app
    from sav_explorer.models import default_model_id

    visitor = client(url)
    status = visitor.predict(default_model_id(), "default", "v2.0", api_name="/load_model")
    assert "revision v2\\.0 was ignored" in status and "8 layers, 64 heads" in status and "loaded in" in status
    again = visitor.predict(default_model_id(), "default", "another", api_name="/load_model")
    loaded_in = re.compile(r"loaded in [0-9.]+ s")
    assert "ignored" in again and loaded_in.search(again)[0] == loaded_in.search(status)[0]  # the same registry entry


def test_words_the_model_does_not_know_are_named(url):
    visitor = client(url)
    visitor.predict("colour", api_name="/load_example")
    *_, status = visitor.predict("what colour is the picture ?", 200704, 4, 4, "in-sample", api_name="/extract")
    assert "will not see them: 'colour', 'picture'" in status.replace("\\", "")


def test_after_an_extraction_the_model_line_shows_the_loaded_model(url):
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    visitor.predict(api_name="/arm_extraction")
    visitor.predict("", 200704, 4, 4, "in-sample", api_name="/extract")
    assert "8 layers, 64 heads" in visitor.predict(api_name="/model_status")


def test_after_a_zip_without_questions_the_table_says_the_question_is_still_to_be_typed(url, tmp_path):
    archive = tmp_path / "classes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("red/a.png", png())
        zf.writestr("blue/b.png", png((20, 20, 200)))
    table, _, question, _ = client(url).predict([handle_file(str(archive))], api_name="/upload_support")
    assert question == "" and {row[3] for row in table["data"]} == {"(none yet: type it in the question box)"}


def test_a_photo_stored_sideways_is_classified_as_the_visitor_sees_it(url, tmp_path):
    """Phones store photos sideways with an EXIF orientation; the model must see them upright."""
    visitor = client(url)
    visitor.predict("relation", api_name="/load_example")
    visitor.predict("", 200704, 8, 20, "in-sample", api_name="/extract")
    upright = EXAMPLES_DIR / "relation" / "queries_no_0.png"
    sideways = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the stored pixels are turned the other way
    Image.open(upright).convert("RGB").rotate(90, expand=True).save(sideways, quality=100, exif=exif.tobytes())
    jpeg_twin = tmp_path / "upright.jpg"
    Image.open(upright).convert("RGB").save(jpeg_twin, quality=100)
    votes = [visitor.predict([handle_file(str(path))], "", api_name="/classify")[0]["data"][0][2] for path in (jpeg_twin, sideways)]
    assert votes[0] == votes[1]


def test_the_drawing_decoder_names_an_oversized_canvas_and_refuses_other_formats_labelled_png():
    import base64
    import io

    from PIL import Image

    from sav_explorer.errors import DataError
    from sav_explorer.ui.live import decode_drawing

    def data_url(image, fmt):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()

    assert decode_drawing(data_url(Image.new("RGB", (256, 256), "white"), "PNG")).size == (256, 256)
    with pytest.raises(DataError, match="the drawing is 1200 x 1200 pixels; the canvas is 256 x 256"):
        decode_drawing(data_url(Image.new("RGB", (1200, 1200), "white"), "PNG"))
    for fmt in ("JPEG", "GIF"):
        with pytest.raises(DataError, match="could not be read as a PNG image"):
            decode_drawing(data_url(Image.new("RGB", (64, 64), "white"), fmt))


@pytest.mark.parametrize(
    ("names", "message"),
    [(["a.png", "b.png"], "the upload holds no class sub-folders"), ([" /a.png", "red/b.png"], "empty label in folder ' ' of the upload")],
)
def test_upload_messages_never_show_the_servers_folders(url, tmp_path, names, message):
    """Images at a zip's root, or a class folder named " ": the message names the upload, not
    `…/sav-session-<id>/support/upload-0`."""
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in names:
            zf.writestr(name, png((200, 20, 20)))
    with pytest.raises(AppError, match=message) as caught:
        client(url).predict([handle_file(str(archive))], api_name="/upload_support")
    assert "sav-session" not in str(caught.value) and "/tmp" not in str(caught.value)
