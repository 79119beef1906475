"""ZeroMQ learner side: ROUTER for hello/heartbeat/chunks/acks/commits, PUB (conflated) for weights.

One IO thread owns the ROUTER socket: it validates every frame, hands new chunks to the sink under the
ledger lock, acks, answers heartbeats and reports silent actors. ``publish_weights`` runs on the caller's
thread and is the only user of the PUB socket. A bad message is logged (rate-limited) and dropped; nothing an
actor sends can stop this thread.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import zmq
import zmq.auth.thread

from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.transport.base import ChunkSink, DedupLedger, LearnerTransport, RateLimitedLog
from robot_rl.transport.keys import AuthorizedKeys, key_may_speak_for, learner_keys, make_server_socket_secure
from robot_rl.transport.wire import (ActorStatus, Control, Hello, Msg, WeightsEncoder, WireError, decode_chunk,
                                     handshake_mismatch, pack_header, unpack_header)

log = logging.getLogger("robot_rl.learner.transport")

MAX_PEERS = 1024
"""Connections the learner tracks at once; past it the longest-silent one is forgotten (it says hello again)."""
FORGET_SILENT_AFTER_S = 600.0
"""A peer silent this long (an actor process that died, a restarted actor's old connection) is forgotten."""


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:  # "*", a hostname, an interface name: reachable from elsewhere
        return False


@dataclass
class _Peer:
    actor_id: str
    incarnation: str
    last_seen: float
    silent: bool = False
    chunks: int = 0
    transitions: int = 0
    key_name: str | None = None
    """Name of the authorized CurveZMQ key this connection authenticated with (None without keys)."""
    status: ActorStatus | None = None
    """The actor's latest fleet-table figures (dashboard), None until its first status message."""


class ZmqLearnerServer(LearnerTransport):
    def __init__(self, cfg: Any, obs_spec: ObsSpec, action_spec: ActionSpec, spec_hash: str,
                 config_hash: str, sink: ChunkSink, ledger: DedupLedger | None = None) -> None:
        self.cfg = cfg
        self.obs_spec, self.action_spec = obs_spec, action_spec
        self.spec_hash, self.config_hash = spec_hash, config_hash
        self.sink = sink
        self.ledger = ledger or DedupLedger()
        with self.ledger.lock:  # a ledger handed in was restored from a checkpoint: that much is durable
            self._durable: dict[str, dict[str, int]] = self.ledger.marks()
        self.incarnation = uuid.uuid4().hex[:16]  # 64-bit run id: in hello answers, heartbeats and weights
        self.weights_version = -1
        self._weights_encoder = WeightsEncoder(spec_hash, config_hash, self.incarnation)
        self._last_weights_frame: memoryview | None = None
        self.ctx = zmq.Context()
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._peers: dict[bytes, _Peer] = {}
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()  # (routing_id, frames) sent by the IO thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = RateLimitedLog(log)
        self.counters = {"chunks": 0, "transitions": 0, "duplicates": 0, "rejected": 0, "bad_frames": 0,
                         "unauthorized": 0}
        self._keys: AuthorizedKeys | None = None
        self._peers_lock = threading.Lock()

        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.linger = 0
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown/dead peer -> error we can ignore, not a hang
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)   # a reconnecting actor takes over its identity
        self.router.setsockopt(zmq.MAXMSGSIZE, int(cfg.max_message_bytes))
        self.router.rcvhwm = 10_000
        self.pub.sndhwm = 2  # weights are latest-only; never queue a backlog of 40 MB frames
        if cfg.keys_dir:
            keys, authorized = learner_keys(cfg.keys_dir)
            self._auth = zmq.auth.thread.ThreadAuthenticator(self.ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(authorized))
            self._keys = AuthorizedKeys(authorized)
            for sock in (self.router, self.pub):
                make_server_socket_secure(sock, keys)
        elif not is_loopback(cfg.bind):
            log.warning("!!! learner binds %s WITHOUT CurveZMQ keys: anyone who can reach this address can send "
                        "transitions into replay and read the policy weights, unencrypted. Run `robot-rl keys DIR` "
                        "and set transport.keys_dir=DIR on the learner and every actor. !!!", cfg.bind)
        for sock, port in ((self.router, cfg.transitions_port), (self.pub, cfg.weights_port)):
            try:
                sock.bind(f"tcp://{cfg.bind}:{port}")
            except zmq.ZMQError as exc:
                self.close_sockets()
                raise OSError(f"cannot bind tcp://{cfg.bind}:{port} ({exc}); is another learner running? "
                              "Set transport.transitions_port / transport.weights_port") from None

    # -------------------------------------------------------------------------------------------- API
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="learner-transport", daemon=True)
        self._thread.start()

    def publish_weights(self, weights: Mapping[str, np.ndarray], version: int,
                        progress: Mapping[str, int] | None = None) -> None:
        frame = self._weights_encoder.encode(weights, version, progress)
        # PUB never blocks: slow subscribers drop (conflated anyway). Zero-copy, tracked for buffer reuse.
        self._weights_encoder.sent(frame, self.pub.send(frame, copy=False, track=True))
        self._last_weights_frame = frame
        self.weights_version = int(version)

    def republish(self) -> None:
        if self._last_weights_frame is not None:
            frame = self._last_weights_frame
            self._weights_encoder.sent(frame, self.pub.send(frame, copy=False, track=True))

    def commit(self, marks: dict[str, dict[str, int]]) -> None:
        """Send every known actor the prefix of its chunks that the checkpoint just written holds."""
        self._durable = {aid: dict(m) for aid, m in marks.items()}
        with self._peers_lock:
            peers = list(self._peers.items())
        for rid, peer in peers:
            committed = self._durable.get(peer.actor_id)
            if committed:
                self._outbox.put((rid, [pack_header(Msg.COMMIT, committed=committed)]))

    def connected_actors(self) -> list[str]:
        with self._peers_lock:
            return sorted(p.actor_id for p in self._peers.values() if not p.silent)

    def stats(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.counters.items()}, "actors": float(len(self.connected_actors()))}

    def fleet(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        latest: dict[str, _Peer] = {}
        with self._peers_lock:  # a restarted actor is a new peer under the same id: show its newest connection
            for peer in self._peers.values():
                if peer.actor_id not in latest or peer.last_seen > latest[peer.actor_id].last_seen:
                    latest[peer.actor_id] = peer
            return [{"actor_id": p.actor_id, "connected": not p.silent, "seen_s_ago": now - p.last_seen,
                     "transitions": p.transitions, "status": dataclasses.asdict(p.status) if p.status else None}
                    for _, p in sorted(latest.items())]

    def send_control(self, actor_id: str, control: Control) -> bool:
        with self._peers_lock:
            rids = [rid for rid, p in self._peers.items() if p.actor_id == actor_id and not p.silent]
        for rid in rids:
            self._outbox.put((rid, control.encode()))
        return bool(rids)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.close_sockets()

    def close_sockets(self) -> None:
        self.router.close(0)
        self.pub.close(0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.ctx.term()

    # ------------------------------------------------------------------------------------ IO thread
    def _send(self, rid: bytes, frames: list[Any]) -> None:
        try:
            self.router.send_multipart([rid, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # peer gone or its queue full: it will resend / re-hello
            log.debug("send to %r failed: %s", rid, exc)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        hb = pack_header(Msg.HEARTBEAT, incarnation=self.incarnation)
        next_check = time.monotonic()
        while not self._stop.is_set():
            try:
                events = dict(poller.poll(5))
                if self.router in events:
                    for _ in range(256):  # drain a burst, then service the outbox
                        try:
                            frames = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(frames, hb)
                while True:
                    try:
                        rid, out = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    self._send(rid, out)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 0.25
                    self._check_silent(now)
            except Exception:  # the transport thread must survive anything; log with traceback
                log.exception("learner transport loop error (continuing)")

    def _check_silent(self, now: float) -> None:
        if self._keys is not None and self._keys.reload_if_changed() and self._auth is not None:
            # New connections: the ZAP handler's certificate set. Existing ones: _handle checks every message.
            self._auth.configure_curve(domain="*", location=str(self._keys.directory))
        with self._peers_lock:
            for rid, peer in list(self._peers.items()):
                silent = now - peer.last_seen > self.cfg.peer_timeout_s
                if silent and not peer.silent:
                    log.warning("actor %s silent for %.1fs (deadline %.1fs)", peer.actor_id,
                                now - peer.last_seen, self.cfg.peer_timeout_s)
                elif peer.silent and not silent:
                    log.info("actor %s is back", peer.actor_id)
                peer.silent = silent
                if now - peer.last_seen > FORGET_SILENT_AFTER_S:
                    del self._peers[rid]  # it says hello again if it ever comes back

    def _key_name(self, frame: zmq.Frame) -> str | None:
        """Name of the authorized key the message came with; None when it is not (or no longer) authorized."""
        try:
            user_id = frame.get("User-Id")
        except zmq.ZMQError:  # no ZAP metadata on this message
            return None
        return self._keys.name_of(user_id) if self._keys is not None else None

    def _refuse(self, rid: bytes, reason: str) -> None:
        self.counters["unauthorized"] += 1
        self._warn.warn("refused unauthorized message", f"{rid!r}: {reason}")
        self._send(rid, [pack_header(Msg.REJECT, reason=reason)])

    def _handle(self, frames: list[zmq.Frame], hb: bytes) -> None:
        rid = frames[0].bytes
        if len(frames) < 2:
            self.counters["bad_frames"] += 1
            self._warn.warn("bad message", f"from {rid!r}: no header frame")
            return
        try:
            kind, header = unpack_header(frames[1].buffer)
        except WireError as exc:
            self.counters["bad_frames"] += 1
            self._warn.warn("bad message", f"from {rid!r}: {exc}")
            return
        key_name = None
        if self._keys is not None:
            key_name = self._key_name(frames[1])
            if key_name is None:  # its key was removed from authorized/ after it connected
                with self._peers_lock:
                    self._peers.pop(rid, None)
                self._refuse(rid, "this actor's key is no longer authorized on the learner (revoked)")
                return
        if kind is Msg.HELLO:
            self._on_hello(rid, header, key_name)
            return
        peer = self._peers.get(rid)
        if peer is None:
            # Data or heartbeat before hello: a learner restart, or a stranger. Ask for the handshake.
            self._send(rid, [pack_header(Msg.UNKNOWN_PEER, incarnation=self.incarnation)])
            return
        if peer.key_name != key_name:  # another key took over this routing id (ROUTER_HANDOVER)
            self._refuse(rid, f"connection of actor {peer.actor_id} used with key {key_name!r}")
            return
        peer.last_seen = time.monotonic()
        if kind is Msg.HEARTBEAT:
            self._send(rid, [hb])
        elif kind is Msg.CHUNK:
            self._on_chunk(rid, peer, header, frames[2:])
        elif kind is Msg.STATUS:
            try:
                peer.status = ActorStatus.decode(header)
            except WireError as exc:
                self.counters["bad_frames"] += 1
                self._warn.warn("bad status", f"from actor {peer.actor_id}: {exc}")
        else:
            self.counters["bad_frames"] += 1
            self._warn.warn("unexpected message", f"{kind.value} from actor {peer.actor_id}")

    def _on_hello(self, rid: bytes, header: dict, key_name: str | None) -> None:
        try:
            hello = Hello.decode(header)
        except WireError as exc:
            self.counters["bad_frames"] += 1
            self._warn.warn("bad hello", f"from {rid!r}: {exc}")
            return
        if key_name is not None and not key_may_speak_for(key_name, hello.actor_id):
            self._refuse(rid, f"key {key_name!r} may not speak for actor {hello.actor_id!r} (a key named N "
                              f"speaks for actor ids N and N-<suffix>)")
            return
        reason = handshake_mismatch(hello, self.spec_hash, self.config_hash, self.obs_spec)
        if reason:
            log.error("refusing actor %s: %s", hello.actor_id, reason)
            self._send(rid, [pack_header(Msg.REJECT, reason=reason)])
            return
        with self._peers_lock:
            known = rid in self._peers
            if not known and len(self._peers) >= MAX_PEERS:
                stalest = min(self._peers, key=lambda r: self._peers[r].last_seen)
                log.warning("%d peers tracked: forgetting actor %s (silent longest)", len(self._peers),
                            self._peers.pop(stalest).actor_id)
            self._peers[rid] = _Peer(hello.actor_id, hello.incarnation, time.monotonic(), key_name=key_name)
        if not known:
            log.info("actor %s (incarnation %s) connected", hello.actor_id, hello.incarnation)
        committed = self._durable.get(hello.actor_id, {})  # durable only: not what arrived since the checkpoint
        self._send(rid, [pack_header(Msg.WELCOME, incarnation=self.incarnation, committed=committed,
                                     weights_version=self.weights_version)])

    def _on_chunk(self, rid: bytes, peer: _Peer, header: dict, buffers: list[zmq.Frame]) -> None:
        seq, incarnation = header.get("seq"), header.get("incarnation")
        try:
            total = sum(f.buffer.nbytes for f in buffers)
            if total > self.cfg.max_message_bytes:
                raise WireError(f"chunk of {total} bytes exceeds cap {self.cfg.max_message_bytes}")
            chunk = decode_chunk(header, [f.buffer for f in buffers], self.obs_spec, self.action_spec,
                                 self.spec_hash)
            if chunk.actor_id != peer.actor_id:
                raise WireError(f"chunk claims actor {chunk.actor_id!r} on {peer.actor_id!r}'s connection")
        except WireError as exc:
            self.counters["rejected"] += 1
            self._warn.warn("rejected chunk", f"seq={str(seq)[:40]} from actor {peer.actor_id}: {exc}")
            if isinstance(seq, int) and not isinstance(seq, bool) and isinstance(incarnation, str):
                # Ledger it so the actor stops resending (it keeps the data in its episode store).
                with self.ledger.lock:
                    self.ledger.mark(peer.actor_id, incarnation, seq)
                self._send(rid, [pack_header(Msg.ACK, incarnation=incarnation, seq=seq, status="rejected",
                                             reason=str(exc))])
            return
        with self.ledger.lock:
            if self.ledger.seen(chunk.actor_id, chunk.incarnation, chunk.seq):
                status = "duplicate"
                self.counters["duplicates"] += 1
            else:
                self.sink(chunk)
                self.ledger.mark(chunk.actor_id, chunk.incarnation, chunk.seq)
                status = "ok"
                n = len(chunk.batch)
                self.counters["chunks"] += 1
                self.counters["transitions"] += n
                peer.chunks += 1
                peer.transitions += n
        self._send(rid, [pack_header(Msg.ACK, incarnation=chunk.incarnation, seq=chunk.seq, status=status)])
