"""The actor's store of chunks the learner has not committed yet: bounded in memory, spilling to disk.

Each chunk is kept as its encoded wire frames. Past ``max_bytes`` in memory the oldest chunks are written to
``spill_dir`` (one file per chunk, see :mod:`robot_rl.transport.spill`) and their memory is released. When the spill directory
cannot take them (disk full, read-only, gone) the chunks stay in memory, the error is logged (rate-limited)
and :attr:`PendingChunks.backpressure` says so once memory passes the bound: the actor then holds its robot
rather than drop data or die; it resumes by itself once the learner commits chunks or the disk has room. Spilled chunks survive an
actor restart: a new actor process with the same spill directory picks them up and resends them under their
original incarnation and seq, which the learner's ledger deduplicates.
"""
from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from robot_rl.transport.chunking import Field, chunk_fields, empty_arrays, frame_rows, stack_into, views_as_arrays
from robot_rl.transport.shm import remove_if_empty, remove_orphans, shm_budget_bytes, shm_dir_for
from robot_rl.transport.spill import (Key, MappedSlot, SpillDir, chunk_files, mapping_budget, read_frames,
                                      write_frames)
from robot_rl.types import Transition

__all__ = ["ArrayPool", "PendingChunk", "PendingChunks", "human_bytes", "read_frames", "write_frames"]
log = logging.getLogger("robot_rl.actor.transport")

MAPPED_MIN_BYTES = 256 * 2**10
"""Smaller chunks are stacked in memory and written with one ``writev``: a mapping costs a file descriptor
(Python's mmap keeps one open) and a kernel mapping, and saves little on a small copy."""
MAX_MAPPED_CHUNKS = mapping_budget()
"""At most this many held chunks are mapped at once (a file descriptor each); the rest are written with
``writev``. Enough for a commit period's chunks: past it every chunk cost a copy into memory and a ``writev``."""


def human_bytes(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} kB"


class ArrayPool:
    """Reuses the actor's chunk buffers. A fresh multi-megabyte allocation is backed by new pages that fault
    on first touch, which costs ~10x the copy itself; buffers of committed chunks are recycled instead."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._free: dict[tuple[tuple[int, ...], str], list[np.ndarray]] = {}

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        free = self._free.get((tuple(shape), np.dtype(dtype).str))
        if free:
            arr = free.pop()
            self.bytes -= arr.nbytes
            return arr
        return np.empty(shape, dtype)

    def release(self, arrays: list[np.ndarray]) -> None:
        for arr in arrays:
            if self.bytes + arr.nbytes <= self.max_bytes:
                self._free.setdefault((arr.shape, arr.dtype.str), []).append(arr)
                self.bytes += arr.nbytes


@dataclass
class PendingChunk:
    frames: list[Any] | None
    """Encoded wire frames, or None while spilled."""
    nbytes: int
    n_transitions: int
    sent_at: float | None = None
    """monotonic time of the last send; None = must be (re)sent."""
    acked: bool = False
    spill_path: Path | None = None
    buffers: list[np.ndarray] | None = None
    """Pooled arrays behind ``frames`` (returned to the pool when the chunk is dropped)."""
    sends: int = 0
    persist_pending: bool = False
    """Asked to be written at creation, but the write failed (retried by :meth:`PendingChunks.retry_spill`)."""
    tracker: Any = None
    """zmq MessageTracker of the last send: a buffer is reused only once libzmq is done with it."""
    slot: MappedSlot | None = None
    """The mapped spill file ``frames`` point into (stacked there directly), None for in-memory buffers."""
    was_mapped: bool = False
    """Stacked into a mapped file (``slot`` is dropped at close): without the mapping to check, the file is
    deleted at commit rather than reused (a send from that mapping may still be in flight)."""
    in_shm: bool = False
    """``spill_path`` is in the RAM spill directory (:mod:`robot_rl.transport.shm`), not the disk one."""

    @property
    def libzmq_done(self) -> bool:
        """libzmq no longer reads this chunk's buffers: never sent, tracked as done, or sent exactly once and
        acked (the learner received those bytes, so libzmq finished with them; pyzmq's tracker may lag)."""
        return self.tracker is None or self.tracker.done or (self.acked and self.sends == 1)


def _frame_bytes(frame: Any) -> memoryview:
    return memoryview(frame).cast("B")


class PendingChunks:
    def __init__(self, max_bytes: int, spill_dir: Path | None, shm_fraction: float = 0.0) -> None:
        """``shm_fraction`` > 0 (with a ``spill_dir``): chunks stacked into mapped spill files go to a RAM-backed
        directory paired with ``spill_dir`` while they take at most that fraction of it (see
        :mod:`robot_rl.transport.shm`); the rest, and everything at :meth:`spill_all`, go to ``spill_dir``."""
        self.max_bytes = int(max_bytes)
        self.spill_dir = spill_dir
        self._chunks: "OrderedDict[Key, PendingChunk]" = OrderedDict()
        self.mem_bytes = 0
        """Bytes of held chunks in the actor's own memory (what ``max_bytes`` bounds). A chunk stacked into its
        mapped spill file is not counted: it is on disk (page cache the kernel writes back and may evict), and
        unmapping it under memory pressure only cost a ``munmap`` now and a fresh mapping later."""
        self.spilled_total = 0
        self.unacked = 0
        """Chunks not yet acked (maintained incrementally: other threads may read it without a lock)."""
        self.dropped_acked = 0
        self._warned_drop = False
        self.spill_error: str | None = None
        """Why the last write to the spill directory failed (None once a write succeeds again)."""
        self.spill_failures = 0
        self._unpersisted = 0
        self._last_spill_log = -1e9
        # Pooled buffers are what the pending chunks of the next commit period will occupy anyway.
        self.pool = ArrayPool(max_bytes=self.max_bytes)
        # Committed chunk files are recycled, up to what one memory bound's worth of chunks occupies.
        self._spill = SpillDir(spill_dir, max_free_bytes=self.max_bytes) if spill_dir is not None else None
        self._mapped = 0  # held chunks whose frames live in a mapped spill file
        self._shm: SpillDir | None = None
        self.shm_budget = 0
        """Most bytes of chunk files (held and recycled) in the RAM spill directory."""
        self.shm_bytes = 0
        """Bytes of held chunks whose file is in the RAM spill directory (read by other threads: stats)."""
        if spill_dir is not None and shm_fraction > 0:
            remove_orphans()
            shm = shm_dir_for(spill_dir)
            if shm is not None:
                self.shm_budget = shm_budget_bytes(shm, shm_fraction)
                self._shm = SpillDir(shm, max_free_bytes=0)

    def __len__(self) -> int:
        return len(self._chunks)

    def recover_spilled(self) -> int:
        """Load spilled chunks left by an earlier run of this actor (disk and RAM spill directories, in seq
        order); they will be resent."""
        if self.spill_dir is None:
            return 0
        files = [(key, path, False) for key, path in chunk_files(self.spill_dir)]
        if self._shm is not None:
            files += [(key, path, True) for key, path in chunk_files(self._shm.directory)]
        found = 0
        for key, path, in_shm in sorted(files, key=lambda f: f[0]):
            try:
                size = path.stat().st_size
            except OSError:
                log.warning("ignoring unreadable spill file %s", path)
                continue
            if key not in self._chunks:
                self._chunks[key] = PendingChunk(None, size, 0, spill_path=path, in_shm=in_shm)
                self.shm_bytes += size if in_shm else 0
                self.unacked += 1
                found += 1
        return found

    def upgrade_recovered(self, convert: Callable[[Path], bool]) -> int:
        """Apply ``convert(path)`` (rewrites an older protocol's chunk file in place, True if it did) to every
        chunk :meth:`recover_spilled` found; returns how many were rewritten."""
        upgraded = 0
        for chunk in self._chunks.values():
            if chunk.frames is None and chunk.spill_path is not None and convert(chunk.spill_path):
                size = chunk.spill_path.stat().st_size
                self.shm_bytes += size - chunk.nbytes if chunk.in_shm else 0
                chunk.nbytes = size
                upgraded += 1
        return upgraded

    def _release(self, chunk: PendingChunk) -> None:
        """Drop a chunk's in-memory frames, recycling its pooled buffers when libzmq no longer uses them."""
        if chunk.frames is not None and chunk.slot is None:
            self.mem_bytes -= chunk.nbytes
        if chunk.buffers and chunk.libzmq_done:
            self.pool.release(chunk.buffers)
        if chunk.slot is not None:
            self._mapped -= 1
        chunk.frames, chunk.buffers, chunk.slot = None, None, None  # a mapped chunk stays in its file

    @property
    def backpressure(self) -> bool:
        """More than ``max_bytes`` of uncommitted chunks are held in memory and none can go to disk: the
        producer must pause (a robot holds) until the learner commits some or the spill directory has room."""
        return 0 <= self.max_bytes < self.mem_bytes

    def _write_spill(self, key: Key, frames: list[Any]) -> Path | None:
        """Write one chunk's spill file; on an OS error (ENOSPC...) log it (rate-limited) and return None."""
        assert self._spill is not None
        try:
            path = self._spill.write(key, frames)
        except OSError as exc:
            self._spill_failed(exc)
            return None
        self._spill_ok()
        return path

    def _spill_failed(self, exc: OSError) -> None:
        """Count and log (rate-limited) a failed write to the spill directory."""
        assert self.spill_dir is not None
        self.spill_failures += 1
        self.spill_error = f"cannot write {self.spill_dir}: {exc.strerror or exc}"
        now = time.monotonic()
        if now - self._last_spill_log >= 5.0:
            self._last_spill_log = now
            log.error("actor spill directory %s: %s; keeping %d uncommitted chunks (%s) in memory "
                      "(%d failed writes so far)%s", self.spill_dir, exc.strerror or exc, len(self._chunks),
                      human_bytes(self.mem_bytes), self.spill_failures,
                      "; memory bound reached: pausing the actor" if self.backpressure else "")

    def _spill_ok(self) -> None:
        if self.spill_error is not None:
            log.warning("actor spill directory %s is writable again (after %d failed writes)", self.spill_dir,
                        self.spill_failures)
            self.spill_error = None

    def add_transitions(self, key: Key, items: Sequence[Transition], header: Callable[[list[Field]], bytes],
                        persist: bool) -> None:
        """Stack ``items`` into a new chunk (``header(fields)`` makes its header frame) and hold it. With
        ``persist`` (and a spill directory) the transitions are stacked straight into the chunk's spill file
        mapped in memory: that one copy is also the spill write, and the chunk is on disk (page cache) before it
        is sent. If the file cannot be made (disk full), the chunk is built in memory, the write is retried
        later (:meth:`retry_spill`) and :attr:`unpersisted` says so meanwhile."""
        rows, obs_row = frame_rows([t.obs for t in items], [t.next_obs for t in items])
        fields = chunk_fields(items, len(rows))
        head = header(fields)
        sizes = [len(head)] + [math.prod(shape) * dtype.itemsize for _, shape, dtype in fields]
        write_failed = False
        if (persist and self._spill is not None and sum(sizes) >= MAPPED_MIN_BYTES
                and self._mapped < MAX_MAPPED_CHUNKS):
            try:
                target, slot, views = self._open_mapped(sizes)
            except OSError as exc:
                self._spill_failed(exc)
                write_failed = True
            else:
                try:
                    views[0][:] = head
                    arrays = views_as_arrays(fields, views[1:])
                    stack_into(items, rows, obs_row, arrays)
                    path = target.persist(slot, key)
                except OSError as exc:  # the rename failed (directory gone): build it in memory below
                    target.abandon(slot)
                    self._spill_failed(exc)
                    write_failed = True
                except BaseException:
                    target.abandon(slot)
                    raise
                else:
                    self._spill_ok()
                    chunk = self._hold(key, [head, *arrays.values()], len(items), buffers=None, nbytes=sum(sizes))
                    chunk.spill_path, chunk.slot, chunk.was_mapped = path, slot, True
                    chunk.in_shm = target is self._shm
                    self.shm_bytes += chunk.nbytes if chunk.in_shm else 0
                    self._mapped += 1
                    self._spill_if_needed()
                    return
        arrays = empty_arrays(fields, self.pool.empty)
        stack_into(items, rows, obs_row, arrays)
        frames = [head, *arrays.values()]
        observations = [a for name, a in arrays.items() if name.startswith("frames/")]
        if write_failed:
            # its mapped file could not be made just now: hold it, write it once there is room (retry_spill)
            self._persist_later(self._hold(key, frames, len(items), buffers=observations))
            self._spill_if_needed()
        else:  # small (or many mapped already): one writev when persisted
            self.add(key, frames, len(items), persist, buffers=observations)

    def _open_mapped(self, sizes: list[int]) -> tuple[SpillDir, MappedSlot, list[memoryview]]:
        """A mapped slot for a chunk of frames ``sizes``: in the RAM spill directory while it is within its budget
        (a recycled file there is always taken), else in the disk one. Raises OSError when the disk one fails."""
        if self._shm is not None:
            room = self.shm_bytes + self._shm.free_bytes + sum(sizes) + 8 * len(sizes) + 4 <= self.shm_budget
            try:
                opened = self._shm.open_mapped(sizes, allow_new=room)
            except OSError as exc:  # the tmpfs is shared with other programs: it may be full below our budget
                self.shm_budget = self.shm_bytes + self._shm.free_bytes  # reuse what it has, add nothing
                log.warning("RAM spill directory %s: %s; new chunks go to %s (%s of RAM in use)",
                            self._shm.directory, exc.strerror or exc, self.spill_dir, human_bytes(self.shm_budget))
                opened = None
            if opened is not None:
                return self._shm, *opened
        assert self._spill is not None
        slot, views = self._spill.open_mapped(sizes)  # type: ignore[misc]  # allow_new: never None
        return self._spill, slot, views

    def _hold(self, key: Key, frames: list[Any], n_transitions: int, buffers: list[np.ndarray] | None,
              nbytes: int | None = None) -> PendingChunk:
        """Hold a chunk; ``nbytes`` given: its frames are in a mapped spill file, not in memory."""
        in_memory = nbytes is None
        nbytes = sum(_frame_bytes(f).nbytes for f in frames) if nbytes is None else nbytes
        self._chunks[key] = chunk = PendingChunk(frames, nbytes, n_transitions, buffers=buffers)
        if in_memory:
            self.mem_bytes += nbytes
        self.unacked += 1
        return chunk

    def _persist_later(self, chunk: PendingChunk) -> None:
        """Its write at creation failed: :meth:`retry_spill` writes it once there is room."""
        chunk.persist_pending = True
        self._unpersisted += 1

    def add(self, key: Key, frames: list[Any], n_transitions: int, persist: bool = False,
            buffers: list[np.ndarray] | None = None) -> None:
        """Hold a new chunk; with ``persist`` also write it to the spill directory right away (if it can)."""
        chunk = self._hold(key, frames, n_transitions, buffers)
        if persist and self.spill_dir is not None:
            chunk.spill_path = self._write_spill(key, frames)
            if chunk.spill_path is None:
                self._persist_later(chunk)
        self._spill_if_needed()

    def _spill_if_needed(self) -> None:
        if 0 <= self.max_bytes and self.mem_bytes <= self.max_bytes:
            return
        if self.spill_dir is None:
            # Nowhere to spill: forget the oldest chunks the learner already acked (it holds them; only
            # their durability across a learner crash is lost). Unacked data is never dropped.
            for key in [k for k, c in self._chunks.items() if c.acked]:
                if self.mem_bytes <= self.max_bytes * 0.75:
                    break
                self.dropped_acked += 1
                self._release(self._chunks.pop(key))
            if self.dropped_acked and not self._warned_drop:
                self._warned_drop = True
                log.warning("uncommitted chunks exceed %d bytes and no spill directory is set: dropping acked "
                            "chunks (a learner crash before its next checkpoint would lose them)", self.max_bytes)
            return
        # Oldest first: they are the ones the learner has had longest to commit.
        for key, chunk in self._chunks.items():
            if self.max_bytes >= 0 and self.mem_bytes <= self.max_bytes * 0.75:
                break
            if chunk.frames is None or (chunk.slot is not None and self.max_bytes >= 0):
                continue  # spilled, or mapped (on disk already, not in mem_bytes): kept until commit or close
            if chunk.spill_path is None:  # already on disk when persisted at creation
                chunk.spill_path = self._write_spill(key, chunk.frames)
                if chunk.spill_path is None:
                    break  # the disk is full: keep the rest in memory, try again with the next chunk
                if chunk.persist_pending:
                    chunk.persist_pending = False
                    self._unpersisted -= 1
            self._release(chunk)
            self.spilled_total += 1

    @property
    def unpersisted(self) -> bool:
        """Some chunk that was to be written at creation (``spill_all_chunks``) is only in memory: its write
        failed (disk full), so a SIGKILL now would lose it."""
        return self._unpersisted > 0

    def retry_spill(self) -> None:
        """Try the failed writes again (called periodically while :attr:`backpressure` or :attr:`unpersisted`):
        chunks that were to be persisted at creation first, then whatever exceeds the memory bound."""
        if self._unpersisted and self.spill_dir is not None:
            for key, chunk in self._chunks.items():
                if chunk.persist_pending and chunk.frames is not None:
                    chunk.spill_path = self._write_spill(key, chunk.frames)
                    if chunk.spill_path is None:
                        break
                    chunk.persist_pending = False
                    self._unpersisted -= 1
        self._spill_if_needed()

    def spill_all(self) -> int:
        """Write every in-memory chunk to disk, and move the RAM spill directory's chunks there (actor shutdown:
        a later run resends what is uncommitted, even after a reboot)."""
        if self.spill_dir is None:
            return 0
        moved = self._move_shm_to_disk()
        saved_bound, self.max_bytes = self.max_bytes, -1
        try:
            before = self.spilled_total
            self._spill_if_needed()
            return self.spilled_total - before + moved
        finally:
            self.max_bytes = saved_bound

    def _move_shm_to_disk(self) -> int:
        """Copy every held chunk file of the RAM spill directory to the disk one; a chunk that cannot be copied
        (disk full) stays in RAM, where a restarted actor still finds it (until a reboot), and is logged."""
        assert self._spill is not None
        moved = 0
        for key, chunk in self._chunks.items():
            if not chunk.in_shm or chunk.spill_path is None:
                continue
            assert self._shm is not None  # only it makes in_shm chunks
            try:
                path = self._spill.adopt(chunk.spill_path, key)
            except OSError as exc:
                log.error("could not move uncommitted chunks from %s to %s (%s): %d stay in RAM, where the next "
                          "run of this actor finds them unless the machine reboots first", self._shm.directory,
                          self.spill_dir, exc.strerror or exc,
                          sum(c.in_shm for c in self._chunks.values()))
                break
            self._release(chunk)  # its mapping was of the RAM file: the chunk is read from disk from now on
            chunk.spill_path, chunk.in_shm, chunk.was_mapped = path, False, False
            self.shm_bytes -= chunk.nbytes
            moved += 1
        return moved

    def frames(self, key: Key) -> list[Any]:
        chunk = self._chunks[key]
        if chunk.frames is not None:
            return chunk.frames
        assert chunk.spill_path is not None
        return read_frames(chunk.spill_path)

    def get(self, key: Key) -> PendingChunk | None:
        return self._chunks.get(key)

    def keys_to_send(self, now: float, resend_after_s: float) -> Iterator[Key]:
        for key, chunk in self._chunks.items():
            if chunk.sent_at is None or (not chunk.acked and now - chunk.sent_at > resend_after_s):
                yield key

    def mark_all_unsent(self) -> None:
        """After a learner restart everything not committed must go again, acked or not."""
        for chunk in self._chunks.values():
            chunk.sent_at, chunk.acked = None, False
        self.unacked = len(self._chunks)

    def ack(self, key: Key) -> None:
        chunk = self._chunks.get(key)
        if chunk is not None and not chunk.acked:
            chunk.acked = True
            self.unacked -= 1

    def drop(self, key: Key) -> None:
        """Forget one acked chunk (``durability=ack``: the learner has it)."""
        chunk = self._chunks.get(key)
        if chunk is not None:
            if not chunk.acked:  # the ack is what brought us here: count it before forgetting
                chunk.acked = True
                self.unacked -= 1
            self._forget(key)

    def commit(self, incarnation: str, through_seq: int) -> int:
        """Forget chunks ``(incarnation, seq <= through_seq)``; returns how many were dropped."""
        drop = [k for k in self._chunks if k[0] == incarnation and k[1] <= through_seq]
        if self._spill is not None:  # recycle as many files as the uncommitted set occupies: the next ones need them
            held = [c for c in self._chunks.values() if c.spill_path is not None]
            self._spill.keep_free(sum(c.nbytes + 4096 for c in held if not c.in_shm))
            if self._shm is not None:
                self._shm.keep_free(min(self.shm_budget, self.shm_bytes + 4096 * sum(c.in_shm for c in held)))
        for key in drop:
            self._forget(key)
        return len(drop)

    def _forget(self, key: Key) -> None:
        """Remove a chunk the learner holds durably (or, with durability=ack, has received)."""
        chunk = self._chunks.pop(key)
        if not chunk.acked:
            self.unacked -= 1
        if chunk.persist_pending:
            self._unpersisted -= 1
        slot, reusable = chunk.slot, chunk.libzmq_done and (chunk.slot is not None or not chunk.was_mapped)
        self._release(chunk)
        if chunk.spill_path is not None and self._spill is not None:
            # the next chunk of its size is written over it (mapped, if it was), unless libzmq may still read it
            target = self._shm if chunk.in_shm and self._shm is not None else self._spill
            self.shm_bytes -= chunk.nbytes if chunk.in_shm else 0
            target.recycle(chunk.spill_path, slot, reusable)

    def close(self) -> None:
        """Delete the recycled spill files (after :meth:`spill_all`: what stays is uncommitted chunks only)."""
        if self._spill is not None:
            self._spill.close()
        if self._shm is not None:
            self._shm.close()
            remove_if_empty(self._shm.directory)
