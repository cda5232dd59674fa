"""Support and test sets: examples from folders, JSONL or CSV files, and safe image loading.

    examples = load_examples("assets/examples/colour/support.jsonl")
    examples[0]   # Example(images=(PosixPath('.../red_0.png'),), question='what color ...', label='red')

Accepted layouts: a folder with one sub-folder of images per class (the folder name is the
label); or JSONL / CSV rows {"image": path or list of paths, "question": text, "label": text},
the official SAVs repository's format, with paths relative to the file.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .checks import check_question, clean_label
from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".avi"}


@dataclass(frozen=True)
class VideoFile:
    """A video among an example's images: handed to the processor as a path, which samples its frames."""

    path: Path


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes of a file are the header of an image format the app accepts."""
    return head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


MAX_DECODE_PIXELS = 40_000_000  # larger images are refused before decoding (a 40 MP RGB image is 120 MB)


@dataclass(frozen=True)
class Example:
    """One input: one or more images, an optional question and an optional label."""

    images: tuple  # Paths or PIL images
    question: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        check_question(self.question, f"the question of {self.name}")

    def question_or(self, default: str | None) -> str:
        question = self.question or default
        if not question or not question.strip():
            raise DataError(f"no question for {self.name}: give one per row or a default question (--question)")
        return question.strip()

    def load_images(self, max_pixels: int | None = None) -> list:
        """The images opened (PIL, RGB); a video file stays a `VideoFile` for the processor to sample."""
        return [
            VideoFile(Path(item))
            if isinstance(item, (str, Path)) and Path(item).suffix.lower() in VIDEO_SUFFIXES
            else open_image(item, max_pixels)
            for item in self.images
        ]

    @property
    def name(self) -> str:
        first = self.images[0] if self.images else None
        return Path(first).name if isinstance(first, (str, Path)) else "an uploaded image"


def is_video(item) -> bool:
    return isinstance(item, (str, Path)) and Path(item).suffix.lower() in VIDEO_SUFFIXES


def open_image(source, max_pixels: int | None = None) -> Image.Image:
    """Opens an image as RGB, refusing missing, unreadable, truncated and oversized files by name.

    `max_pixels` scales larger images down (keeping the aspect ratio) before the model sees them.
    """
    name = Path(source).name if isinstance(source, (str, Path)) else "uploaded image"
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"image file not found: {name}")
        try:
            image = Image.open(path)
        except UnidentifiedImageError:
            raise DataError(f"{name} is not an image file that Pillow can read") from None
        except Image.DecompressionBombError as error:
            raise DataError(f"{name} is too large to decode safely: {error}") from None
        except OSError as error:
            raise DataError(f"cannot read {name}: {error}") from None
    width, height = image.size
    if width * height > MAX_DECODE_PIXELS:
        raise DataError(f"{name} is too large to decode safely: {width} x {height} pixels (limit {MAX_DECODE_PIXELS:,})")
    if width < 1 or height < 1:
        raise DataError(f"{name} is empty: {width} x {height} pixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = image.convert("RGB")  # decodes the whole file: truncated data fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{name} is damaged or truncated and cannot be decoded ({error})") from None
    image = ImageOps.exif_transpose(image)  # as the visitor saw it: a phone photo is stored sideways
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        scale = (max_pixels / (width * height)) ** 0.5
        image = image.resize((max(1, int(width * scale)), max(1, int(height * scale))), Image.Resampling.BICUBIC)
    return image


def load_examples(
    source: str | Path, question: str | None = None, require_labels: bool = True, confine_to: Path | None = None
) -> list[Example]:
    """Examples from a folder of class sub-folders, or a .jsonl / .csv file.

    `question` fills rows that have none. `confine_to` refuses image paths that resolve outside
    that folder (for files uploaded to the app).
    """
    source = Path(source)
    if source.is_dir():
        return _from_class_folders(source)
    if not source.is_file():
        raise DataError(f"data not found: {source} is neither a folder nor a file")
    suffix = source.suffix.lower()
    if suffix == ".jsonl":
        rows = _jsonl_rows(source)
    elif suffix == ".csv":
        rows = _csv_rows(source)
    else:
        raise DataError(f"unsupported data file {source.name}: expected a folder of class sub-folders, a .jsonl or a .csv file")
    examples = []
    for number, row in enumerate(rows, start=1):
        where = f"{source.name} row {number}"
        images = row.get("image")
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) and p.strip() for p in images):
            raise DataError(f"{where}: 'image' must be a path or a list of paths; got {row.get('image')!r}"[:300])
        paths = tuple(_resolve(source.parent, p, where, confine_to) for p in images)
        for written, path in zip(images, paths):
            if not path.is_file():
                looked = "" if confine_to is not None else f" (looked for {path})"
                raise DataError(f"{where}: image {written!r} not found{looked}")
        label = clean_label(row.get("label"), where) if require_labels or row.get("label") not in (None, "") else None
        row_question = row.get("question")
        examples.append(Example(paths, str(row_question).strip() if row_question else question, label))
    if not examples:
        raise DataError(f"{source.name} holds no examples")
    return examples


def _from_class_folders(folder: Path) -> list[Example]:
    examples = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = clean_label(class_dir.name, f"folder {class_dir.name!r} of {folder}")
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                examples.append(Example((path,), None, label))
    if not examples:
        raise DataError(f"{folder} holds no class sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return examples


def _jsonl_rows(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path.name} line {number} is not valid JSON: {error.msg}") from None
        except RecursionError:
            raise DataError(f"{path.name} line {number} is nested too deeply to be a row") from None
        if not isinstance(row, dict):
            raise DataError(f"{path.name} line {number}: expected an object with 'image', 'question', 'label'")
        rows.append(row)
    return rows


def _csv_rows(path: Path) -> list[dict]:
    rows = list(csv.DictReader(_read_text(path).splitlines()))
    if rows and "image" not in rows[0]:
        raise DataError(f"{path.name}: expected a header with an 'image' column; got {list(rows[0])}")
    for row in rows:
        cell = (row.get("image") or "").strip()
        if cell.startswith("["):  # several images: a JSON list in the cell
            try:
                row["image"] = json.loads(cell)
            except (json.JSONDecodeError, RecursionError):
                raise DataError(f"{path.name}: image cell {cell[:60]!r} is not a JSON list") from None
    return rows


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path.name} is not UTF-8 text") from None


def _resolve(base: Path, relative: str, where: str, confine_to: Path | None) -> Path:
    path = (base / relative).resolve()
    if confine_to is not None and not path.is_relative_to(confine_to.resolve()):
        raise DataError(f"{where}: image path {relative!r} points outside the uploaded folder")
    return path


def labels_of(examples: Sequence[Example]) -> list[str]:
    missing = [e.name for e in examples if e.label is None]
    if missing:
        raise DataError(f"{len(missing)} example(s) have no label, e.g. {missing[0]}")
    return [e.label for e in examples]  # type: ignore[misc]
