"""The actor's spill directory: one file per uncommitted chunk (its encoded wire frames), written with one
system call, and recycled once the learner has committed it.

File format (unchanged since protocol 1): ``u32`` frame count, one ``u64`` length per frame, then the frames.
A chunk's file is named ``<incarnation>-<seq:012d>.chunk`` and appears under that name only once it is
completely written (a rename), so an actor killed mid-write leaves no partial chunk behind: what a restarted
actor finds under a ``.chunk`` name is a whole chunk. No fsync: the promise is to survive the actor process
(a ``kill -9``; the page cache survives it), not a power cut.

Why files are recycled: creating a fresh multi-megabyte file per chunk and deleting it at commit cost ~8x the
copy itself (page-cache pages allocated, dirtied, then freed, and the file system's block bookkeeping: 9.2 ms vs
1.15 ms for a 6.3 MB chunk on the 2-core dev machine), which made the default durability 5x slower than bare
pyzmq. A committed chunk's file is renamed to ``.free-<n>.spill`` instead, and the next chunk of about the same
size is written over it in place (its page-cache pages are reused), then renamed to its own name. A kill
mid-write leaves a ``.free-*`` file, which holds no chunk by name and is deleted when the directory is opened
again.

Mapped slots (:meth:`SpillDir.open_mapped`): with ``spill_all_chunks`` the actor stacks a chunk's transitions
straight into its spill file mapped in memory (``MAP_SHARED``), and sends the frames from that mapping. The
chunk's one copy is then also its spill write: no second copy into the page cache, no ``write`` system call.
The file's blocks are reserved (``posix_fallocate``) before the mapping is touched, so a full disk fails there
with an OSError, never as a SIGBUS on a store. The file is renamed to its chunk name only once it is filled.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import resource
import shutil
import struct
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from robot_rl.storage import remove_stale_temporaries

Key = tuple[str, int]  # (incarnation, seq)
CHUNK_SUFFIX = ".chunk"


def mapping_budget() -> int:
    """How many spill files one actor may keep mapped, for held chunks and again for recycled files. Python's
    mmap keeps a file descriptor per mapping, so together they take at most half the soft ``RLIMIT_NOFILE``;
    never more than 1024 each (6.4 GB of 6.3 MB image chunks), never fewer than 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1024 if soft == resource.RLIM_INFINITY else max(16, min(1024, soft // 4))


MAX_FREE_MAPPINGS = mapping_budget()
"""Recycled files kept mapped (each mapping holds a file descriptor); beyond that they are mapped again. As many
as a commit period's chunks: a fresh mapping populated page by page cost 4x the chunk's copy (py-spy, 6.3 MB
chunks: ``madvise(MADV_POPULATE_WRITE)`` 26% of the actor's IO thread when only 64 were kept)."""
FREE_PREFIX = ".free-"


def _frame_bytes(frame: Any) -> memoryview:
    return memoryview(frame).cast("B")


def _prefix(frame_sizes: Sequence[int]) -> bytes:
    """The file's prefix: ``u32`` frame count, then one ``u64`` length per frame."""
    return struct.pack(f"<I{len(frame_sizes)}Q", len(frame_sizes), *frame_sizes)


def _layout(frames: list[Any]) -> list[memoryview]:
    """The file's byte ranges in order: prefix, then every frame (views, no copies)."""
    views = [_frame_bytes(f) for f in frames]
    return [memoryview(_prefix([v.nbytes for v in views])), *views]


def _write_all(fd: int, views: list[memoryview]) -> None:
    """``writev`` until every byte is written (a regular file may take a large write in parts)."""
    views = [v for v in views if v.nbytes]
    while views:
        written = os.writev(fd, views)
        while views and written >= views[0].nbytes:
            written -= views[0].nbytes
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def write_frames(path: Path, frames: list[Any]) -> None:
    """Write one chunk file at ``path`` on its own (temporary name, one ``writev``, rename); tests and tools."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, _layout(frames))
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


def read_frames(path: Path) -> list[bytes]:
    """The frames of one chunk file; ValueError when it is truncated or has trailing bytes."""
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    lengths = struct.unpack_from(f"<{count}Q", data, 4)
    frames, offset = [], 4 + 8 * count
    for length in lengths:
        if offset + length > len(data):
            raise ValueError(f"{path}: truncated ({len(data)} bytes, frames need {offset + length})")
        frames.append(data[offset:offset + length])
        offset += length
    if offset != len(data):
        raise ValueError(f"{path}: {len(data) - offset} trailing bytes")
    return frames


def read_first_frame(path: Path, max_bytes: int) -> bytes | None:
    """The first frame of a chunk file (its header) without reading the rest; None when the file is too short
    to hold it or the frame is over ``max_bytes``."""
    with open(path, "rb") as f:
        prefix = f.read(12)  # u32 frame count, then the first frame's u64 length
        if len(prefix) < 12:
            return None
        count, length = struct.unpack("<IQ", prefix)
        if count == 0 or length > max_bytes:
            return None
        f.seek(4 + 8 * count)
        frame = f.read(length)
    return frame if len(frame) == length else None


def chunk_files(directory: Path) -> Iterator[tuple[Key, Path]]:
    """``((incarnation, seq), path)`` of every chunk file waiting in ``directory``, oldest seq first."""
    for path in sorted(directory.glob(f"*{CHUNK_SUFFIX}")):
        incarnation, _, seq = path.stem.rpartition("-")
        with contextlib.suppress(ValueError):
            yield (incarnation, int(seq)), path


@dataclass(eq=False)
class MappedSlot:
    """One spill file mapped into the actor's memory; a chunk's frames are views into ``mm``."""

    path: Path
    """``.free-<n>.spill`` while it is filled, ``<incarnation>-<seq>.chunk`` once :meth:`SpillDir.persist`."""
    size: int
    mm: mmap.mmap


def _unexported(mm: mmap.mmap) -> bool:
    """No buffer of ``mm`` is alive (resizing to its own size is refused while one is, and does nothing else)."""
    try:
        mm.resize(len(mm))
    except BufferError:
        return False
    return True


class SpillDir:
    """Chunk files of one actor, and the committed ones kept for reuse (``max_free_bytes`` of them, or what the
    last commit released if more: :meth:`keep_free`).

    Used by one thread at a time (the actor's IO thread, then ``close``): no locking."""

    def __init__(self, directory: Path, max_free_bytes: int) -> None:
        self.directory = directory
        self.max_free_bytes = max(0, int(max_free_bytes))
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(directory)
        for leftover in directory.glob(f"{FREE_PREFIX}*"):  # recycled files of an earlier run: no chunks
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        self._free: "OrderedDict[Path, int]" = OrderedDict()  # path -> size, least recently freed first
        self._free_by_size: dict[int, dict[Path, None]] = {}  # size -> its free files, least recently freed first
        self._maps: dict[Path, mmap.mmap] = {}  # free files still mapped (reused without a page fault)
        self._free_bytes = 0
        self._next_free = 0
        self._free_cap = self.max_free_bytes

    def keep_free(self, nbytes: int) -> None:
        """Keep up to ``nbytes`` of recycled files (at least ``max_free_bytes``): the actor calls it with the
        size of the chunks a commit releases, which is what the next commit period's chunks will occupy. Sized
        below that, recycled files were deleted and new ones made, allocated and faulted in (an ``unlink`` and a
        ``madvise`` per chunk: a third of the actor's IO thread at 1 s commits, 790 MB per period)."""
        # shrinks slowly (5% a commit): commit periods vary (a learner busy checkpointing), and a pool cut to
        # a short period's size would make the next long period's chunks new files again
        self._free_cap = max(self.max_free_bytes, int(nbytes), int(self._free_cap * 0.95))
        self._trim_free()

    def path(self, key: Key) -> Path:
        return self.directory / f"{key[0]}-{key[1]:012d}{CHUNK_SUFFIX}"

    def write(self, key: Key, frames: list[Any]) -> Path:
        """Write one chunk (one ``writev``) under its final name; raises OSError (disk full...) with no chunk
        file left behind."""
        views = _layout(frames)
        size = sum(v.nbytes for v in views)
        slot = self._take_free(size)
        if slot is not None:  # overwrite in place; every byte up to ``size`` is rewritten
            src, flags = slot[0], os.O_WRONLY
        else:
            src, flags = self.directory / f".{key[0]}-{key[1]:012d}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(src, flags, 0o644)
            try:
                if slot is not None and slot[1] != size:
                    os.ftruncate(fd, size)  # a chunk's seq takes 1-9 bytes in its header: sizes differ a little
                _write_all(fd, views)
            finally:
                os.close(fd)
            final = self.path(key)
            os.replace(src, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src)  # a half-rewritten free file or temporary holds nothing worth keeping
            raise
        return final

    @property
    def free_bytes(self) -> int:
        """Bytes of recycled files kept for reuse."""
        return self._free_bytes

    def open_mapped(self, frame_sizes: Sequence[int],
                    allow_new: bool = True) -> tuple[MappedSlot, list[memoryview]] | None:
        """A file laid out for frames of ``frame_sizes`` bytes, mapped, under a ``.free-*`` name (no chunk yet),
        and a writable view per frame. Raises OSError (disk full...) with nothing left behind. With
        ``allow_new`` False only a recycled file is used: None when there is none."""
        prefix = _prefix(frame_sizes)
        size = len(prefix) + sum(frame_sizes)
        taken = self._take_free(size)
        if taken is not None:
            path, old_size, mm = taken
        elif not allow_new:
            return None
        else:
            path, old_size, mm = self.directory / f"{FREE_PREFIX}{self._next_free}.spill", -1, None
            self._next_free += 1
        try:
            if mm is None or old_size != size:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    os.ftruncate(fd, size)
                    os.posix_fallocate(fd, 0, size)  # a full disk fails here, not as SIGBUS on a store
                    mm = self._remap(mm, fd, size)
                finally:
                    os.close(fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            raise
        mm[:len(prefix)] = prefix
        whole, views, offset = memoryview(mm), [], len(prefix)
        for n in frame_sizes:
            views.append(whole[offset:offset + n])
            offset += n
        return MappedSlot(path, size, mm), views

    @staticmethod
    def _remap(mm: mmap.mmap | None, fd: int, size: int) -> mmap.mmap:
        """A mapping of the (already sized) file ``fd``. A chunk's seq takes 1-9 bytes in its header, so
        recycled files often differ from the next chunk by a byte or two: the old mapping is resized in place
        (its pages stay mapped). A new one is populated writable in one call (``MADV_POPULATE_WRITE``), not
        faulted in page by page on the first stores. A mapping that cannot be resized is only dropped, never closed: a view of it
        may still be alive (libzmq is done with it, pyzmq releases its reference later); nothing reads it."""
        if mm is not None:
            try:
                mm.resize(size)
                return mm
            except (BufferError, OSError, SystemError):
                pass
        mm = mmap.mmap(fd, size)
        if sys.platform.startswith("linux"):  # Linux >= 5.14; elsewhere the first stores fault the pages in
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(getattr(mmap, "MADV_POPULATE_WRITE", 23))
        return mm

    def persist(self, slot: MappedSlot, key: Key) -> Path:
        """The slot is filled: give it its chunk name (from now on a restarted actor resends it)."""
        final = self.path(key)
        os.replace(slot.path, final)
        slot.path = final
        return final

    def adopt(self, source: Path, key: Key) -> Path:
        """Copy the chunk file ``source`` (another directory's) in under its chunk name, then delete ``source``.
        Raises OSError (disk full...) with ``source`` intact and nothing left here; a kill between the rename and
        the delete leaves the chunk in both places, which the learner's ledger deduplicates."""
        final = self.path(key)
        tmp = self.directory / f".{final.name}.tmp"
        try:
            shutil.copyfile(source, tmp)  # sendfile on Linux: no copy through Python
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(FileNotFoundError):
            source.unlink()
        return final

    def abandon(self, slot: MappedSlot) -> None:
        """Filling the slot failed: it holds no chunk; keep it for the next one."""
        self._add_free(slot.path, slot.size, slot.mm)

    def recycle(self, path: Path, slot: MappedSlot | None = None, reusable: bool = True) -> None:
        """The learner committed the chunk in ``path``: keep its file (and ``slot``'s mapping) for a later
        chunk, or delete it. ``reusable`` False: libzmq may still be sending from the chunk's mapping, so the
        file must not be overwritten; it is deleted (the mapping stays valid until its last view goes)."""
        try:
            size = path.stat().st_size
            if not reusable or size > self._free_cap or (slot is not None and slot.size != size):
                path.unlink()
                return
            free = self.directory / f"{FREE_PREFIX}{self._next_free}.spill"
            self._next_free += 1
            os.replace(path, free)
        except FileNotFoundError:
            return
        self._add_free(free, size, slot.mm if slot is not None else None)

    def close(self) -> None:
        """Delete the recycled files (a clean stop leaves only the chunks still uncommitted)."""
        for path in list(self._free):
            self._forget_free(path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _add_free(self, path: Path, size: int, mm: mmap.mmap | None) -> None:
        self._free[path] = size
        self._free_by_size.setdefault(size, {})[path] = None
        self._free_bytes += size
        if mm is not None:
            if len(self._maps) >= MAX_FREE_MAPPINGS:  # untracked, its mapping could not be checked at reuse
                self._forget_free(path)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return
            self._maps[path] = mm
        self._trim_free()

    def _trim_free(self) -> None:
        while self._free_bytes > self._free_cap:
            oldest = next(iter(self._free))
            self._forget_free(oldest)
            with contextlib.suppress(FileNotFoundError):
                oldest.unlink()

    def _take_free(self, size: int) -> tuple[Path, int, mmap.mmap | None] | None:
        """The recycled file nearest in size (most recently freed among equals), its size and its mapping.

        A file whose mapping still has buffers exported (a zero-copy send of its last chunk that pyzmq has not
        released) is deleted instead of reused: rewriting it could change bytes libzmq is still sending, and
        truncating it (another size) made such a send fail with EFAULT, which aborts libzmq."""
        while self._free_by_size:
            nearest = min(self._free_by_size, key=lambda s: abs(s - size))
            path = next(reversed(self._free_by_size[nearest]))  # most recently freed: likeliest in the page cache
            mm = self._maps.get(path)
            self._forget_free(path)
            if mm is None or _unexported(mm):
                return path, nearest, mm
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the mapping stays valid for whoever still reads it
        return None

    def _forget_free(self, path: Path) -> None:
        self._maps.pop(path, None)
        size = self._free.pop(path)
        bucket = self._free_by_size[size]
        del bucket[path]
        if not bucket:
            del self._free_by_size[size]
        self._free_bytes -= size
