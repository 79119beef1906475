"""The ZeroMQ transport over real loopback sockets (threads in this process; processes in test_processes)."""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import msgpack
import numpy as np
import pytest
import zmq

from robot_rl.config import TransportConfig
from robot_rl.replay import ReplayBuffer
from robot_rl.transport import wire
from robot_rl.transport.keys import make_keys
from robot_rl.transport.zmq_actor import ZmqActorClient
from robot_rl.transport.zmq_learner import ZmqLearnerServer
from robot_rl.types import Batch
from support import rollout, specs_and_hash


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


class Rig:
    def __init__(self, env, ports, **cfg_overrides):
        self.cfg = TransportConfig(transitions_port=ports[0], weights_port=ports[1], heartbeat_interval_s=0.1,
                                   peer_timeout_s=1.0, resend_after_s=0.5, **cfg_overrides)
        self.obs_spec, self.action_spec, self.sh = specs_and_hash(env)
        self.replay = ReplayBuffer(self.obs_spec, self.action_spec, 10_000)
        self.server = None

    def start_server(self, ledger=None, cfg=None):
        self.server = ZmqLearnerServer(cfg or self.cfg, self.obs_spec, self.action_spec, self.sh, "cfg",
                                       lambda c: self.replay.add_batch(c.batch), ledger)
        self.server.start()
        return self.server

    def client(self, actor_id="a0", config_hash="cfg", cfg=None, **kw):
        return ZmqActorClient(cfg or self.cfg, actor_id, self.obs_spec, self.action_spec, self.sh, config_hash,
                              **kw)


def test_delivery_acks_commit_and_weights(pixel_env, ports):
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    client = rig.client()
    try:
        for tr in rollout(pixel_env, 300):
            client.send(tr)
        assert client.wait_acked(10)
        assert len(rig.replay) == 300 and server.counters["transitions"] == 300
        assert client.stats()["pending_chunks"] == 10
        assert len(client.pending) > 0  # acked but not committed yet: still held
        snapshot = server.ledger.marks()  # what a checkpoint taken now holds
        more = rollout(pixel_env, 64, first_episode=500)
        for tr in more:
            client.send(tr)
        assert client.wait_acked(10)
        server.commit(snapshot)  # chunks acked after the snapshot are not durable: the actor keeps them
        assert _wait(lambda: len(client.pending) == 2)
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(client.pending) == 0)
        versions, holder = [], []
        for v in (1, 2, 3):
            server.publish_weights({"w": np.full(4, v, np.float32)}, v, {"updates": v})
            # PUB/SUB keeps no history (a message can race a reconnect): re-send, as the learner does
            # every second, until this version arrives.
            w = None
            for _ in range(20):
                if _wait(lambda: (got := client.poll_weights()) is not None and holder.append(got) is None, 0.25):
                    w = holder.pop()
                    break
                server.republish()
            assert w is not None and w.version == v and w.progress == {"updates": v}
            np.testing.assert_array_equal(w.arrays["w"], np.full(4, v, np.float32))
            versions.append(w.version)
        assert versions == [1, 2, 3]
    finally:
        client.close()
        server.close()


def test_bad_frames_never_stop_the_learner(pixel_env, ports, caplog):
    rig = Rig(pixel_env, ports, max_message_bytes=2_000_000)
    server = rig.start_server()
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(f"tcp://127.0.0.1:{ports[0]}")
    client = None
    try:
        with caplog.at_level(logging.WARNING):
            raw.send_multipart([b"\x00\x01garbage"])
            raw.send(b"")
            raw.send_multipart([msgpack.packb({"t": "chunk", "v": wire.PROTOCOL_VERSION, "seq": 0})])  # before hello
            hello = wire.Hello("evil", "i1", rig.sh, "cfg", rig.obs_spec.to_dict(), rig.action_spec.to_dict())
            raw.send_multipart(hello.encode())
            frames = wire.encode_chunk(Batch.from_transitions(rollout(pixel_env, 4, "evil")), "evil", "i1", 0,
                                       rig.sh)
            raw.send_multipart([frames[0], *frames[1:-1]])  # a buffer missing
            bad = Batch.from_transitions(rollout(pixel_env, 4, "evil"))
            bad.action[0, 0] = np.inf
            raw.send_multipart(wire.encode_chunk(bad, "evil", "i1", 1, rig.sh))
            raw.send_multipart(wire.encode_chunk(Batch.from_transitions(rollout(pixel_env, 4, "x")), "x", "i1", 2,
                                                 rig.sh))  # claims another actor's identity
            raw.send_multipart([b"x" * 3_000_000])  # oversized: libzmq drops the connection (MAXMSGSIZE)
            assert _wait(lambda: server.counters["rejected"] >= 3 and server.counters["bad_frames"] >= 1)
        assert len(rig.replay) == 0
        assert any("rejected chunk" in r.message for r in caplog.records)
        # The learner is alive and well: a proper actor still gets through.
        client = rig.client("good")
        for tr in rollout(pixel_env, 50, "good"):
            client.send(tr)
        assert client.wait_acked(10) and len(rig.replay) == 50
    finally:
        raw.close()
        ctx.term()
        if client:
            client.close()
        server.close()


def test_handshake_mismatch_is_refused_on_both_sides(pixel_env, ports, caplog):
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    client = rig.client(config_hash="not-the-same")
    try:
        with caplog.at_level(logging.ERROR):
            for tr in rollout(pixel_env, 40):
                client.send(tr)
            assert _wait(lambda: client.rejected_reason is not None)
        assert "config hash mismatch" in client.rejected_reason
        assert any("refusing actor" in r.message for r in caplog.records)
        time.sleep(0.3)
        assert len(rig.replay) == 0 and not client.connected
    finally:
        client.close()
        server.close()


def test_silent_peers_detected_and_learner_restart_loses_nothing(pixel_env, ports, tmp_path):
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    client = rig.client(spill_dir=tmp_path / "spill")
    try:
        data = rollout(pixel_env, 200)
        for tr in data[:100]:
            client.send(tr)
        assert client.wait_acked(10)
        ledger_state = server.ledger.state_dict()  # what a checkpoint taken now would hold
        replay_len = len(rig.replay)
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(client.pending) == 0)
        for tr in data[100:150]:  # acked by the old learner but never checkpointed
            client.send(tr)
        assert client.wait_acked(10)
        server.close()  # learner dies
        t0 = time.monotonic()
        assert _wait(lambda: not client.connected, timeout=5)
        assert time.monotonic() - t0 < rig.cfg.peer_timeout_s + 1.0
        for tr in data[150:]:  # the actor keeps producing while the learner is away
            client.send(tr)
        # Restart from the "checkpoint": replay truncated to its checkpointed content, ledger restored.
        rig.replay = ReplayBuffer(rig.obs_spec, rig.action_spec, 10_000)
        rig.replay.add_batch(Batch.from_transitions(data[:replay_len]))
        from robot_rl.transport.base import DedupLedger

        ledger = DedupLedger()
        ledger.load_state_dict(ledger_state)
        server = rig.start_server(ledger=ledger)
        assert _wait(lambda: len(rig.replay) == 200, timeout=15)
        time.sleep(0.5)
        ids = list(rig.replay.iter_ids())
        assert len(ids) == len(set(ids)) == 200  # every transition exactly once
        assert client.counters["reconnects"] == 1
    finally:
        client.close()
        server.close()


def test_spill_to_disk_when_learner_absent(pixel_env, ports, tmp_path):
    rig = Rig(pixel_env, ports, max_pending_bytes=200_000, chunk_size=8)
    client = rig.client(spill_dir=tmp_path / "spill")
    server = None
    try:
        for tr in rollout(pixel_env, 400):
            client.send(tr)
        assert _wait(lambda: client.pending.spilled_total > 0 and client.stats()["queue_depth"] == 0)
        assert client.pending.mem_bytes <= 200_000
        assert any((tmp_path / "spill").glob("*.chunk"))
        server = rig.start_server()
        assert _wait(lambda: len(rig.replay) == 400, timeout=15)
        server.commit(server.ledger.marks())
        assert _wait(lambda: len(client.pending) == 0)
        assert not any((tmp_path / "spill").glob("*.chunk"))  # committed spill files are deleted
    finally:
        client.close()
        if server:
            server.close()


def test_unacked_chunks_survive_an_actor_restart(pixel_env, ports, tmp_path):
    rig = Rig(pixel_env, ports)
    first = rig.client(spill_dir=tmp_path / "spill")
    for tr in rollout(pixel_env, 100):
        first.send(tr)
    first.close()  # no learner was ever there: everything goes to the spill directory
    server = rig.start_server()
    second = rig.client(spill_dir=tmp_path / "spill")  # new incarnation, same actor
    try:
        assert _wait(lambda: len(rig.replay) == 100, timeout=15)
        for tr in rollout(pixel_env, 20, first_episode=1000):
            second.send(tr)
        assert second.wait_acked(10) and len(rig.replay) == 120
    finally:
        second.close()
        server.close()


def test_curve_rejects_actors_without_the_right_key(pixel_env, ports, tmp_path):
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    keys = make_keys(tmp_path / "keys", ("robot1",))
    intruder = make_keys(tmp_path / "other", ("robot1",))  # a valid keypair, but not authorized
    rig = Rig(pixel_env, ports)
    secure = replace(rig.cfg, keys_dir=str(keys))
    server = rig.start_server(cfg=secure)
    clients = []
    try:
        # 1) an unauthorized key (knows the learner's public key, even) 2) no encryption at all
        stranger_dir = tmp_path / "stranger"
        (stranger_dir / "actors").mkdir(parents=True)
        import shutil

        shutil.copy(keys / "learner.key", stranger_dir / "learner.key")
        for f in ("robot1.key", "robot1.key_secret"):
            shutil.copy(intruder / "actors" / f, stranger_dir / "actors" / f)
        clients.append(rig.client("stranger", cfg=replace(rig.cfg, keys_dir=str(stranger_dir)),
                                  actor_key_name="robot1"))
        clients.append(rig.client("plaintext"))
        for c in clients:
            for tr in rollout(pixel_env, 50, c.actor_id):
                c.send(tr)
        time.sleep(2.0)
        assert len(rig.replay) == 0 and server.counters["chunks"] == 0
        assert not any(c.connected for c in clients)
        server.publish_weights({"w": np.ones(3, np.float32)}, 1)
        time.sleep(0.3)
        assert all(c.poll_weights() is None for c in clients)  # weights are not readable either
        # The authorized robot gets through, encrypted.
        good = rig.client("robot1", cfg=secure, actor_key_name="robot1")
        clients.append(good)
        for tr in rollout(pixel_env, 50, "robot1"):
            good.send(tr)
        assert good.wait_acked(10) and len(rig.replay) == 50
        server.publish_weights({"w": np.ones(3, np.float32)}, 2)
        assert _wait(lambda: good.poll_weights() is not None)
    finally:
        for c in clients:
            c.close()
        server.close()


def test_second_learner_on_the_same_ports_fails_clearly(pixel_env, ports):
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    try:
        with pytest.raises(OSError, match="another learner running"):
            Rig(pixel_env, ports).start_server()
    finally:
        server.close()
