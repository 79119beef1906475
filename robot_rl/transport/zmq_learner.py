"""ZeroMQ learner side: ROUTER for hello/heartbeat/chunks/acks/commits, PUB (conflated) for weights.

One IO thread owns the ROUTER socket: it validates every frame, hands new chunks to the sink under the
ledger lock, acks, answers heartbeats and reports silent actors. ``publish_weights`` runs on the caller's
thread and is the only user of the PUB socket. A bad message is logged (rate-limited) and dropped; nothing an
actor sends can stop this thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import zmq
import zmq.auth.thread

from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.transport.base import ChunkSink, DedupLedger, LearnerTransport
from robot_rl.transport.keys import learner_keys, make_server_socket_secure
from robot_rl.transport.wire import (Hello, Msg, WeightsEncoder, WireError, decode_chunk, handshake_mismatch,
                                     pack_header, unpack_header)

log = logging.getLogger("robot_rl.learner.transport")


@dataclass
class _Peer:
    actor_id: str
    incarnation: str
    last_seen: float
    silent: bool = False
    chunks: int = 0
    transitions: int = 0


@dataclass
class _RateLimitedLog:
    """At most one warning per reason per ``period_s`` (a flood of bad frames must not flood the log)."""

    period_s: float = 5.0
    last: dict[str, float] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)

    def warn(self, reason: str, *args: Any) -> None:
        now = time.monotonic()
        key = reason.split(":")[0][:80]
        if now - self.last.get(key, -1e9) >= self.period_s:
            extra = self.suppressed.pop(key, 0)
            log.warning(reason + (f" (+{extra} similar suppressed)" if extra else ""), *args)
            self.last[key] = now
        else:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1


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
        self.incarnation = uuid.uuid4().hex[:12]
        self.weights_version = -1
        self._weights_encoder = WeightsEncoder(spec_hash, config_hash)
        self._last_weights_frame: memoryview | None = None
        self.ctx = zmq.Context()
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._peers: dict[bytes, _Peer] = {}
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()  # (routing_id, frames) sent by the IO thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = _RateLimitedLog()
        self.counters = {"chunks": 0, "transitions": 0, "duplicates": 0, "rejected": 0, "bad_frames": 0}
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
            for sock in (self.router, self.pub):
                make_server_socket_secure(sock, keys)
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
        with self._peers_lock:
            for peer in self._peers.values():
                silent = now - peer.last_seen > self.cfg.peer_timeout_s
                if silent and not peer.silent:
                    log.warning("actor %s silent for %.1fs (deadline %.1fs)", peer.actor_id,
                                now - peer.last_seen, self.cfg.peer_timeout_s)
                elif peer.silent and not silent:
                    log.info("actor %s is back", peer.actor_id)
                peer.silent = silent

    def _handle(self, frames: list[zmq.Frame], hb: bytes) -> None:
        rid = frames[0].bytes
        if len(frames) < 2:
            self.counters["bad_frames"] += 1
            self._warn.warn("bad message from %r: no header frame", rid)
            return
        try:
            kind, header = unpack_header(frames[1].buffer)
        except WireError as exc:
            self.counters["bad_frames"] += 1
            self._warn.warn(f"bad message from %r: {exc}", rid)
            return
        peer = self._peers.get(rid)
        if kind is Msg.HELLO:
            self._on_hello(rid, header)
            return
        if peer is None:
            # Data or heartbeat before hello: a learner restart, or a stranger. Ask for the handshake.
            self._send(rid, [pack_header(Msg.UNKNOWN_PEER, incarnation=self.incarnation)])
            return
        peer.last_seen = time.monotonic()
        if kind is Msg.HEARTBEAT:
            self._send(rid, [hb])
        elif kind is Msg.CHUNK:
            self._on_chunk(rid, peer, header, frames[2:])
        else:
            self.counters["bad_frames"] += 1
            self._warn.warn(f"unexpected {kind.value} from actor %s", peer.actor_id)

    def _on_hello(self, rid: bytes, header: dict) -> None:
        try:
            hello = Hello.decode(header)
        except WireError as exc:
            self.counters["bad_frames"] += 1
            self._warn.warn(f"bad hello from %r: {exc}", rid)
            return
        reason = handshake_mismatch(hello, self.spec_hash, self.config_hash, self.obs_spec)
        if reason:
            log.error("refusing actor %s: %s", hello.actor_id, reason)
            self._send(rid, [pack_header(Msg.REJECT, reason=reason)])
            return
        with self._peers_lock:
            known = rid in self._peers
            self._peers[rid] = _Peer(hello.actor_id, hello.incarnation, time.monotonic())
        if not known:
            log.info("actor %s (incarnation %s) connected", hello.actor_id, hello.incarnation)
        committed = self._durable.get(hello.actor_id, {})  # durable only: not what arrived since the checkpoint
        self._send(rid, [pack_header(Msg.WELCOME, incarnation=self.incarnation, committed=committed,
                                     weights_version=self.weights_version)])

    def _on_chunk(self, rid: bytes, peer: _Peer, header: dict, buffers: list[zmq.Frame]) -> None:
        seq, incarnation = header.get("seq"), header.get("incarnation")
        total = sum(f.buffer.nbytes for f in buffers)
        try:
            if total > self.cfg.max_message_bytes:
                raise WireError(f"chunk of {total} bytes exceeds cap {self.cfg.max_message_bytes}")
            chunk = decode_chunk(header, [f.buffer for f in buffers], self.obs_spec, self.action_spec,
                                 self.spec_hash)
            if chunk.actor_id != peer.actor_id:
                raise WireError(f"chunk claims actor {chunk.actor_id!r} on {peer.actor_id!r}'s connection")
        except WireError as exc:
            self.counters["rejected"] += 1
            self._warn.warn(f"rejected chunk seq={seq!r} from actor %s: {exc}", peer.actor_id)
            if isinstance(seq, int) and isinstance(incarnation, str):
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
