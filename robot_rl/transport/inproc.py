"""In-process transport: actor(s) and learner in one process, same interfaces and checks as ZeroMQ.

For tests and single-machine runs. Transitions are chunked exactly like the ZeroMQ client and every chunk is
validated against the spec (:meth:`Batch.check`) and deduplicated through the same :class:`DedupLedger`
before it reaches the sink; weights are handed over by reference (the actor copies them into its policy).
"""
from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Any, Mapping

import numpy as np

from robot_rl.specs import ActionSpec, ObsSpec, SpecError
from robot_rl.transport.base import ActorTransport, ChunkSink, DedupLedger, LearnerTransport
from robot_rl.transport.wire import Chunk, Weights
from robot_rl.types import Batch, Transition

log = logging.getLogger("robot_rl.inproc")


class InprocLearnerServer(LearnerTransport):
    def __init__(self, obs_spec: ObsSpec, action_spec: ActionSpec, sink: ChunkSink,
                 ledger: DedupLedger | None = None) -> None:
        self.obs_spec, self.action_spec = obs_spec, action_spec
        self.sink = sink
        self.ledger = ledger or DedupLedger()
        self._queue: queue.Queue[Chunk | None] = queue.Queue()
        self._weights: Weights | None = None
        self._actors: set[str] = set()
        self.counters = {"chunks": 0, "transitions": 0, "duplicates": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._run, name="inproc-learner", daemon=True)
        self.incarnation = uuid.uuid4().hex[:16]  # 64 bits: tells a restarted learner's weights apart

    def start(self) -> None:
        self._thread.start()

    def connect(self, cfg: Any, actor_id: str) -> "InprocActorClient":
        self._actors.add(actor_id)
        return InprocActorClient(self, cfg, actor_id)

    def _run(self) -> None:
        while True:
            chunk = self._queue.get()
            try:
                if chunk is None:
                    return
                self._ingest(chunk)
            except Exception:
                log.exception("in-process ingest failed (continuing)")
            finally:
                self._queue.task_done()

    def _ingest(self, chunk: Chunk) -> None:
        try:
            chunk.batch.check(self.obs_spec, self.action_spec)
        except SpecError as exc:
            self.counters["rejected"] += 1
            log.warning("rejected chunk %s from %s: %s", chunk.seq, chunk.actor_id, exc)
            return
        with self.ledger.lock:
            if self.ledger.seen(chunk.actor_id, chunk.incarnation, chunk.seq):
                self.counters["duplicates"] += 1
                return
            self.sink(chunk)
            self.ledger.mark(chunk.actor_id, chunk.incarnation, chunk.seq)
            self.counters["chunks"] += 1
            self.counters["transitions"] += len(chunk.batch)

    def wait_idle(self) -> None:
        """Block until every chunk handed over so far is ingested."""
        self._queue.join()

    def publish_weights(self, weights: Mapping[str, np.ndarray], version: int,
                        progress: Mapping[str, int] | None = None) -> None:
        self._weights = Weights(int(version), {k: np.array(v, copy=True) for k, v in weights.items()},
                                dict(progress or {}), self.incarnation)

    def commit(self, marks: dict[str, dict[str, int]]) -> None:
        """Nothing to release: in-process chunks are never held by the actor after delivery."""

    def stats(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.counters.items()} | {"actors": float(len(self._actors))}

    def connected_actors(self) -> list[str]:
        return sorted(self._actors)

    def close(self) -> None:
        if not self._thread.is_alive():  # never started (a learner built but not run): nothing to drain
            return
        self._queue.put(None)
        self._thread.join(timeout=5)


class InprocActorClient(ActorTransport):
    def __init__(self, server: InprocLearnerServer, cfg: Any, actor_id: str) -> None:
        self.server, self.cfg, self.actor_id = server, cfg, actor_id
        self.incarnation = uuid.uuid4().hex[:12]
        self._buffer: list[Transition] = []
        self._seq = 0
        self._taken: Weights | None = None

    def send(self, transition: Transition) -> None:
        self._buffer.append(transition)
        if len(self._buffer) >= self.cfg.chunk_size:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            batch = Batch.from_transitions(self._buffer)
            self.server._queue.put(Chunk(self.actor_id, self.incarnation, self._seq, batch))
            self._seq += 1
            self._buffer = []

    def poll_weights(self) -> Weights | None:
        w = self.server._weights
        if w is None or not w.supersedes(self._taken):
            return None
        self._taken = w
        return w

    def learner_progress(self) -> dict[str, int] | None:
        w = self.server._weights
        return None if w is None else w.progress

    @property
    def connected(self) -> bool:
        return True

    def stats(self) -> dict[str, float]:
        return {"queue_depth": float(len(self._buffer)), "sent": float(self._seq),
                "weights_version": float(self._taken.version if self._taken else -1), "connected": 1.0}

    def close(self, drain_s: float = 0.0) -> None:
        self.flush()
