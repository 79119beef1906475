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
        # every chunk made (50 of 8): the IO thread bumps its seq only once add_transitions, spilling included,
        # returned; an empty queue alone can be read mid-add, between holding a chunk and spilling the oldest
        assert _wait(lambda: client.pending.spilled_total > 0 and client.stats()["queue_depth"] == 0
                     and client._seq == 400 // 8)
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


def _recv_until(sock, kind, timeout=5.0):
    """Headers received on a raw socket until one of ``kind`` arrives (None on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.poll(50):
            got_kind, header = wire.unpack_header(sock.recv_multipart()[0])
            if got_kind is kind:
                return header
    return None


def test_a_malformed_chunk_is_acked_as_rejected_not_resent_forever(pixel_env, ports, caplog):
    """A field description whose shape is not a list used to raise TypeError in the learner's IO thread: no
    ack, so the actor resent the chunk forever. It must be a rejected frame with a reason, acked once."""
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect(f"tcp://127.0.0.1:{ports[0]}")
    try:
        raw.send_multipart(wire.Hello("a0", "i1", rig.sh, "cfg", rig.obs_spec.to_dict(),
                                      rig.action_spec.to_dict()).encode())
        assert _recv_until(raw, wire.Msg.WELCOME) is not None
        frames = wire.encode_chunk(Batch.from_transitions(rollout(pixel_env, 4)), "a0", "i1", 0, rig.sh)
        header = msgpack.unpackb(frames[0])
        header["fields"][0][1] = 17
        with caplog.at_level(logging.WARNING):
            raw.send_multipart([msgpack.packb(header), *frames[1:]])
            ack = _recv_until(raw, wire.Msg.ACK)
        assert ack is not None and ack["status"] == "rejected" and "field description" in ack["reason"]
        assert server.counters["rejected"] == 1 and len(rig.replay) == 0
        assert any("rejected chunk" in r.message for r in caplog.records)
        assert not any(r.exc_info for r in caplog.records)  # a reason, not a traceback
    finally:
        raw.close()
        ctx.term()
        server.close()


def test_a_restarted_learner_weights_are_taken_at_once(pixel_env, ports):
    """The new learner resumes its version counter from its checkpoint (here: far below what its predecessor
    published); its weights carry a new incarnation, so the actor takes them at once."""
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    client = rig.client()

    def take(srv, version, value):
        srv.publish_weights({"w": np.full(2, value, np.float32)}, version)
        for _ in range(40):
            got = client.poll_weights()
            if got is not None:
                return got
            time.sleep(0.05)
            srv.republish()
        return None

    try:
        first = take(server, 80, 1.0)
        assert first is not None and first.version == 80
        server.close()
        server = rig.start_server()  # a new learner process: versions start again below 80
        second = take(server, 51, 2.0)
        assert second is not None and second.version == 51 and second.incarnation == server.incarnation
        np.testing.assert_array_equal(second.arrays["w"], [2.0, 2.0])
        assert client.stats()["weights_version"] == 51
    finally:
        client.close()
        server.close()


def _curve_rig(pixel_env, ports, tmp_path, names):
    keys = make_keys(tmp_path / "keys", names)
    rig = Rig(pixel_env, ports)
    secure = replace(rig.cfg, keys_dir=str(keys))
    return rig, secure, rig.start_server(cfg=secure)


def test_curve_key_speaks_only_for_its_own_actor(pixel_env, ports, tmp_path):
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    rig, secure, server = _curve_rig(pixel_env, ports, tmp_path, ("robot1", "robot2"))
    clients = []
    try:
        # robot1's (authorized) key claiming to be robot2: refused, nothing ingested
        impostor = rig.client("robot2", cfg=secure, actor_key_name="robot1")
        clients.append(impostor)
        for tr in rollout(pixel_env, 30, "robot2"):
            impostor.send(tr)
        assert _wait(lambda: impostor.rejected_reason is not None)
        assert "may not speak for actor 'robot2'" in impostor.rejected_reason
        assert len(rig.replay) == 0 and server.counters["unauthorized"] >= 1
        # the same key under its own name (and a suffixed id of the same machine) is welcome
        for actor_id in ("robot1", "robot1-1"):
            c = rig.client(actor_id, cfg=secure, actor_key_name="robot1")
            clients.append(c)
            for tr in rollout(pixel_env, 20, actor_id):
                c.send(tr)
            assert c.wait_acked(10)
        assert len(rig.replay) == 40
    finally:
        for c in clients:
            c.close()
        server.close()


def test_curve_revocation_needs_no_restart(pixel_env, ports, tmp_path):
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    rig, secure, server = _curve_rig(pixel_env, ports, tmp_path, ("robot1", "robot2"))
    clients = []
    try:
        robot1 = rig.client("robot1", cfg=secure, actor_key_name="robot1")
        clients.append(robot1)
        for tr in rollout(pixel_env, 20, "robot1"):
            robot1.send(tr)
        assert robot1.wait_acked(10) and len(rig.replay) == 20
        (tmp_path / "keys" / "authorized" / "robot1.key").unlink()  # revoke while it is connected
        # the connected actor is refused from its next message on
        assert _wait(lambda: robot1.rejected_reason is not None, timeout=5)
        assert "revoked" in robot1.rejected_reason
        for tr in rollout(pixel_env, 20, "robot1", first_episode=100):
            robot1.send(tr)
        time.sleep(0.5)
        # a new connection with the revoked key is refused at the CURVE handshake (no welcome ever)
        again = rig.client("robot1", cfg=secure, actor_key_name="robot1")
        clients.append(again)
        for tr in rollout(pixel_env, 20, "robot1", first_episode=200):
            again.send(tr)
        time.sleep(1.5)
        assert not again.connected and len(rig.replay) == 20
        # other robots are unaffected
        robot2 = rig.client("robot2", cfg=secure, actor_key_name="robot2")
        clients.append(robot2)
        for tr in rollout(pixel_env, 20, "robot2"):
            robot2.send(tr)
        assert robot2.wait_acked(10) and len(rig.replay) == 40
    finally:
        for c in clients:
            c.close()
        server.close()


def test_non_loopback_bind_without_keys_warns_loudly(pixel_env, ports, caplog):
    rig = Rig(pixel_env, ports)
    with caplog.at_level(logging.WARNING):
        server = rig.start_server(cfg=replace(rig.cfg, bind="0.0.0.0"))
    server.close()
    assert any("WITHOUT CurveZMQ keys" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        server = rig.start_server()  # loopback: nothing to warn about
    server.close()
    assert not any("WITHOUT CurveZMQ keys" in r.message for r in caplog.records)


def test_peer_table_is_bounded(pixel_env, ports, monkeypatch):
    from robot_rl.transport import zmq_learner

    monkeypatch.setattr(zmq_learner, "MAX_PEERS", 3)
    rig = Rig(pixel_env, ports)
    server = rig.start_server()
    ctx = zmq.Context()
    socks = []
    try:
        for i in range(6):  # six connections (e.g. restarts of one actor, each with a new routing id)
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.connect(f"tcp://127.0.0.1:{ports[0]}")
            socks.append(s)
            s.send_multipart(wire.Hello(f"a{i}", "i", rig.sh, "cfg", rig.obs_spec.to_dict(),
                                        rig.action_spec.to_dict()).encode())
            assert _recv_until(s, wire.Msg.WELCOME) is not None
        assert len(server._peers) == 3
        assert server.connected_actors() == ["a3", "a4", "a5"]  # the longest silent were forgotten
    finally:
        for s in socks:
            s.close()
        ctx.term()
        server.close()
