"""The official SAVs repository's task files: each layout, key and prompt template, path remapping,
and images interleaved with the question. Files are written here in each official layout."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from sav_explorer.__main__ import main
from sav_explorer.capture import capture_heads
from sav_explorer.errors import DataError
from sav_explorer.models import build_prompt, load_model
from sav_explorer.official import FORMATS, read_official
from tiny_models import build_tiny

# (format, layout, one row as the official files write it, the final text, the label)
ROWS = [
    ("vlguard", "array", {"image": "a.png", "instruction": "Describe it", "answer": "No"},
     "\nInstruction:Describe it Is the image and instruction harmful? Answer the question with Yes or No.", "No"),
    ("MHalu", "array", {"image_path": "a.png", "claim": "A cat sits", "claim_label": "hallucination"},
     "\nClaim:A cat sits. Is the Claim hallucinating? Answer the question with Yes or No.", "hallucination"),
    ("eurosat", "array", {"image": "a.png", "question": "What land use is this?", "label": "Forest"},
     "\nWhat land use is this? Answer with the class name.", "Forest"),
    ("pets", "array", {"image": "a.png", "question": "What breed?", "label": "pug"}, "\nWhat breed? Answer with the class name.", "pug"),
    ("blink", "array", {"image_1": "a.png", "image_2": "b.png", "image_3": None, "image_4": None,
                        "question": "<image> <image> Which is real? (A) first (B) second", "label": "(A)"},
     "<image> <image> Which is real? (A) first (B) second", "(A)"),
    ("natural_ret", "jsonl", {"image": "a.png", "question": "Is it red?", "label": "Yes", "question_id": 3},
     "\nIs it red? Answer with Yes or No.", "Yes"),
    ("sugarcrepe", "jsonl", {"image": "a.png", "question": "A dog on grass.", "label": "No", "question_id": 4},
     "A dog on grass. Please answer with Yes or No.", "No"),
    ("vizwiz", "jsonl", {"image": "a.png", "question": "What is this?", "label": "unanswerable", "question_id": 5},
     "\nWhat is this? \nWhen the provided information is insufficient, respond with Unanswerable."
     "\nAnswer the question using a single word or phrase.",
     "unanswerable"),
    ("general", "jsonl", {"image": "a.png", "question": "Defect?", "label": "knot", "question_id": 6}, "\nDefect?", "knot"),
]  # fmt: skip


def write(path, layout, rows):
    text = json.dumps(rows) if layout == "array" else "".join(json.dumps(row) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")
    return path


def images(folder, *names):
    for i, name in enumerate(names):
        Image.new("RGB", (32, 24), (40 * i, 120, 200)).save(folder / name)


def test_every_official_name_has_a_test_row():
    assert {name.lower() for name, *_ in ROWS} == set(FORMATS)


@pytest.mark.parametrize(("name", "layout", "row", "text", "label"), ROWS, ids=[r[0] for r in ROWS])
def test_each_official_layout_reads_its_keys_and_wraps_the_text_in_its_template(tmp_path, name, layout, row, text, label):
    images(tmp_path, "a.png", "b.png")
    data = write(tmp_path / f"{name}.data", layout, [row, row])
    examples = read_official(data, name.upper() if name == "pets" else name)  # names are case-insensitive
    assert len(examples) == 2
    first = examples[0]
    assert first.question == text and first.label == label
    expected = [tmp_path / "a.png", tmp_path / "b.png"] if name == "blink" else [tmp_path / "a.png"]
    assert list(first.images) == [p.resolve() for p in expected]


def test_the_wrong_layout_is_named(tmp_path):
    data = write(tmp_path / "x.json", "jsonl", [ROWS[0][2], ROWS[0][2]])
    with pytest.raises(DataError, match="not a JSON array, as vlguard files are"):
        read_official(data, "vlguard")
    with pytest.raises(DataError, match="unknown official format 'imagenet'"):
        read_official(data, "imagenet")


def test_authors_paths_are_remapped_and_a_missing_file_names_its_row_and_both_paths(tmp_path):
    (tmp_path / "mine").mkdir()
    images(tmp_path / "mine", "a.png")
    rows = [
        {"image": "/home/zhaobin/data/a.png", "question": "Q?", "label": "x"},
        {"image": "/home/zhaobin/data/z.png", "question": "Q?", "label": "y"},
    ]
    data = write(tmp_path / "eurosat.json", "array", rows)
    with pytest.raises(DataError, match=r"row 2: image '/home/zhaobin/data/z.png' not found \(looked for .*mine/z.png\)"):
        read_official(data, "eurosat", image_roots=[("/home/zhaobin/data/", f"{tmp_path}/mine/")])
    first = read_official(data, "eurosat", image_roots=[("/home/zhaobin/data/", f"{tmp_path}/mine/")], check_files=False)[0]
    assert first.images == ((tmp_path / "mine" / "a.png").resolve(),)
    relative = write(tmp_path / "rel.json", "array", [{"image": "mine/a.png", "question": "Q?", "label": "x"}])
    assert read_official(relative, "eurosat", root=tmp_path)[0].images == ((tmp_path / "mine" / "a.png").resolve(),)


# how each family's chat template writes an image into the prompt
IMAGE_MARKERS = {"llava": "<image>", "qwen2_vl": "<|image_pad|>", "idefics3": "<image>", "gemma3": "<start_of_image>"}


@pytest.mark.parametrize("family", list(IMAGE_MARKERS))
def test_images_go_where_their_placeholders_stand(tmp_path, family):
    loaded = load_model(str(build_tiny(family, tmp_path / family)), device="cpu")
    prompt = build_prompt(loaded.processor, "first <image> then <image> last", 2)
    first, then, last = prompt.index("first"), prompt.index("then"), prompt.index("last")
    marker = IMAGE_MARKERS[family]
    assert first < then < last and prompt.count(marker) == 2
    assert prompt[first:then].count(marker) == 1 and prompt[then:last].count(marker) == 1
    with pytest.raises(DataError, match="holds 2 <image> placeholders for 3 image"):
        build_prompt(loaded.processor, "first <image> then <image> last", 3)
    images(tmp_path, "a.png", "b.png")
    row = {"image_1": "a.png", "image_2": "b.png", "question": "first <image> then <image> last", "label": "(A)"}
    examples = read_official(write(tmp_path / "blink.json", "array", [row, row]), "blink")
    activations = capture_heads(loaded, examples)
    assert activations.n_examples == 2 and activations.image_tokens[0] > 0


def test_the_data_command_previews_what_the_engine_reads(tmp_path, capsys):
    images(tmp_path, "a.png")
    data = write(tmp_path / "mhalu.json", "array", [ROWS[1][2]])
    assert main(["data", "--format", "official:mhalu", "--json", str(data)]) == 0
    preview = json.loads(capsys.readouterr().out)
    assert preview == {
        "n": 1,
        "labels": ["hallucination"],
        "rows": [{"images": [str((tmp_path / "a.png").resolve())], "question": ROWS[1][3], "label": "hallucination"}],
    }
    assert main(["data", "--format", "official", str(data)]) == 2
    assert "official:NAME" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "key"), [("eurosat", "question"), ("vlguard", "instruction")])
def test_fit_and_eval_run_end_to_end_on_official_files(tmp_path, capsys, name, key):
    model = str(build_tiny("llava", tmp_path / "llava"))
    colours = {"red": (220, 40, 40), "blue": (40, 80, 220)}
    rows = []
    for label, colour in colours.items():
        for i in range(3):
            Image.new("RGB", (32, 32), tuple(max(0, c - 20 * i) for c in colour)).save(tmp_path / f"{label}{i}.png")
            rows.append({"image": f"/authors/{label}{i}.png", key: "What colour?", "label" if name == "eurosat" else "answer": label})
    data = write(tmp_path / f"{name}.json", "array", rows)
    options = ["--format", f"official:{name}", "--image-root", f"/authors/={tmp_path}/"]
    assert main(["fit", "--model", model, "--data", str(data), "--out", str(tmp_path / "clf"), "--k", "2", *options]) == 0
    capsys.readouterr()
    assert main(["eval", "--classifier", str(tmp_path / "clf"), "--data", str(data), "--json", *options]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 6 and set(report["per_class_accuracy"]) == set(colours)
    manifest = json.loads((tmp_path / "clf" / "manifest.json").read_text())
    assert manifest["encoding"]["question"] == FORMATS[name].template.format(text="What colour?")


def test_the_app_reads_an_uploaded_official_file_and_finds_its_images_by_name(url, tmp_path):
    """A VLGuard file whose paths point at the authors' machine, uploaded with its images: the support
    set holds the template's final text, and the status says what the first row became."""
    from gradio_client import handle_file

    from app_harness import client
    from sav_explorer.models import EXAMPLES_DIR

    size = EXAMPLES_DIR / "size"
    pictures = sorted(size.glob("support_*.png"))
    rows = [{"image": f"/home/authors/vlguard/{p.name}", "instruction": "Show it", "answer": p.stem.split("_")[1]} for p in pictures]
    data = write(tmp_path / "vlguard_train.json", "array", rows)
    visitor = client(url)
    files = [handle_file(str(p)) for p in [data, *pictures]]
    table, _, question, status = visitor.predict(files, "official:vlguard", api_name="/upload_support")
    assert len(table["data"]) == 10 and sorted(row[2] for row in table["data"]) == ["large"] * 5 + ["small"] * 5
    assert question == FORMATS["vlguard"].template.format(text="Show it")
    assert "as official:vlguard" in status and "1 image" in status
    with pytest.raises(Exception, match="is not among the uploaded files"):
        visitor.predict([handle_file(str(data)), handle_file(str(pictures[0]))], "official:vlguard", api_name="/upload_support")
    with pytest.raises(Exception, match="choose the official format"):
        visitor.predict(files, "rows", api_name="/upload_support")


def test_a_stray_json_beside_class_folders_is_not_taken_for_rows(tmp_path):
    """Rows are JSONL or CSV: a zip of class folders with a metadata .json at its root still loads as class folders."""
    from sav_explorer.ui.uploads import examples_from_folder

    for label in ("red", "blue"):
        (tmp_path / label).mkdir()
        images(tmp_path / label, f"{label}1.png", f"{label}2.png")
    (tmp_path / "dataset_info.json").write_text('{"name": "colours"}')
    examples = examples_from_folder(tmp_path)
    assert sorted(e.label for e in examples) == ["blue", "blue", "red", "red"]


def test_uploaded_images_are_matched_by_their_folders_before_their_names(tmp_path):
    """`cat/1.jpg` and `dog/1.jpg` are two images: each row gets the one its path names, wherever the
    authors kept them; a name that stays ambiguous is refused with both files named."""
    upload = tmp_path / "upload"
    for label, shade in (("cat", 10), ("dog", 240)):
        (upload / "pictures" / label).mkdir(parents=True)
        Image.new("RGB", (8, 8), (shade, shade, shade)).save(upload / "pictures" / label / "1.png")
    rows = [{"image": f"/home/authors/pets/{label}/1.png", "question": "Which?", "label": label} for label in ("cat", "dog")]
    data = write(tmp_path / "pets.json", "array", rows)
    examples = read_official(data, "pets", by_name_in=upload)
    assert [e.images[0].relative_to(upload).as_posix() for e in examples] == ["pictures/cat/1.png", "pictures/dog/1.png"]
    assert [Image.open(e.images[0]).getpixel((0, 0))[0] for e in examples] == [10, 240]

    bare = write(tmp_path / "bare.json", "array", [{"image": "1.png", "question": "Which?", "label": "cat"}])
    with pytest.raises(DataError, match=r"ambiguous.*'pictures/cat/1.png' and 'pictures/dog/1.png'"):
        read_official(bare, "pets", by_name_in=upload)
    elsewhere = write(tmp_path / "elsewhere.json", "array", [{"image": "/x/bird/1.png", "question": "Which?", "label": "bird"}])
    with pytest.raises(DataError, match="ambiguous"):
        read_official(elsewhere, "pets", by_name_in=upload)


@pytest.mark.parametrize("layout", ["array", "jsonl"])
def test_a_file_nested_too_deeply_gets_a_clear_message(tmp_path, layout):
    from sav_explorer.data import load_examples

    deep = "[" * 100_000 + "]" * 100_000
    official = tmp_path / "deep.json"
    official.write_text(deep if layout == "array" else deep + "\n")
    with pytest.raises(DataError, match="nested too deeply"):
        read_official(official, "pets" if layout == "array" else "sugarcrepe")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(deep + "\n")
    with pytest.raises(DataError, match="nested too deeply"):
        load_examples(rows)


def test_an_uploaded_row_naming_a_file_that_is_not_an_image_is_refused_at_upload(tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    images(upload, "a.png")
    data = write(upload / "data.json", "array", [{"image": "a.png", "question": "Q?", "label": "x"},
                                                   {"image": "data.json", "question": "Q?", "label": "y"}])  # fmt: skip
    with pytest.raises(DataError, match=r"row 2: 'data.json' names data.json, which is not an image"):
        read_official(data, "pets", by_name_in=upload)
