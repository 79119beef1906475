"""Chunks an actor of wire protocol 3 left in its spill directory reach the learner after an upgrade: the new
actor converts each file in place (same incarnation and seq) before resending it. Files it cannot convert are
left as they are, with a logged reason."""
from __future__ import annotations

import logging

import msgpack
import numpy as np

from robot_rl.transport import wire
from robot_rl.transport.spill import read_first_frame, read_frames, write_frames
from robot_rl.transport.upgrade import chunk_version, upgrade_spill_file
from robot_rl.transport.zmq_learner import ZmqLearnerServer
from robot_rl.types import Batch
from support import rollout
from test_zmq import Rig, _wait


def _v3_frames(batch: Batch, actor_id: str, incarnation: str, seq: int, spec_hash: str) -> list[bytes]:
    """A chunk exactly as protocol 3 wrote it: obs/<key> and next_obs/<key> apart, then the per-step fields."""
    arrays = {name: np.ascontiguousarray(a) for name, a in batch.arrays().items()}
    header = msgpack.packb({"t": "chunk", "v": 3, "actor_id": actor_id, "incarnation": incarnation, "seq": seq,
                            "n": len(batch), "spec_hash": spec_hash,
                            "fields": [[name, list(a.shape), a.dtype.name] for name, a in arrays.items()]},
                           use_bin_type=True)
    return [header, *(a.tobytes() for a in arrays.values())]


def test_an_upgraded_actor_converts_and_resends_protocol_3_chunks_exactly_once(pixel_env, ports, tmp_path):
    rig = Rig(pixel_env, ports, chunk_size=8)
    received: list[Batch] = []
    server = ZmqLearnerServer(rig.cfg, rig.obs_spec, rig.action_spec, rig.sh, "cfg",
                              lambda c: received.append(Batch.from_arrays(
                                  {k: np.array(v) for k, v in c.batch.arrays().items()}, c.batch.actor_id)))
    server.start()
    spill = tmp_path / "spill"
    spill.mkdir()
    data = rollout(pixel_env, 40)  # 5 chunks an old actor (incarnation "old") sent but nobody committed
    for seq in range(5):
        write_frames(spill / f"old-{seq:012d}.chunk",
                     _v3_frames(Batch.from_transitions(data[8 * seq:8 * seq + 8]), "a0", "old", seq, rig.sh))
    assert chunk_version(read_frames(spill / "old-000000000000.chunk")[0]) == 3
    client = rig.client(spill_dir=spill)
    try:
        assert client.wait_acked(10)
        assert _wait(lambda: sum(len(b) for b in received) == 40)
        assert client.counters["rejected"] == 0
        got = {(b.episode_id[i], b.step[i]): (b, i) for b in received for i in range(len(b))}
        assert len(got) == 40
        for tr in data:  # every transition arrived whole: observations, actions, rewards, flags
            b, i = got[(tr.episode_id, tr.step)]
            for key in tr.obs:
                np.testing.assert_array_equal(b.obs[key][i], tr.obs[key])
                np.testing.assert_array_equal(b.next_obs[key][i], tr.next_obs[key])
            np.testing.assert_array_equal(b.action[i], tr.action)
            assert b.reward[i] == np.float32(tr.reward) and b.terminated[i] == tr.terminated
        assert server.ledger.marks() == {"a0": {"old": 4}}  # under the old incarnation and seqs
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(client.pending) == 0)
        assert not list(spill.glob("*.chunk"))
    finally:
        client.close()
        server.close()


def test_unconvertible_chunk_files_are_left_untouched_with_a_reason(pixel_env, tmp_path, caplog):
    data = rollout(pixel_env, 8)
    frames = _v3_frames(Batch.from_transitions(data), "a0", "old", 0, "hash")
    broken = tmp_path / "old-000000000000.chunk"
    write_frames(broken, [frames[0], *frames[1:-1], frames[-1][:-1]])  # the last field one byte short
    older = tmp_path / "old-000000000001.chunk"
    write_frames(older, [msgpack.packb({"t": "chunk", "v": 2}), b"x"])  # a protocol this version cannot read
    current = tmp_path / "new-000000000000.chunk"
    write_frames(current, wire.encode_chunk(Batch.from_transitions(data), "a0", "new", 0, "hash"))
    assert read_first_frame(current, 1 << 16) == read_frames(current)[0]  # the header alone decides
    before = {p: p.read_bytes() for p in (broken, older, current)}
    with caplog.at_level(logging.ERROR, logger="robot_rl.actor.transport"):
        assert not upgrade_spill_file(broken) and not upgrade_spill_file(older) and not upgrade_spill_file(current)
    assert {p: p.read_bytes() for p in before} == before
    assert "cannot convert its protocol-3 chunk" in caplog.text and "protocol-2 chunk" in caplog.text
