"""Where an actor's spill-at-creation chunk files live first: a RAM-backed directory (``/dev/shm``).

Why: with ``spill_all_chunks`` every chunk is stacked into a mapped spill file so a ``kill -9`` of the actor loses
nothing. On a disk file system those files are dirty page cache, and past the kernel's dirty threshold its
flusher writes them to disk (0.8-1.4 GB/s of writeback and 70-80% system time in ``vmstat`` at 20k image
transitions/s on the 2-core dev machine) although each file is committed and rewritten a second later. tmpfs
pages are never written back, and a tmpfs file survives the actor process just as the page cache does (the
promise was never more: no fsync). What a tmpfs file does not survive is a reboot, so a clean shutdown moves
the chunks still uncommitted to the disk spill directory (:meth:`PendingChunks.spill_all`), and chunks go to
the disk directory directly once the RAM budget (``transport.shm_spill_fraction`` of the tmpfs) is used.

Layout: ``/dev/shm/robot_rl-<uid>/<spill dir name>-<hash of its absolute path>/``, with an ``origin`` file
naming the disk spill directory it belongs to. The same disk spill directory always maps to the same RAM
directory, so a restarted actor finds what a killed one left there. A RAM directory whose disk spill
directory no longer exists (its run was deleted) holds chunks nobody can resend; it is removed when the next
actor starts (:func:`remove_orphans`), so forgotten runs do not keep RAM.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("robot_rl.actor.transport")

SHM_ROOT = Path("/dev/shm")
ORIGIN_FILE = "origin"


def _user_root(root: Path) -> Path:
    return root / f"robot_rl-{os.getuid()}"


def shm_dir_for(spill_dir: Path, root: Path = SHM_ROOT) -> Path | None:
    """The RAM directory paired with ``spill_dir`` (created, private to this user), or None where ``root`` is not
    a writable tmpfs-like directory (macOS, Windows, a read-only container)."""
    if not (root.is_dir() and os.access(root, os.W_OK | os.X_OK)):
        return None
    origin = spill_dir.resolve()
    digest = hashlib.sha256(str(origin).encode()).hexdigest()[:16]
    directory = _user_root(root) / f"{origin.name}-{digest}"
    try:
        _user_root(root).mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        (directory / ORIGIN_FILE).write_text(str(origin))
    except OSError as exc:
        log.info("no RAM spill directory under %s (%s): chunks are spilled to %s only", root, exc, spill_dir)
        return None
    return directory


def shm_budget_bytes(directory: Path, fraction: float) -> int:
    """``fraction`` of the file system holding ``directory`` (its total size: tmpfs defaults to half the RAM;
    Docker's default 64 MB ``/dev/shm`` gives a budget that sends nearly every chunk to disk)."""
    st = os.statvfs(directory)
    return int(st.f_blocks * st.f_frsize * fraction)


def remove_orphans(root: Path = SHM_ROOT) -> int:
    """Delete this user's RAM spill directories whose disk spill directory is gone; returns how many."""
    removed = 0
    user_root = _user_root(root)
    if not user_root.is_dir():
        return 0
    for directory in user_root.iterdir():
        try:
            origin = Path((directory / ORIGIN_FILE).read_text())
        except OSError:
            continue  # being created right now, or not ours to judge
        if not origin.exists():
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed


def remove_if_empty(directory: Path) -> None:
    """Remove the RAM directory once it holds nothing but its ``origin`` file (a clean shutdown)."""
    with contextlib.suppress(OSError):
        if all(p.name == ORIGIN_FILE for p in directory.iterdir()):
            (directory / ORIGIN_FILE).unlink()
            directory.rmdir()
