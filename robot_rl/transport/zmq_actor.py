"""ZeroMQ actor side: DEALER to the learner's ROUTER, SUB (conflated) for weights, all on one IO thread.

The control loop only touches thread-safe hand-offs (a deque of transitions, a flag, the latest weights), so
a dead network or a restarting learner never delays an action. The IO thread chunks transitions, sends them,
keeps every chunk until the learner commits it (:class:`PendingChunks`, spilling to disk past a memory
bound), resends unacked chunks after a timeout and everything uncommitted after a learner restart.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.transport.base import ActorTransport, RateLimitedLog
from robot_rl.transport.keys import actor_keys, make_client_socket_secure
from robot_rl.transport.pending import PendingChunks, human_bytes
from robot_rl.transport.upgrade import upgrade_spill_file
from robot_rl.transport.wire import (ActorStatus, Control, Hello, Msg, Weights, WireError, chunk_header,
                                     decode_weights, pack_header, unpack_header)
from robot_rl.types import Transition

log = logging.getLogger("robot_rl.actor.transport")


class ZmqActorClient(ActorTransport):
    def __init__(self, cfg: Any, actor_id: str, obs_spec: ObsSpec, action_spec: ActionSpec, spec_hash: str,
                 config_hash: str, spill_dir: str | Path | None = None, actor_key_name: str = "actor") -> None:
        if cfg.durability not in ("checkpoint", "ack"):
            raise ValueError(f"transport.durability must be 'checkpoint' or 'ack', got {cfg.durability!r}")
        self.cfg = cfg
        self.actor_id = actor_id
        self.incarnation = uuid.uuid4().hex[:12]
        self.spec_hash, self.config_hash = spec_hash, config_hash
        self._hello = Hello(actor_id, self.incarnation, spec_hash, config_hash, obs_spec.to_dict(),
                            action_spec.to_dict()).encode()
        self._incoming: collections.deque[Transition] = collections.deque()  # control loop -> IO thread
        self._flush = threading.Event()
        self._stop = threading.Event()
        self._latest_weights: Weights | None = None
        self._weights_lock = threading.Lock()
        self._taken: Weights | None = None  # last weights handed to the control loop
        self._progress: dict[str, int] | None = None
        self._status_frames: list[bytes] | None = None  # latest ActorStatus, sent with the heartbeats
        self._controls: collections.deque[Control] = collections.deque()  # IO thread -> control loop
        spill_at_creation = cfg.spill_all_chunks and cfg.durability == "checkpoint"
        self.pending = PendingChunks(cfg.max_pending_bytes, Path(spill_dir) if spill_dir else None,
                                     shm_fraction=cfg.shm_spill_fraction if spill_at_creation else 0.0)
        recovered = self.pending.recover_spilled()
        if recovered:
            log.info("actor %s: %d uncommitted chunks from an earlier run will be resent", actor_id, recovered)
            upgraded = self.pending.upgrade_recovered(upgrade_spill_file)
            if upgraded:
                log.info("actor %s: %d of them were converted from an older wire protocol", actor_id, upgraded)
        self._seq = 0
        self._unsent: collections.deque[tuple[str, int]] = collections.deque()  # keys to send, in order
        self.learner_incarnation: str | None = None
        self.rejected_reason: str | None = None
        self._welcomed = False
        self._last_heard = 0.0
        self._lost_reported = False
        self._warn = RateLimitedLog(log)
        self.counters = {"sent": 0, "acked": 0, "duplicates": 0, "rejected": 0, "committed": 0,
                         "resent": 0, "weights": 0, "bad_weights": 0, "bad_frames": 0,
                         "reconnects": 0}

        self.ctx = zmq.Context()
        self.dealer = self.ctx.socket(zmq.DEALER)
        self.sub = self.ctx.socket(zmq.SUB)
        self.dealer.routing_id = f"{actor_id}:{self.incarnation}".encode()
        self.dealer.linger = 0
        self.dealer.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing for a peer that is not connected
        self.dealer.sndhwm = 64                   # bounded socket queue; the rest waits in PendingChunks
        self.dealer.setsockopt(zmq.MAXMSGSIZE, 64 * 2**20)
        self.sub.linger = 0
        self.sub.setsockopt(zmq.CONFLATE, 1)       # latest weights only (single-frame messages)
        self.sub.setsockopt(zmq.MAXMSGSIZE, int(cfg.max_message_bytes))
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        for sock in (self.dealer, self.sub):
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if cfg.keys_dir:
            keys, learner_public = actor_keys(cfg.keys_dir, actor_key_name)
            for sock in (self.dealer, self.sub):
                make_client_socket_secure(sock, keys, learner_public)
        self.dealer.connect(f"tcp://{cfg.host}:{cfg.transitions_port}")
        self.sub.connect(f"tcp://{cfg.host}:{cfg.weights_port}")
        self._thread = threading.Thread(target=self._run, name=f"actor-transport-{actor_id}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------- control-loop API
    def send(self, transition: Transition) -> None:
        self._incoming.append(transition)

    def flush(self) -> None:
        self._flush.set()

    def poll_weights(self) -> Weights | None:
        with self._weights_lock:
            w = self._latest_weights
        if w is None or not w.supersedes(self._taken):
            return None
        if self._taken is not None and w.incarnation != self._taken.incarnation:
            log.info("actor %s: weights v%d of a new learner %s (had v%d of %s)", self.actor_id, w.version,
                     w.incarnation, self._taken.version, self._taken.incarnation)
        self._taken = w
        return w

    def learner_progress(self) -> dict[str, int] | None:
        return self._progress

    def report_status(self, status: ActorStatus) -> None:
        self._status_frames = status.encode()  # a list swap is atomic: the IO thread sends the newest

    def poll_controls(self) -> list[Control]:
        out = []
        while self._controls:
            out.append(self._controls.popleft())
        return out

    def backpressure(self) -> str | None:
        if not self.pending.backpressure:
            return None
        return (f"{len(self.pending)} uncommitted chunks ({human_bytes(self.pending.mem_bytes)}) exceed "
                f"transport.max_pending_bytes ({human_bytes(self.pending.max_bytes)}) and the spill directory "
                f"cannot take more: {self.pending.spill_error or 'no spill directory configured'}")

    @property
    def connected(self) -> bool:
        return self._welcomed and not self._lost_reported

    def stats(self) -> dict[str, float]:
        return {**{k: float(v) for k, v in self.counters.items()},
                "queue_depth": float(len(self._incoming)), "pending_chunks": float(len(self.pending)),
                "pending_bytes": float(self.pending.mem_bytes),
                "pending_ram_spill_bytes": float(self.pending.shm_bytes), "spilled": float(self.pending.spilled_total),
                "spill_failures": float(self.pending.spill_failures),
                "backpressure": float(self.pending.backpressure),
                "connected": float(self.connected), "weights_version": float(self._taken.version if self._taken else -1)}

    def close(self, drain_s: float = 0.0) -> None:
        """Stop the IO thread. With ``drain_s`` > 0, first wait until everything queued is acked."""
        self._flush.set()
        deadline = time.monotonic() + drain_s
        while drain_s > 0 and time.monotonic() < deadline:
            if not self._incoming and self.pending.unacked == 0:
                break
            self._flush.set()
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=5)
        spilled = self.pending.spill_all()
        self.pending.close()
        if spilled:
            log.info("actor %s: %d uncommitted chunks kept in %s for the next run", self.actor_id, spilled,
                     self.pending.spill_dir)
        self.dealer.close(0)
        self.sub.close(0)
        self.ctx.term()

    def wait_acked(self, timeout_s: float) -> bool:
        """Block (tests, shutdown) until every queued transition is acked; True on success."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._incoming and self.pending.unacked == 0:
                return True
            self._flush.set()
            time.sleep(0.01)
        return False

    # ---------------------------------------------------------------------------------- IO thread
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.dealer, zmq.POLLIN)
        poller.register(self.sub, zmq.POLLIN)
        next_hb = 0.0
        next_resend_scan = 0.0
        next_spill_retry = 0.0
        oldest_wait = None
        while not self._stop.is_set():
            try:
                events = dict(poller.poll(2))
                if self.dealer in events:
                    self._drain_dealer()
                if self.sub in events:
                    self._drain_sub()
                now = time.monotonic()
                # Chunking: full chunks at once; a partial one on flush or after flush_interval_s.
                if self._incoming and oldest_wait is None:
                    oldest_wait = now
                if self._incoming and (len(self._incoming) >= self.cfg.chunk_size or self._flush.is_set()
                                       or now - oldest_wait >= self.cfg.flush_interval_s):
                    # The tail goes as a partial chunk only when asked (flush) or late: chunking whatever had
                    # arrived made odd-sized chunks (recycled spill files of another size, more messages).
                    self._make_chunks(force=self._flush.is_set() or now - oldest_wait >= self.cfg.flush_interval_s)
                    oldest_wait = now if self._incoming else None
                self._flush.clear()
                if (self.pending.backpressure or self.pending.unpersisted) and now >= next_spill_retry:
                    # the disk may have room again
                    next_spill_retry = now + 1.0
                    self.pending.retry_spill()
                if now >= next_hb:
                    next_hb = now + self.cfg.heartbeat_interval_s
                    self._heartbeat(now)
                if self._welcomed:
                    full_scan = now >= next_resend_scan
                    if full_scan:
                        next_resend_scan = now + self.cfg.resend_after_s / 4
                    self._send_pending(now, full_scan)
            except Exception:
                log.exception("actor transport loop error (continuing)")

    def _make_chunks(self, force: bool) -> None:
        while self._incoming and (force or len(self._incoming) >= self.cfg.chunk_size):
            items = []
            while self._incoming and len(items) < self.cfg.chunk_size:
                items.append(self._incoming.popleft())
            seq, n = self._seq, len(items)
            persist = self.cfg.spill_all_chunks and self.cfg.durability == "checkpoint"
            self.pending.add_transitions(
                (self.incarnation, seq), items, persist=persist,
                header=lambda fields: chunk_header(fields, self.actor_id, self.incarnation, seq, n, self.spec_hash))
            self._unsent.append((self.incarnation, self._seq))
            self._seq += 1

    def _send_pending(self, now: float, full_scan: bool) -> None:
        if full_scan:  # resend what the learner never acked (lost in a disconnect) and anything unsent
            known = set(self._unsent)
            for key in self.pending.keys_to_send(now, self.cfg.resend_after_s):
                if key not in known:
                    if self.pending.get(key).sent_at is not None:
                        self.counters["resent"] += 1
                    self._unsent.append(key)
        while self._unsent:
            key = self._unsent[0]
            chunk = self.pending.get(key)
            if chunk is None or (chunk.sent_at is not None and chunk.acked):
                self._unsent.popleft()
                continue
            try:
                chunk.tracker = self.dealer.send_multipart(self.pending.frames(key), flags=zmq.NOBLOCK,
                                                           copy=False, track=True)
            except zmq.Again:
                return  # not connected or socket queue full: keep it pending, try again next loop
            chunk.sent_at = now
            chunk.sends += 1
            self.counters["sent"] += 1
            self._unsent.popleft()

    def _heartbeat(self, now: float) -> None:
        frames = [pack_header(Msg.HEARTBEAT)] if self._welcomed else self._hello
        if self.rejected_reason is None:
            try:
                self.dealer.send_multipart(frames, flags=zmq.NOBLOCK)
                status = self._status_frames
                if self._welcomed and status is not None:
                    self.dealer.send_multipart(status, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
        silent_for = now - self._last_heard if self._last_heard else 0.0
        if self._welcomed and silent_for > self.cfg.peer_timeout_s and not self._lost_reported:
            log.warning("actor %s: learner silent for %.1fs; buffering (%d chunks pending)", self.actor_id,
                        silent_for, len(self.pending))
            self._lost_reported = True
            self._welcomed = False  # say hello again until someone answers

    def _drain_dealer(self) -> None:
        while True:
            try:
                frames = self.dealer.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                kind, header = unpack_header(frames[0])
                self._dispatch(kind, header)
            except (WireError, TypeError, ValueError, KeyError) as exc:  # a malformed field in a known message
                self.counters["bad_frames"] += 1
                self._warn.warn("bad message from the learner", f"actor {self.actor_id}: {exc!r}")

    def _dispatch(self, kind: Msg, header: dict) -> None:
        """One decoded learner message (raises TypeError/ValueError/KeyError on malformed fields)."""
        self._last_heard = time.monotonic()
        if kind is Msg.WELCOME:
            self._on_welcome(header)
        elif kind is Msg.ACK:
            self._on_ack(header)
        elif kind is Msg.COMMIT:
            self._on_commit(header.get("committed", {}))
        elif kind is Msg.HEARTBEAT:
            if header.get("incarnation") != self.learner_incarnation:
                self._welcomed = False  # a different learner answers: handshake again
            if self._lost_reported:
                log.info("actor %s: learner is back", self.actor_id)
                self._lost_reported = False
        elif kind is Msg.UNKNOWN_PEER:
            self._welcomed = False
            with contextlib.suppress(zmq.Again):  # not connected right now: the heartbeat says hello later
                self.dealer.send_multipart(self._hello, flags=zmq.NOBLOCK)
        elif kind is Msg.CONTROL:
            try:
                self._controls.append(Control.decode(header))
            except WireError as exc:
                self.counters["bad_frames"] += 1
                self._warn.warn("refused a control message", f"actor {self.actor_id}: {exc}")
        elif kind is Msg.REJECT:
            self.rejected_reason = str(header.get("reason"))
            log.error("actor %s: learner refused the handshake: %s", self.actor_id, self.rejected_reason)

    def _on_welcome(self, header: dict) -> None:
        incarnation = header.get("incarnation")
        if incarnation != self.learner_incarnation:
            if self.learner_incarnation is not None:
                self.counters["reconnects"] += 1
                log.info("actor %s: new learner %s; resending %d uncommitted chunks", self.actor_id,
                         incarnation, len(self.pending))
            self.learner_incarnation = incarnation
            self.pending.mark_all_unsent()
            self._unsent.clear()
        committed = header.get("committed", {})
        if isinstance(committed, dict):
            self._on_commit(committed)
        self._welcomed, self._lost_reported = True, False

    def _on_ack(self, header: dict) -> None:
        key = (header.get("incarnation"), header.get("seq"))
        status = header.get("status")
        if status == "rejected":
            self.counters["rejected"] += 1
            self._warn.warn("learner rejected a chunk", f"actor {self.actor_id}, chunk {key}: "
                            f"{header.get('reason')} (the episode store keeps the data)")
        elif status == "duplicate":
            self.counters["duplicates"] += 1
        else:
            self.counters["acked"] += 1
        if self.cfg.durability == "ack":
            self.pending.drop(key)  # type: ignore[arg-type]
        else:
            self.pending.ack(key)  # type: ignore[arg-type]

    def _on_commit(self, committed: dict) -> None:
        for incarnation, seq in committed.items():
            if isinstance(incarnation, str) and isinstance(seq, int):
                self.counters["committed"] += self.pending.commit(incarnation, seq)

    def _drain_sub(self) -> None:
        while True:
            try:
                frame = self.sub.recv(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                weights = decode_weights(frame.buffer, self.spec_hash, self.config_hash,
                                         self.cfg.max_message_bytes)
            except WireError as exc:
                self.counters["bad_weights"] += 1
                self._warn.warn("rejected weights message", f"actor {self.actor_id}: {exc}")
                continue
            weights._frame = frame  # type: ignore[attr-defined]  # keeps the zero-copy views alive
            self.counters["weights"] += 1
            self._progress = weights.progress
            with self._weights_lock:
                if weights.supersedes(self._latest_weights):
                    self._latest_weights = weights
