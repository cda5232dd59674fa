"""Uploads: zips are checked before extraction; data files may only point inside what was uploaded."""

from __future__ import annotations

import json
import stat
import zipfile

import pytest

from sav_explorer.errors import DataError
from sav_explorer.ui.registry import ModelKey, ModelRegistry, check_allowed, model_choices
from sav_explorer.ui.uploads import MAX_ZIP_BYTES, examples_from_uploads, extract_zip


def make_zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def png_bytes(solid_image, colour=(200, 30, 30)):
    import io

    buffer = io.BytesIO()
    solid_image(colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_class_folder_zip_with_a_wrapping_folder(tmp_path, solid_image):
    red, blue = png_bytes(solid_image), png_bytes(solid_image, (20, 20, 200))
    archive = make_zip(tmp_path / "set.zip", {"set/red/a.png": red, "set/red/b.png": red, "set/blue/c.png": blue, "__MACOSX/x": b""})
    examples, skipped = examples_from_uploads([archive], tmp_path / "work")
    assert sorted(e.label for e in examples) == ["blue", "red", "red"] and skipped == []
    assert all(str(e.images[0]).startswith(str(tmp_path / "work")) for e in examples)


def test_jsonl_uploaded_with_its_images_keeps_per_row_questions(tmp_path, write_png):
    images = [write_png("up/a.png"), write_png("up/b.png", (0, 200, 0))]
    rows = [{"image": "a.png", "question": "which colour?", "label": " red "}, {"image": "b.png", "label": "green"}]
    data = tmp_path / "up" / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    examples, _ = examples_from_uploads([data, *images], tmp_path / "work", question="default?")
    assert [(e.label, e.question) for e in examples] == [("red", "which colour?"), ("green", "default?")]


def test_jsonl_may_not_point_outside_the_upload(tmp_path, write_png):
    write_png("secret.png")
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"image": "../secret.png", "label": "x"}))
    with pytest.raises(DataError, match="outside the uploaded folder"):
        examples_from_uploads([data], tmp_path / "work")


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "C:/evil.png"])
def test_zip_paths_that_escape_are_refused(tmp_path, name):
    archive = make_zip(tmp_path / "slip.zip", {name: b"x"})
    with pytest.raises(DataError, match="escapes its folder"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()


def test_zip_links_are_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("red/link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")


def test_zip_bomb_is_refused_before_extraction(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"red/a.png": b"\0" * (20 * 1024 * 1024)})
    with pytest.raises(DataError, match="zip bomb"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "red" / "a.png").exists()


def test_zip_that_understates_its_size_is_stopped_while_extracting(tmp_path, monkeypatch):
    monkeypatch.setattr("sav_explorer.ui.uploads.MAX_ZIP_BYTES", 1000)
    monkeypatch.setattr("sav_explorer.ui.uploads.MAX_ZIP_RATIO", 10**9)
    archive = make_zip(tmp_path / "big.zip", {"a.bin": b"\0" * 5000})
    with pytest.raises(DataError, match="1,000"):
        extract_zip(archive, tmp_path / "out")
    assert MAX_ZIP_BYTES > 1000  # the module constant itself is untouched outside this test


def test_corrupt_and_non_zip_files(tmp_path):
    (tmp_path / "fake.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match="not a zip"):
        extract_zip(tmp_path / "fake.zip", tmp_path / "out")
    good = make_zip(tmp_path / "good.zip", {"red/a.png": b"x" * 1000})
    data = bytearray(good.read_bytes())
    data[40:60] = b"\xff" * 20  # damage the member's data, keep the directory
    (tmp_path / "broken.zip").write_bytes(bytes(data))
    with pytest.raises(DataError):
        extract_zip(tmp_path / "broken.zip", tmp_path / "out2")


def test_no_file_and_mixed_uploads(tmp_path, write_png):
    with pytest.raises(DataError, match="no file uploaded"):
        examples_from_uploads([], tmp_path)
    with pytest.raises(DataError, match="no data file"):
        examples_from_uploads([write_png("a.png")], tmp_path / "w")


def test_registry_keeps_keys_apart_and_evicts_least_recently_used():
    loads = []

    def loader(model_id, revision=None, dtype=None, device=None):
        loads.append((model_id, revision, dtype))
        return object()

    registry = ModelRegistry(capacity=2, loader=loader)
    a, b, c = ModelKey("a"), ModelKey("a", dtype="bfloat16"), ModelKey("c")
    first = registry.get(a)
    assert registry.get(b) is not first  # a different dtype is a different model
    assert registry.get(a) is first and len(loads) == 2  # cached, and now the most recently used
    registry.get(c)
    assert registry.keys() == [a, c]  # b was the least recently used
    registry.get(b)
    assert len(loads) == 4


def test_only_listed_models_unless_the_operator_allows_any(monkeypatch):
    monkeypatch.delenv("SAV_ALLOW_ANY_MODEL", raising=False)
    assert check_allowed(" Qwen/Qwen2-VL-2B-Instruct ", "sav-explorer/shapes-llava") == "Qwen/Qwen2-VL-2B-Instruct"
    assert "sav-explorer/shapes-llava" in model_choices("/my/model") and model_choices("/my/model")[0] == "/my/model"
    for bad in ("evil/model", "/etc", "./local"):
        with pytest.raises(Exception, match="not allowed"):
            check_allowed(bad, "sav-explorer/shapes-llava")
    monkeypatch.setenv("SAV_ALLOW_ANY_MODEL", "1")
    assert check_allowed("/some/folder", "sav-explorer/shapes-llava") == "/some/folder"
