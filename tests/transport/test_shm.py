"""The RAM spill directory (``transport.shm_spill_fraction``): mapped chunk files go to ``/dev/shm`` within a
budget and to the disk spill directory beyond it; they survive ``kill -9`` of the actor; a clean shutdown moves
what is uncommitted to disk; RAM directories of deleted runs are removed."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robot_rl.transport.pending import PendingChunks
from robot_rl.transport.shm import ORIGIN_FILE, SHM_ROOT, remove_orphans, shm_dir_for
from robot_rl.transport.spill import chunk_files, read_frames
from robot_rl.transport.wire import encode_chunk
from robot_rl.specs import spec_hash
from robot_rl.types import Batch
from test_spill import ACT, OBS, _bytes, _header, _transitions, map_small_chunks  # noqa: F401 (fixture)

pytestmark = [pytest.mark.skipif(not SHM_ROOT.is_dir(),
                                 reason="no /dev/shm on this machine (the RAM spill directory is Linux-only)"),
              pytest.mark.usefixtures("map_small_chunks")]  # a few kB each: mapped like real image chunks


def _add(pending, seqs):
    for seq in seqs:
        pending.add_transitions(("inc", seq), _transitions(4, seed=seq), _header(seq, 4), persist=True)


def test_mapped_chunks_live_in_ram_are_recycled_there_and_move_to_disk_at_a_clean_stop(tmp_path):
    spill = tmp_path / "spill"
    pending = PendingChunks(1 << 20, spill, shm_fraction=0.25)
    ram = shm_dir_for(spill)
    try:
        _add(pending, range(4))
        assert [k for k, _ in chunk_files(ram)] == [("inc", s) for s in range(4)] and not list(chunk_files(spill))
        assert pending.shm_bytes == sum(pending.get(("inc", s)).nbytes for s in range(4)) > 0
        expected = {s: _bytes(pending.frames(("inc", s))) for s in range(4)}
        assert read_frames(ram / "inc-000000000002.chunk") == expected[2]  # the RAM file is the chunk's bytes
        inodes = {p.stat().st_ino for p in ram.glob("*.chunk")}
        assert pending.commit("inc", 1) == 2
        _add(pending, [4, 5])  # written over the two committed files, in RAM
        assert {p.stat().st_ino for p in ram.glob("*.chunk")} == inodes
        assert pending.spill_all() >= 4  # a clean stop: the 4 uncommitted chunks go to the disk directory
        assert [k for k, _ in chunk_files(spill)] == [("inc", s) for s in (2, 3, 4, 5)]
        assert not list(chunk_files(ram)) and pending.shm_bytes == 0
        assert _bytes(pending.frames(("inc", 2))) == expected[2]  # read back from disk, whole
    finally:
        pending.close()
    assert not ram.exists()  # nothing left in RAM


def test_past_the_budget_new_chunks_go_to_disk_and_recycled_ram_files_are_still_used(tmp_path):
    spill = tmp_path / "spill"
    pending = PendingChunks(1 << 20, spill, shm_fraction=0.25)
    try:
        _add(pending, [0])
        pending.shm_budget = 2 * pending.shm_bytes + 200  # room for two chunks (and their file prefixes)
        _add(pending, [1, 2, 3])
        assert [pending.get(("inc", s)).in_shm for s in range(4)] == [True, True, False, False]
        assert [k for k, _ in chunk_files(spill)] == [("inc", 2), ("inc", 3)]
        pending.commit("inc", 3)
        _add(pending, [4, 5, 6])  # the two recycled RAM files first, then disk again
        assert [pending.get(("inc", s)).in_shm for s in (4, 5, 6)] == [True, True, False]
        assert pending.shm_bytes <= pending.shm_budget
    finally:
        pending.spill_all()
        pending.close()


KILLED_WITH_CHUNKS_IN_RAM = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from test_spill import _header, _transitions
    from robot_rl.transport import pending as pending_module
    from robot_rl.transport.pending import PendingChunks
    pending_module.MAPPED_MIN_BYTES = 0
    pending = PendingChunks(1 << 20, Path(sys.argv[1]), shm_fraction=0.25)
    pending.add_transitions(("inc", 0), _transitions(4, seed=0), _header(0, 4), persist=True)
    pending.shm_budget = 0  # the RAM budget is used: the next chunk goes to disk
    pending.add_transitions(("inc", 1), _transitions(4, seed=1), _header(1, 4), persist=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_actors_chunks_in_ram_and_on_disk_are_recovered_in_order(tmp_path):
    spill = tmp_path / "spill"
    proc = subprocess.run([sys.executable, "-c", KILLED_WITH_CHUNKS_IN_RAM, str(spill), str(Path(__file__).parent)],
                          capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    ram = shm_dir_for(spill)
    assert [k for k, _ in chunk_files(ram)] == [("inc", 0)] and [k for k, _ in chunk_files(spill)] == [("inc", 1)]
    restarted = PendingChunks(1 << 20, spill, shm_fraction=0.25)
    try:
        assert restarted.recover_spilled() == 2
        assert list(restarted._chunks) == [("inc", 0), ("inc", 1)]  # resent in seq order
        assert restarted.get(("inc", 0)).in_shm and restarted.shm_bytes > 0
        for seq in (0, 1):  # each read back whole: the bytes encode_chunk makes of the same transitions
            expected = encode_chunk(Batch.from_transitions(_transitions(4, seed=seq)), "a0", "inc", seq,
                                    spec_hash(OBS, ACT))
            assert _bytes(restarted.frames(("inc", seq))) == _bytes(expected)
        restarted.commit("inc", 1)
        assert restarted.shm_bytes == 0 and not list(chunk_files(ram)) and not list(chunk_files(spill))
    finally:
        restarted.close()
    assert not ram.exists()


def test_ram_directories_of_deleted_runs_are_removed_and_live_ones_kept(tmp_path):
    live, gone = tmp_path / "live" / "spill", tmp_path / "gone" / "spill"
    live.mkdir(parents=True)
    gone.mkdir(parents=True)
    live_ram, gone_ram = shm_dir_for(live), shm_dir_for(gone)
    assert live_ram != gone_ram and (live_ram / ORIGIN_FILE).read_text() == str(live.resolve())
    (gone_ram / "inc-000000000000.chunk").write_bytes(b"x" * 100)  # a chunk nobody can resend any more
    gone.rmdir()
    gone.parent.rmdir()  # the run was deleted
    try:
        assert remove_orphans() >= 1
        assert not gone_ram.exists() and live_ram.exists()
    finally:
        (live_ram / ORIGIN_FILE).unlink()
        live_ram.rmdir()
