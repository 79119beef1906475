"""The actor's spill directory: chunk files written in one call, recycled after commit, chunks stacked straight
into mapped files; a process killed mid-write leaves no chunk behind, and what a restart finds is whole."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from robot_rl.transport import pending as pending_module
from robot_rl.transport.chunking import chunk_fields, frame_rows, stack_into, views_as_arrays
from robot_rl.transport.pending import PendingChunks
from robot_rl.transport.spill import SpillDir, chunk_files, read_frames
from robot_rl.transport.wire import chunk_header, decode_chunk, encode_chunk, unpack_header
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec, spec_hash
from robot_rl.types import Batch, Transition

OBS = ObsSpec({"state": ArraySpec((5,), "float32"), "images/front": ArraySpec((6, 8, 3), "uint8")})
ACT = ActionSpec((2,), -1, 1)


def _transitions(n: int, seed: int = 0) -> list[Transition]:
    rng = np.random.default_rng(seed)
    frames = [{"state": rng.standard_normal(5).astype(np.float32),
               "images/front": rng.integers(0, 255, (6, 8, 3), np.uint8)} for _ in range(n + 1)]
    return [Transition(frames[i], rng.uniform(-1, 1, 2), float(i), frames[i + 1], i == n - 1, False, "a0", 4, i,
                       intervened=i % 2 == 1) for i in range(n)]


def _bytes(frames) -> list[bytes]:
    return [bytes(memoryview(f).cast("B")) for f in frames]


def _header(seq: int, n: int):
    return lambda fields: chunk_header(fields, "a0", "inc", seq, n, spec_hash(OBS, ACT))


@pytest.fixture
def map_small_chunks(monkeypatch):
    """These chunks are a few kB: map them anyway (real image chunks are megabytes)."""
    monkeypatch.setattr(pending_module, "MAPPED_MIN_BYTES", 0)


@pytest.mark.parametrize("persist,mapped", [(True, True), (True, False), (False, False)])
def test_stacked_chunk_is_byte_identical_to_encode_chunk_and_decodes(tmp_path, monkeypatch, persist, mapped):
    if mapped:
        monkeypatch.setattr(pending_module, "MAPPED_MIN_BYTES", 0)
    items = _transitions(7)
    expected = encode_chunk(Batch.from_transitions(items), "a0", "inc", 3, spec_hash(OBS, ACT))
    pending = PendingChunks(1 << 20, tmp_path)
    pending.add_transitions(("inc", 3), items, _header(3, 7), persist=persist)
    frames = pending.frames(("inc", 3))
    assert _bytes(frames) == _bytes(expected)
    if persist:  # on disk before it is sent, and the file is the same bytes
        assert (pending.get(("inc", 3)).slot is not None) == mapped and not pending.unpersisted
        assert read_frames(tmp_path / "inc-000000000003.chunk") == _bytes(expected)
    else:
        assert not list(chunk_files(tmp_path))
    _, header = unpack_header(frames[0])
    chunk = decode_chunk(header, frames[1:], OBS, ACT, spec_hash(OBS, ACT))
    assert chunk.batch.step.tolist() == list(range(7)) and chunk.batch.intervened.tolist() == [False, True] * 3 + [False]


def test_committed_files_are_recycled_in_place_and_restart_finds_only_uncommitted(tmp_path, map_small_chunks):
    pending = PendingChunks(1 << 20, tmp_path)
    for seq in range(3):
        pending.add_transitions(("inc", seq), _transitions(4, seed=seq), _header(seq, 4), persist=True)
    first = (tmp_path / "inc-000000000000.chunk").stat().st_ino
    assert pending.commit("inc", 0) == 1
    assert not (tmp_path / "inc-000000000000.chunk").exists() and len(list(tmp_path.glob(".free-*"))) == 1
    pending.add_transitions(("inc", 3), _transitions(4, seed=3), _header(3, 4), persist=True)
    assert (tmp_path / "inc-000000000003.chunk").stat().st_ino == first  # the committed file, rewritten
    assert not list(tmp_path.glob(".free-*"))
    expected = encode_chunk(Batch.from_transitions(_transitions(4, seed=3)), "a0", "inc", 3, spec_hash(OBS, ACT))
    assert read_frames(tmp_path / "inc-000000000003.chunk") == _bytes(expected)
    pending.commit("inc", 1)
    pending.spill_all()
    pending.close()  # a clean stop: recycled files are deleted, uncommitted chunks stay
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inc-000000000002.chunk", "inc-000000000003.chunk"]
    restarted = PendingChunks(1 << 20, tmp_path)
    assert restarted.recover_spilled() == 2
    assert _bytes(restarted.frames(("inc", 3))) == _bytes(expected)


def test_a_file_libzmq_may_still_read_is_deleted_not_reused(tmp_path):
    spill = SpillDir(tmp_path, max_free_bytes=1 << 20)
    slot, views = spill.open_mapped([3, 5])
    views[0][:] = b"abc"
    views[1][:] = b"defgh"
    path = spill.persist(slot, ("inc", 0))
    spill.recycle(path, slot, reusable=False)
    assert not list(tmp_path.iterdir())
    assert bytes(views[1]) == b"defgh"  # the mapping outlives the file: a send in flight still reads its bytes


def test_free_files_are_bounded_and_removed_on_close(tmp_path):
    spill = SpillDir(tmp_path, max_free_bytes=2500)
    paths = [spill.write(("inc", i), [b"x" * 1000]) for i in range(4)]
    for p in paths:
        spill.recycle(p)
    assert len(list(tmp_path.glob(".free-*"))) == 2  # 4 x 1,012 bytes, at most 2,500 kept
    spill.close()
    assert not list(tmp_path.iterdir())


def test_a_torn_chunk_file_is_refused(tmp_path):
    spill = SpillDir(tmp_path, max_free_bytes=0)
    path = spill.write(("inc", 0), [b"header", b"x" * 100])
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_frames(path)


KILLED_MID_FILL = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from robot_rl.transport.spill import SpillDir
    spill = SpillDir(Path(sys.argv[1]), max_free_bytes=1 << 20)
    done, _ = spill.open_mapped([4, 1000])
    spill.persist(done, ("inc", 0))
    slot, views = spill.open_mapped([4, 1000])  # the next chunk: half stacked when the process dies
    views[0][:] = b"head"
    views[1][:500] = b"y" * 500
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_sigkill_mid_fill_leaves_the_finished_chunk_and_no_partial_one(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_FILL, str(tmp_path)], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert [key for key, _ in chunk_files(tmp_path)] == [("inc", 0)]
    assert len(list(tmp_path.glob(".free-*"))) == 1  # the half-filled file holds no chunk by name
    pending = PendingChunks(1 << 20, tmp_path)  # the restarted actor
    assert pending.recover_spilled() == 1 and not list(tmp_path.glob(".free-*"))
    assert len(read_frames(tmp_path / "inc-000000000000.chunk")) == 2


@pytest.mark.parametrize("min_mapped", [0, 1 << 30])
def test_a_full_disk_keeps_the_chunk_in_memory_and_writes_it_later(tmp_path, min_mapped):
    """RLIMIT_FSIZE makes every spill write fail with EFBIG, the way ENOSPC fails it on a full disk (a mapped
    file's ftruncate/fallocate, or a writev)."""
    script = textwrap.dedent("""
        import resource, signal, sys
        from pathlib import Path
        sys.path.insert(0, sys.argv[2])
        from test_spill import _header, _transitions, _bytes
        from robot_rl.transport import pending as pending_module
        from robot_rl.transport.pending import PendingChunks
        pending_module.MAPPED_MIN_BYTES = int(sys.argv[3])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        pending = PendingChunks(1 << 20, Path(sys.argv[1]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
        pending.add_transitions(("inc", 0), _transitions(4), _header(0, 4), persist=True)
        assert pending.unpersisted and pending.spill_failures == 1 and "File too large" in pending.spill_error
        assert len(_bytes(pending.frames(("inc", 0)))) == 12  # held in memory, whole
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        pending.retry_spill()
        assert not pending.unpersisted and pending.spill_error is None
        assert (Path(sys.argv[1]) / "inc-000000000000.chunk").exists()
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent), str(min_mapped)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stdout + proc.stderr
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".free-")]


def test_fields_follow_the_first_transition_and_reject_a_mismatch(tmp_path):
    items = _transitions(3)
    items[2].obs["images/front"] = np.zeros((6, 9, 3), np.uint8)  # a camera changed size mid-chunk
    rows, obs_row = frame_rows([t.obs for t in items], [t.next_obs for t in items])
    assert obs_row.tolist() == [0, 1, 2]  # items[2].obs is items[1].next_obs (one dict): 4 frames
    fields = chunk_fields(items, len(rows))
    assert fields[0] == ("frames/images/front", (4, 6, 8, 3), np.dtype(np.uint8))
    arrays = views_as_arrays(fields, [memoryview(bytearray(int(np.prod(s)) * d.itemsize)) for _, s, d in fields])
    with pytest.raises(ValueError):
        stack_into(items, rows, obs_row, arrays)


def test_mapped_chunks_are_capped_and_the_rest_written(tmp_path, map_small_chunks, monkeypatch):
    monkeypatch.setattr(pending_module, "MAX_MAPPED_CHUNKS", 2)  # each mapping holds a file descriptor
    pending = PendingChunks(1 << 20, tmp_path)
    for seq in range(3):
        pending.add_transitions(("inc", seq), _transitions(4, seed=seq), _header(seq, 4), persist=True)
    assert [pending.get(("inc", s)).slot is not None for s in range(3)] == [True, True, False]
    assert len(list(chunk_files(tmp_path))) == 3 and not pending.unpersisted
    pending.commit("inc", 0)  # a mapping freed: the next chunk is mapped again
    pending.add_transitions(("inc", 3), _transitions(4, seed=3), _header(3, 4), persist=True)
    assert pending.get(("inc", 3)).slot is not None


def test_a_commit_keeps_files_for_the_whole_uncommitted_set_whatever_the_memory_bound(tmp_path, map_small_chunks):
    """max_bytes bounds chunks held in memory, not recycled files: a commit period's worth are kept for reuse
    (deleting them made every later chunk a new file, allocated and faulted in)."""
    pending = PendingChunks(100, tmp_path)  # a bound far below one chunk
    for seq in range(6):
        pending.add_transitions(("inc", seq), _transitions(4, seed=seq), _header(seq, 4), persist=True)
    assert pending.mem_bytes == 0 and not pending.backpressure  # mapped chunks live in their files
    files = {p.stat().st_ino for p in tmp_path.iterdir()}
    assert pending.commit("inc", 5) == 6
    assert len(list(tmp_path.glob(".free-*"))) == 6
    for seq in range(6, 12):
        pending.add_transitions(("inc", seq), _transitions(4, seed=seq), _header(seq, 4), persist=True)
    assert {p.stat().st_ino for p in tmp_path.iterdir()} == files  # every new chunk reused a committed file
    assert all(pending.get(("inc", s)).slot is not None for s in range(6, 12))


def test_a_file_whose_mapping_is_still_exported_is_never_rewritten_or_truncated(tmp_path):
    """A zero-copy send holds a view of the chunk's mapping until pyzmq releases it; reusing the file then could
    change bytes still being sent, and truncating it made libzmq's send fail with EFAULT (an abort)."""
    spill = SpillDir(tmp_path, max_free_bytes=1 << 20)
    slot, views = spill.open_mapped([4, 1000])
    views[1][:] = b"z" * 1000
    in_flight = np.frombuffer(views[1], np.uint8)  # what a send in flight still holds
    del views
    spill.recycle(spill.persist(slot, ("inc", 0)), slot, reusable=True)  # committed, but still exported
    again, new_views = spill.open_mapped([4, 500])  # another size: the free file would be truncated
    new_views[1][:] = b"n" * 500
    assert again.path != slot.path and not slot.path.exists()  # a new file; the exported one was deleted
    assert bytes(in_flight) == b"z" * 1000  # the bytes in flight are intact and still readable
    del in_flight, new_views
    spill.recycle(spill.persist(again, ("inc", 1)), again)
    reused, _ = spill.open_mapped([4, 500])
    assert reused.mm is again.mm  # released: its file and mapping are reused as before
