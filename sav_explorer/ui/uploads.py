"""Turning uploaded files into examples, safely: zips are checked before anything is written.

    examples = examples_from_uploads([Path("support.zip")], workdir)     # class sub-folders or a JSONL
    examples = examples_from_uploads([jsonl, *pngs], workdir)            # a JSONL file with its images

Uploaded data files may only point at images inside what was uploaded; zips may not hold paths that
escape their folder, links, too many files, or more bytes (declared or real) than the caps allow.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from ..data import IMAGE_SUFFIXES, Example, load_examples, looks_like_image
from ..errors import DataError
from ..official import read_official

MAX_ZIP_MEMBERS = 5_000
MAX_ZIP_BYTES = 200 * 1024 * 1024  # uncompressed, in all
MAX_ZIP_RATIO = 200  # a member that expands more than this (and past 1 MB) is treated as a zip bomb
MAX_ARCHIVE_RATIO = 50  # the whole archive: real images barely compress
DATA_SUFFIXES = {".jsonl", ".csv", ".json"}  # kept from an upload; which of them is the data file depends on the format


def data_file_suffixes(data_format: str) -> set[str]:
    """Rows come as JSONL or CSV; official task files as a JSON array or JSONL (a stray .json beside
    class folders is never taken for rows)."""
    return {".jsonl", ".csv"} if data_format == "rows" else {".json", ".jsonl"}


SupportMember = Callable[[str, bytes], str | None]


def support_member(name: str, head: bytes) -> str | None:
    """Keeps images whose header is an image's and data files; says why anything else is skipped."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in DATA_SUFFIXES:
        return None
    if suffix not in IMAGE_SUFFIXES:
        return f"not an image or data file ({suffix or 'no suffix'})"
    return None if looks_like_image(head) else f"its content is not a {suffix[1:].upper()} image"


CLASSIFIER_FILES = {"manifest.json", "tensors.safetensors", "activations.safetensors"}


def classifier_member(name: str, head: bytes) -> str | None:
    """Keeps the files a classifier folder holds; skips anything else."""
    return None if PurePosixPath(name).name in CLASSIFIER_FILES else "not part of a classifier folder"


def extract_zip(archive: Path, dest: Path, accept: SupportMember = support_member, room: int | None = None) -> list[str]:
    """Extracts the members of `archive` that `accept` keeps into `dest`, after checking every member.

    `room` is how many bytes may be written. Returns "name: why" for each member skipped.
    """
    if not zipfile.is_zipfile(archive):
        raise DataError(f"{archive.name} is not a zip file")
    skipped: list[str] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir() and not _is_litter(m.filename)]
            if len(members) > MAX_ZIP_MEMBERS:
                raise DataError(f"{archive.name} holds {len(members)} files; the limit is {MAX_ZIP_MEMBERS}")
            declared = sum(m.file_size for m in members)
            if declared > MAX_ZIP_BYTES:
                raise DataError(f"{archive.name} expands to {declared:,} bytes; the limit is {MAX_ZIP_BYTES:,}")
            if declared > 1024 * 1024 and declared > MAX_ARCHIVE_RATIO * archive.stat().st_size:
                ratio = declared // max(1, archive.stat().st_size)
                raise DataError(
                    f"{archive.name} expands {ratio}-fold (a zip bomb?); real images barely compress (limit {MAX_ARCHIVE_RATIO}-fold)"
                )
            for member in members:
                _check_member(archive.name, member, dest)
            kept = []
            for member in members:
                with zf.open(member) as source:
                    reason = accept(member.filename, source.read(16))
                if reason:
                    skipped.append(f"{member.filename}: {reason}")
                else:
                    kept.append(member)
            if room is not None and sum(m.file_size for m in kept) > room:
                raise DataError(
                    f"{archive.name} expands to {sum(m.file_size for m in kept) / 2**20:.1f} MB; your session has room for "
                    f"{max(0, room) / 2**20:.1f} MB more"
                )
            written = 0
            for member in kept:
                target = dest / PurePosixPath(member.filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as source, open(target, "wb") as out:
                    # Counts real bytes too: a header can understate what a member expands to.
                    while chunk := source.read(1 << 20):
                        written += len(chunk)
                        if written > MAX_ZIP_BYTES:
                            raise DataError(f"{archive.name} expands past {MAX_ZIP_BYTES:,} bytes (a zip bomb?)")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as error:
        raise DataError(f"{archive.name} is damaged or uses an unsupported zip feature ({error})") from None
    except RuntimeError as error:  # encrypted members
        raise DataError(f"{archive.name} cannot be read: {error}") from None
    return skipped


def _is_litter(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part.startswith("__MACOSX") for part in parts) or PurePosixPath(name).name.startswith(".")


def _check_member(archive: str, member: zipfile.ZipInfo, dest: Path) -> None:
    name = member.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{archive} holds a path that escapes its folder: {name!r}")
    if not (dest / name).resolve().is_relative_to(dest.resolve()):
        raise DataError(f"{archive} holds a path that escapes its folder: {name!r}")
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DataError(f"{archive} holds a symbolic link ({name!r}); links are not accepted")
    if member.file_size > 1024 * 1024 and member.file_size > MAX_ZIP_RATIO * max(1, member.compress_size):
        raise DataError(f"{archive}: {name!r} expands {member.file_size // max(1, member.compress_size)}-fold (a zip bomb?)")


def _data_root(folder: Path) -> Path:
    """Skips single wrapping folders (zips made by "compress folder" have one); ignores macOS litter."""
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if any(p.is_dir() or p.suffix.lower() in DATA_SUFFIXES for p in inner.iterdir()):
            return _data_root(inner)
    return folder


def examples_from_folder(
    folder: Path, question: str | None = None, require_labels: bool = True, data_format: str = "rows"
) -> list[Example]:
    """A JSONL/CSV file at the folder's root if there is one, else class sub-folders; an official
    task file (`data_format` official:NAME) finds its images in the folder by file name."""
    root = _data_root(folder)
    data_files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in data_file_suffixes(data_format))
    if len(data_files) > 1:
        names = ", ".join(p.name for p in data_files)
        raise DataError(f"found several data files ({names}); upload one JSONL or CSV file with its images")
    if data_files:
        return _read_data_file(data_files[0], folder, question, require_labels, data_format)
    if not require_labels:
        images = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if images:
            return [Example((p,), question, p.parent.name if p.parent != root else None) for p in images]
    try:
        return load_examples(root)
    except DataError as error:  # the server's temporary folder is nothing to show a visitor
        raise DataError(str(error).replace(str(root), "the upload")) from None


def _read_data_file(path: Path, folder: Path, question, require_labels, data_format: str) -> list[Example]:
    if data_format == "rows":
        return load_examples(path, question=question, require_labels=require_labels, confine_to=folder)
    name = data_format.partition(":")[2]
    return read_official(path, name, require_labels=require_labels, by_name_in=folder)


def examples_from_uploads(
    paths: Sequence[str | Path],
    workdir: Path,
    question: str | None = None,
    require_labels: bool = True,
    room: int | None = None,
    data_format: str = "rows",
) -> tuple[list[Example], list[str]]:
    """Examples from one zip, or from a JSONL/CSV file uploaded together with its images; and the
    files that were skipped, with why.

    Files are copied (zips extracted) into a fresh folder under `workdir`, the only place data files
    may point into; the folder is removed again if the upload is refused. `room`: bytes that may be written.
    """
    paths = [Path(p) for p in paths or []]
    if not paths:
        raise DataError("no file uploaded: choose a zip of class sub-folders, or a JSONL/CSV file with its images")
    workdir.mkdir(parents=True, exist_ok=True)
    dest = Path(_fresh_dir(workdir))
    try:
        return _examples_into(paths, dest, question, require_labels, room, data_format)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _examples_into(paths: list[Path], dest: Path, question, require_labels, room, data_format) -> tuple[list[Example], list[str]]:
    zips = [p for p in paths if p.suffix.lower() == ".zip"]
    if zips:
        if len(paths) > 1:
            raise DataError("upload one zip on its own, or a JSONL/CSV file together with its images")
        skipped = extract_zip(zips[0], dest, room=room)
        if not any(dest.rglob("*")):
            detail = f": {'; '.join(skipped[:3])}" if skipped else ""
            raise DataError(f"{zips[0].name} holds no images or data files{detail}")
        return examples_from_folder(dest, question, require_labels, data_format), skipped
    data_files = [p for p in paths if p.suffix.lower() in data_file_suffixes(data_format)]
    if not data_files:
        hint = (
            " (a .json file is an official task file: choose the official format it comes in)"
            if any(p.suffix.lower() == ".json" for p in paths)
            else ""
        )
        raise DataError(f"no data file among the uploads: add the JSONL or CSV file that lists the images and labels{hint}")
    if len(data_files) > 1:
        raise DataError(f"upload one data file at a time; got {len(data_files)}")
    incoming = sum(p.stat().st_size for p in paths)
    if room is not None and incoming > room:
        raise DataError(f"these files hold {incoming / 2**20:.1f} MB; your session has room for {max(0, room) / 2**20:.1f} MB more")
    skipped = []
    for path in paths:
        if path.suffix.lower() not in DATA_SUFFIXES:
            with open(path, "rb") as handle:
                reason = support_member(path.name, handle.read(16))
            if reason:
                skipped.append(f"{path.name}: {reason}")
                continue
        shutil.copyfile(path, dest / Path(path.name).name)  # keep names: the data file refers to them
    return _read_data_file(dest / data_files[0].name, dest, question, require_labels, data_format), skipped


def _fresh_dir(workdir: Path) -> Path:
    index = len(list(workdir.glob("upload-*")))
    while (workdir / f"upload-{index}").exists():
        index += 1
    path = workdir / f"upload-{index}"
    path.mkdir()
    return path
