"""Support and test sets from folders, JSONL and CSV; images that cannot be used are named."""

import json

import pytest
from PIL import Image

from sav_explorer import DataError, Example, load_examples, open_image
from sav_explorer.data import MAX_DECODE_PIXELS


def test_class_folders_become_labels(tmp_path, write_png):
    write_png("set/cat/a.png")
    write_png("set/cat/b.jpg")
    write_png("set/dog/c.png")
    (tmp_path / "set/dog/notes.txt").write_text("ignored: not an image suffix")
    examples = load_examples(tmp_path / "set", question="what animal?")
    assert [(e.name, e.label) for e in examples] == [("a.png", "cat"), ("b.jpg", "cat"), ("c.png", "dog")]
    assert examples[0].question_or("what animal?") == "what animal?"


def test_jsonl_rows_keep_their_questions_and_resolve_paths_relative_to_the_file(tmp_path, write_png):
    write_png("data/img/a.png")
    write_png("data/img/b.png")
    rows = [
        {"image": "img/a.png", "question": "Is it red?", "label": " yes "},
        {"image": ["img/a.png", "img/b.png"], "label": "no"},
    ]
    (tmp_path / "data/set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples = load_examples(tmp_path / "data/set.jsonl", question="Default?")
    assert examples[0].question == "Is it red?" and examples[1].question == "Default?"
    assert examples[0].label == "yes"  # stray spaces trimmed
    assert examples[1].images == ((tmp_path / "data/img/a.png").resolve(), (tmp_path / "data/img/b.png").resolve())


def test_csv_rows_with_an_image_list(tmp_path, write_png):
    write_png("a.png")
    write_png("b.png")
    (tmp_path / "set.csv").write_text('image,question,label\na.png,q?,x\n"[""a.png"", ""b.png""]",q?,y\n')
    examples = load_examples(tmp_path / "set.csv")
    assert [len(e.images) for e in examples] == [1, 2]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"image": "a.png", "label": ""}', "empty label in set.jsonl row 1"),
        ('{"image": "a.png", "label": "x"}\nnot json', "line 2 is not valid JSON"),
        ('{"label": "x"}', "'image' must be a path"),
        ("", "holds no examples"),
    ],
)
def test_bad_rows_are_refused_with_their_place(tmp_path, write_png, content, message):
    write_png("a.png")
    (tmp_path / "set.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        load_examples(tmp_path / "set.jsonl")


def test_paths_escaping_an_uploaded_folder_are_refused(tmp_path, write_png):
    write_png("upload/a.png")
    (tmp_path / "upload/set.jsonl").write_text('{"image": "../../etc/passwd", "label": "x"}\n')
    with pytest.raises(DataError, match="points outside the uploaded folder"):
        load_examples(tmp_path / "upload/set.jsonl", confine_to=tmp_path / "upload")


def test_missing_data_and_unknown_formats(tmp_path):
    with pytest.raises(DataError, match="neither a folder nor a file"):
        load_examples(tmp_path / "nothing")
    (tmp_path / "set.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match="unsupported data file set.parquet"):
        load_examples(tmp_path / "set.parquet")


def test_missing_image_is_named(tmp_path):
    with pytest.raises(DataError, match="image file not found: .*ghost.png"):
        open_image(tmp_path / "ghost.png")


def test_non_image_file_is_named(tmp_path):
    (tmp_path / "fake.png").write_text("this is text, not a PNG")
    with pytest.raises(DataError, match="fake.png is not an image file"):
        open_image(tmp_path / "fake.png")


def test_truncated_image_is_named(tmp_path, write_png):
    path = write_png("cut.png", size=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png is damaged or truncated"):
        open_image(path)


def test_image_too_large_to_decode_is_refused_before_decoding(tmp_path):
    side = int(MAX_DECODE_PIXELS**0.5) + 10
    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)  # 1-bit: small file, huge canvas
    with pytest.raises(DataError, match="huge.png is too large to decode safely"):
        open_image(path)


def test_max_pixels_scales_down_keeping_the_aspect_ratio(solid_image):
    image = open_image(solid_image(size=200).resize((400, 100)), max_pixels=10_000)
    assert image.size == (200, 50)


def test_a_question_is_required_somewhere():
    with pytest.raises(DataError, match="no question"):
        Example(("a.png",)).question_or(None)


def test_a_device_map_loads_bfloat16_where_an_accelerator_is_present(monkeypatch):
    """`--device-map auto` on a GPU machine took float32 (the device is None under a device map), doubling memory."""
    from sav_explorer.models import loading

    monkeypatch.setattr(loading, "pick_device", lambda device: device or "cuda")
    assert loading.default_dtype(None, "auto") == "bfloat16"
    assert loading.default_dtype("cuda", None) == "bfloat16" and loading.default_dtype("cpu", None) == "float32"
    monkeypatch.setattr(loading, "pick_device", lambda device: device or "cpu")
    assert loading.default_dtype(None, "auto") == "float32"
