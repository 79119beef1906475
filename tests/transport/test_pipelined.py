"""The default durability's hot path over real sockets: every chunk stacked into a mapped spill file, many chunks
in flight (acked or not, never committed yet), committed files recycled for later chunks, a learner that dies
and restarts from its checkpoint mid-stream, an actor that restarts from its spill directory. Replay must hold
every transition exactly once. Both homes of the mapped files are covered: the RAM spill directory (the
default, ``transport.shm_spill_fraction`` > 0) and the disk spill directory (``shm_spill_fraction=0``)."""
from __future__ import annotations

import time

import pytest

from robot_rl.replay import ReplayBuffer
from robot_rl.transport import pending as pending_module
from robot_rl.transport.base import DedupLedger
from robot_rl.transport.shm import shm_dir_for
from robot_rl.types import Batch
from support import rollout
from test_zmq import Rig, _wait


@pytest.fixture(autouse=True)
def map_every_chunk(monkeypatch):
    """The test env's chunks are a few kB: map them like the megabyte image chunks of a real robot."""
    monkeypatch.setattr(pending_module, "MAPPED_MIN_BYTES", 0)


def _inodes(directory):
    return {p.stat().st_ino for p in directory.iterdir() if p.name != "origin"}


TIERS = pytest.mark.parametrize("fraction", [0.25, 0.0], ids=["ram", "disk"])


def _files_dir(spill, fraction):
    """Where the mapped chunk files live: the RAM directory paired with ``spill``, or ``spill`` itself."""
    if fraction == 0:
        return spill
    ram = shm_dir_for(spill)
    if ram is None:
        pytest.skip("no writable /dev/shm on this machine")
    return ram


@TIERS
def test_a_window_of_uncommitted_chunks_survives_a_learner_restart_exactly_once(pixel_env, ports, tmp_path,
                                                                                fraction):
    rig = Rig(pixel_env, ports, chunk_size=8, shm_spill_fraction=fraction)
    server = rig.start_server()
    spill = tmp_path / "spill"
    client = rig.client(spill_dir=spill)
    files = _files_dir(spill, fraction)
    data = rollout(pixel_env, 480)
    try:
        for tr in data[:160]:
            client.send(tr)
        assert client.wait_acked(10)
        assert all(c.slot is not None for c in client.pending._chunks.values())  # stacked into mapped files
        checkpoint = server.ledger.state_dict(), len(rig.replay)  # a checkpoint taken here
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(client.pending) == 0)
        first_files = _inodes(files)  # the 20 committed chunks' files, kept for reuse
        assert len(first_files) == 20
        assert not list(spill.glob("*.chunk")) or fraction == 0  # in RAM: nothing went to the disk directory
        for tr in data[160:320]:  # in flight and acked, never in a checkpoint
            client.send(tr)
        assert client.wait_acked(10)
        assert _inodes(files) == first_files  # the new chunks were written over the committed ones' files
        server.close()  # the learner dies
        assert _wait(lambda: not client.connected, timeout=5)
        for tr in data[320:]:  # the actor keeps producing meanwhile
            client.send(tr)
        # restarted from its checkpoint: replay and ledger as they were when it was written
        rig.replay = ReplayBuffer(rig.obs_spec, rig.action_spec, 10_000)
        rig.replay.add_batch(Batch.from_transitions(data[:checkpoint[1]]))
        ledger = DedupLedger()
        ledger.load_state_dict(checkpoint[0])
        server = rig.start_server(ledger=ledger)
        assert _wait(lambda: len(rig.replay) == 480, timeout=20)
        time.sleep(0.5)  # anything sent twice would arrive by now
        ids = list(rig.replay.iter_ids())
        assert len(ids) == len(set(ids)) == 480
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(client.pending) == 0)
        assert not list(files.glob("*.chunk"))  # all committed: only recycled files remain
    finally:
        client.close()
        server.close()
    assert not list(spill.iterdir())  # a clean stop deletes the recycled files
    assert fraction == 0 or not files.exists()  # and the RAM directory


@TIERS
def test_an_actor_restart_resends_its_mapped_uncommitted_chunks_exactly_once(pixel_env, ports, tmp_path, fraction):
    rig = Rig(pixel_env, ports, chunk_size=8, shm_spill_fraction=fraction)
    server = rig.start_server()
    spill = tmp_path / "spill"
    data = rollout(pixel_env, 160)
    first = rig.client(spill_dir=spill)
    try:
        for tr in data[:80]:
            first.send(tr)
        assert first.wait_acked(10)
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(first.pending) == 0)
        for tr in data[80:]:
            first.send(tr)
        assert first.wait_acked(10)  # acked, not committed: on disk only in the mapped spill files
    finally:
        first.close()
    # a clean stop leaves the uncommitted chunks on disk (moved out of RAM: they survive a reboot too)
    assert len(list(spill.glob("*.chunk"))) == 10
    second = rig.client(spill_dir=spill)  # a new incarnation finds them and resends them under their own seqs
    try:
        assert second.wait_acked(10)
        assert second.counters["duplicates"] == 10 and len(rig.replay) == 160  # the ledger had every one
        ids = list(rig.replay.iter_ids())
        assert len(ids) == len(set(ids)) == 160
    finally:
        second.close()
        server.close()
