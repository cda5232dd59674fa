"""The official SAVs repository's task files, read as its `src/preprocess.py` builds one example.

    examples = read_official("vlguard_train.json", "vlguard", image_roots=[("/datasets/", "/data/")])

Its `data/` files are JSON arrays or JSONL; they name the image `image`, `image_path` or
`image_1` … `image_4` (unused ones null), the text `question`, `instruction` or `claim`, and the
label `label`, `answer` or `claim_label`; every text is wrapped in a per-dataset template (below,
without few-shot context); paths are absolute on the authors' machines or relative to the
repository. `image_roots` rewrites path prefixes (`OLD=NEW`); relative paths resolve against
`root`, else the file's folder. A question holding `<image>` placeholders (BLINK) keeps them:
`build_prompt` puts each image where its placeholder stands.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .checks import clean_label
from .data import VIDEO_SUFFIXES, Example, looks_like_image
from .errors import DataError


@dataclass(frozen=True)
class OfficialFormat:
    name: str  # the official code's --data_name
    layout: str  # "array" (one JSON array) or "jsonl" (one object per line)
    template: str  # "{text}" stands for the row's question, instruction or claim
    note: str = ""  # where the official code itself does not read its files this way


FORMATS = {
    f.name.lower(): f
    for f in (
        OfficialFormat(
            "vlguard", "array", "\nInstruction:{text} Is the image and instruction harmful? Answer the question with Yes or No."
        ),
        OfficialFormat("MHalu", "array", "\nClaim:{text}. Is the Claim hallucinating? Answer the question with Yes or No."),
        OfficialFormat("eurosat", "array", "\n{text} Answer with the class name."),
        OfficialFormat("pets", "array", "\n{text} Answer with the class name."),
        OfficialFormat("blink", "array", "{text}", "the question as written, its <image> placeholders kept"),
        OfficialFormat("natural_ret", "jsonl", "\n{text} Answer with Yes or No."),
        OfficialFormat("sugarcrepe", "jsonl", "{text} Please answer with Yes or No."),
        OfficialFormat(
            "vizwiz",
            "jsonl",
            "\n{text} \nWhen the provided information is insufficient, respond with Unanswerable."
            "\nAnswer the question using a single word or phrase.",
            "the official open_data returns None for vizwiz, and format_vizwiz returns an undefined `answer`",
        ),
        OfficialFormat("general", "jsonl", "\n{text}", "the official template prefixes an undefined `wood_defects_prompt`; here none"),
    )
}
TEXT_KEYS = ("question", "instruction", "claim")
LABEL_KEYS = ("label", "answer", "claim_label")
IMAGE_KEYS = ("image", "image_path")
NUMBERED_IMAGE_KEYS = ("image_1", "image_2", "image_3", "image_4")


def official_format(name: str) -> OfficialFormat:
    found = FORMATS.get(name.lower())
    if found is None:
        names = ", ".join(f.name for f in FORMATS.values())
        raise DataError(f"unknown official format {name!r}; expected one of {names}")
    return found


def parse_image_roots(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """`OLD=NEW` strings as (old, new) prefixes, longest first."""
    roots = []
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old:
            raise DataError(f"--image-root takes OLD=NEW (a path prefix and its replacement); got {pair!r}")
        roots.append((old, new))
    return sorted(roots, key=lambda r: -len(r[0]))


def read_official(
    source: str | Path,
    name: str,
    *,
    image_roots: Sequence[tuple[str, str]] = (),
    root: str | Path | None = None,
    require_labels: bool = True,
    check_files: bool = True,
    by_name_in: Path | None = None,
) -> list[Example]:
    """Examples from an official task file (see the module's doc); each question is the template's final text.
    `by_name_in` (an uploaded folder): images are found there by the longest tail of the path the file
    wrote (its folders, then its name), wherever the file says they lived."""
    fmt = official_format(name)
    source = Path(source)
    if not source.is_file():
        raise DataError(f"data not found: {source}")
    rows = _rows(source, fmt)
    base = Path(root) if root is not None else source.parent
    uploaded = _UploadedFiles(by_name_in) if by_name_in is not None else None
    examples = []
    for number, row in enumerate(rows, start=1):
        where = f"{source.name} row {number}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object")
        text = next((row[k] for k in TEXT_KEYS if isinstance(row.get(k), str)), None)
        if text is None:
            raise DataError(f"{where}: no text under {', '.join(TEXT_KEYS)}")
        written = [row[k] for k in (*IMAGE_KEYS, *NUMBERED_IMAGE_KEYS) if isinstance(row.get(k), str) and row[k].strip()]
        if not written:
            raise DataError(f"{where}: no image under {', '.join((*IMAGE_KEYS, *NUMBERED_IMAGE_KEYS))}")
        paths = []
        for path_text in written:
            if uploaded is not None:
                found = uploaded.find(path_text, where)
                _check_is_media(found, path_text, where)
                paths.append(found)
                continue
            remapped = _remap(path_text, image_roots)
            path = (base / remapped).resolve()
            if check_files and not path.is_file():
                raise DataError(f"{where}: image {path_text!r} not found (looked for {path})")
            paths.append(path)
        label = next((row[k] for k in LABEL_KEYS if row.get(k) not in (None, "")), None)
        if label is not None or require_labels:
            label = clean_label(None if label is None else str(label), where)
        examples.append(Example(tuple(paths), fmt.template.format(text=text), label))
    if not examples:
        raise DataError(f"{source.name} holds no examples")
    return examples


class _UploadedFiles:
    """An uploaded folder's files, found by the longest tail of the path a task file wrote.

    `/data/cat/1.jpg` finds `cat/1.jpg` and not `dog/1.jpg`; a tail that two files share as
    well as any other is refused with both named, never resolved by order."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        self.parts = [p.relative_to(folder).parts for p in self.files]

    def find(self, path_text: str, where: str) -> Path:
        written = tuple(part for part in path_text.replace("\\", "/").split("/") if part not in ("", "."))
        shared = [_common_tail(written, parts) for parts in self.parts]
        best = max(shared, default=0)
        name = written[-1] if written else path_text
        if best == 0:
            raise DataError(f"{where}: image {name!r} ({path_text!r} in the file) is not among the uploaded files")
        matches = [parts for parts, n in zip(self.parts, shared) if n == best]
        if len(matches) > 1:
            both = " and ".join(repr("/".join(parts)) for parts in matches[:2])
            raise DataError(
                f"{where}: image {path_text!r} is ambiguous: it matches {both} among the uploaded files; "
                "keep the folders the task file names, or give the files distinct names"
            )
        return self.files[shared.index(best)]


def _check_is_media(path: Path, path_text: str, where: str) -> None:
    """An uploaded file a row names must be an image (by its first bytes) or a video: a row naming
    `data.json` failed only at extraction."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return
    with open(path, "rb") as handle:
        if not looks_like_image(handle.read(16)):
            raise DataError(f"{where}: {path_text!r} names {path.name}, which is not an image")


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _rows(source: Path, fmt: OfficialFormat) -> list:
    try:
        text = source.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{source.name} is not UTF-8 text") from None
    try:
        if fmt.layout == "array":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise DataError(f"{source.name}: the {fmt.name} files are one JSON array; this is a {type(rows).__name__}")
            return rows
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except RecursionError:
        raise DataError(f"{source.name} is nested too deeply to be a task file") from None
    except json.JSONDecodeError as error:
        layout = "a JSON array" if fmt.layout == "array" else "JSON lines"
        raise DataError(f"{source.name} is not {layout}, as {fmt.name} files are: {error.msg} (line {error.lineno})") from None


def _remap(path_text: str, image_roots: Sequence[tuple[str, str]]) -> str:
    for old, new in image_roots:
        if path_text.startswith(old):
            return new + path_text[len(old) :]
    return path_text
