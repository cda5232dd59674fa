"""Disk hygiene for the app's session folders: a quota per session, replaced uploads removed, and
stale folders of ended apps swept away.

    check_quota(session.workdir, incoming_bytes)     # before anything is written
    prune_uploads(session)                           # after the support set or a fit changes
    sweep_stale_sessions(max_age_s)                  # at start-up and then periodically
    sweep_also(store.expire)                         # sessions kept for a reload, closed with the same sweeps

Several apps and test runs share the machine's temporary folder: each session folder carries an
owner marker (process id and start time of the app that made it), and a sweep never touches a
folder whose owner is another app that is still running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError

log = logging.getLogger("sav_explorer.ui")
PREFIX = "sav-session-"
OWNER = ".sav-owner"
DISK_ENV = "SAV_SESSION_DISK_MB"  # each session's disk use, in MB (default 300)
UPLOAD_CACHE_ENV = "SAV_UPLOAD_CACHE_MB"  # Gradio's cache of uploads and outputs, all visitors together, in MB (default 1024)
UPLOAD_SWEEP_ENV = "SAV_UPLOAD_SWEEP_S"  # how often that cache is brought within its bound, in seconds (default 30)
UPLOAD_MAX_AGE_S = 60 * 60  # Gradio itself deletes cached files older than this (`gr.Blocks(delete_cache=...)`)
_APP_STARTED = time.time()


def session_root() -> Path:
    return Path(tempfile.gettempdir())


def quota_bytes() -> int:
    return int(float(os.environ.get(DISK_ENV, "300")) * 1024 * 1024)


def mark_owner(workdir: Path) -> None:
    """Writes the owner marker once, when a session folder is first made."""
    marker = workdir / OWNER
    if not marker.exists():
        marker.write_text(json.dumps({"pid": os.getpid(), "started": _APP_STARTED}), encoding="utf-8")


def disk_use(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def room_left(workdir: Path) -> int:
    """Bytes the session may still write (negative once past its quota)."""
    return quota_bytes() - disk_use(workdir)


def check_quota(workdir: Path, incoming: int) -> None:
    """Refuses a write that would take the session past its disk quota, before anything is written."""
    used, limit = disk_use(workdir), quota_bytes()
    if used + incoming > limit:
        raise DataError(
            f"this upload needs {incoming / 2**20:.1f} MB and your session already holds {used / 2**20:.1f} MB; "
            f"the limit per session is {limit / 2**20:.0f} MB (clear the support set, or upload less)"
        )


def prune_uploads(session) -> None:
    """Removes upload folders and added images that neither the support set, nor a kept fit, nor a running
    extraction still uses."""
    with session.lock:  # an extraction takes its support set under the lock
        examples = [*session.support, *session.reading, *(e for fit in session.fits.values() for e in fit.examples)]
    used = {Path(image) for example in examples for image in example.images if isinstance(image, (str, Path))}
    for kind in ("support", "test"):
        for folder in (session.workdir / kind).glob("upload-*"):
            if not any(path.is_relative_to(folder) for path in used):
                shutil.rmtree(folder, ignore_errors=True)
    images = session.workdir / "images"
    for folder in images.glob("*") if images.is_dir() else []:
        if not any(path.is_relative_to(folder) for path in used):
            shutil.rmtree(folder, ignore_errors=True)


def _owner_alive(folder: Path) -> bool:
    """Whether the app that made the folder still runs (this very app counts as not alive: its own
    stale folders may go)."""
    try:
        owner = json.loads((folder / OWNER).read_text(encoding="utf-8"))
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_change(folder: Path) -> float:
    times = [folder.stat().st_mtime] + [p.stat().st_mtime for p in folder.rglob("*")]
    return max(times)


def sweep_stale_sessions(max_age_s: float, root: Path | None = None) -> int:
    """Removes session folders unchanged for `max_age_s` whose owner is this app or no running app."""
    removed = 0
    now = time.time()
    for folder in (root or session_root()).glob(f"{PREFIX}*"):
        try:
            if not folder.is_dir() or now - _last_change(folder) < max_age_s or _owner_alive(folder):
                continue
        except OSError:  # removed meanwhile by its own app
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def bound_upload_cache(blocks, limit: int) -> int:
    """Deletes the app's oldest files in Gradio's cache (every upload, refused ones included, and every
    file output) until the rest fits in `limit` bytes; returns the bytes freed. Gradio's own
    `delete_cache` goes by age only. Handlers copy what they keep into the session's folder, so an
    evicted upload is never read again."""
    keep = set()
    for block in blocks.blocks.values():
        keep.update(getattr(block, "keep_in_cache", set()))
    files = []
    for tracked in list(blocks.temp_file_sets):
        for name in list(tracked):
            try:
                info = Path(name).lstat()
            except OSError:
                tracked.discard(name)
                continue
            files.append((info.st_ctime, info.st_size, name, tracked))
    total, freed = sum(size for _, size, _, _ in files), 0
    for _, size, name, tracked in sorted(files, key=lambda item: item[0]):  # oldest first
        if total <= limit:
            break
        if name in keep:
            continue
        Path(name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(name).parent.rmdir()  # Gradio's folder of one upload, once empty
        tracked.discard(name)
        total, freed = total - size, freed + size
    return freed


def start_cache_bound(blocks) -> threading.Thread:
    """Keeps Gradio's cache of this app within `$SAV_UPLOAD_CACHE_MB`, every `$SAV_UPLOAD_SWEEP_S` seconds,
    in a daemon thread that ends once the app is gone (it holds the app only weakly)."""
    app = weakref.ref(blocks)

    def loop() -> None:
        while True:
            time.sleep(float(os.environ.get(UPLOAD_SWEEP_ENV, "30")))
            blocks = app()
            if blocks is None:
                return
            try:
                limit = int(float(os.environ.get(UPLOAD_CACHE_ENV, "1024")) * 1024 * 1024)
                freed = bound_upload_cache(blocks, limit)
                if freed:
                    log.info("freed %.1f MB of Gradio's upload cache", freed / 2**20)
            except Exception:  # a failed sweep must never stop the app
                log.exception("upload cache sweep failed")
            del blocks

    thread = threading.Thread(target=loop, name="sav-upload-cache", daemon=True)
    thread.start()
    return thread


_sweeper: threading.Thread | None = None
_also: list[weakref.WeakMethod] = []


def sweep_also(method: Callable[[], object]) -> None:
    """Calls a bound method on every sweep for as long as its object lives (a session store's `expire`)."""
    _also.append(weakref.WeakMethod(method))


def run_other_sweeps() -> None:
    for ref in list(_also):
        method = ref()
        if method is None:
            _also.remove(ref)
        else:
            method()


def start_sweeper(max_age_s: float, every_s: float = 15 * 60) -> threading.Thread:
    """Sweeps once now, then every `every_s` seconds in a daemon thread; one thread per process,
    however many apps the process builds."""
    global _sweeper
    if _sweeper is not None and _sweeper.is_alive():
        return _sweeper

    def loop() -> None:
        while True:
            try:
                removed = sweep_stale_sessions(max_age_s)
                if removed:
                    log.info("removed %d stale session folder(s)", removed)
                run_other_sweeps()
            except Exception:  # a failed sweep must never stop the app
                log.exception("session sweep failed")
            time.sleep(every_s)

    _sweeper = threading.Thread(target=loop, name="sav-session-sweeper", daemon=True)
    _sweeper.start()
    return _sweeper
