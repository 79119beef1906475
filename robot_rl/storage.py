"""Crash-safe file writes: write to a temporary file in the same directory, fsync, rename, fsync the directory.

A reader (or a restarted process) therefore sees either the old file or the complete new one, never a torn
write; this is what checkpoints, episode files and spilled chunks rely on.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path | str, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file that replaces ``path`` only when the ``with`` block completes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path | str, data: bytes | memoryview, *, fsync: bool = True) -> None:
    with atomic_open(path, fsync=fsync) as f:
        f.write(data)


def atomic_write_with(path: Path | str, writer: Callable[[BinaryIO], None], *, fsync: bool = True) -> None:
    with atomic_open(path, fsync=fsync) as f:
        writer(f)


# A temporary this old was left by a crash: no atomic write of ours takes anywhere near this long.
STALE_TEMPORARY_AGE_S = 600.0


def remove_stale_temporaries(directory: Path | str, min_age_s: float = STALE_TEMPORARY_AGE_S) -> int:
    """Delete ``.*.tmp`` files left by a crash mid-write (older than ``min_age_s``); returns how many were removed.

    Younger ones are left alone: they may be another process's write in flight. Opening an episode store to read
    it (the learner, a test polling an actor's store) used to delete a running actor's temporary, and the actor
    then died in ``os.replace`` with FileNotFoundError."""
    n, now = 0, time.time()
    for p in Path(directory).glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if now - p.stat().st_mtime >= min_age_s:
                p.unlink()
                n += 1
    return n
