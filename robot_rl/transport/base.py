"""Transport interfaces shared by the ZeroMQ and the in-process implementations, and the dedup ledger.

Delivery contract (what replay sees is exactly-once):
- the actor numbers chunks ``seq = 0, 1, ...`` per *incarnation* (one actor process run);
- the learner acks each chunk after handing it to the sink; duplicates are acked but not re-ingested;
- after a durable checkpoint the learner *commits* the contiguous prefix of seqs it holds; only then does the
  actor forget those chunks. If the learner dies, it restores the ledger from its checkpoint and the actor
  resends everything not committed, so nothing is lost and nothing is ingested twice.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping

import numpy as np

from robot_rl.types import Transition
from robot_rl.transport.wire import ActorStatus, Chunk, Control, Weights

class RateLimitedLog:
    """At most one warning per kind of problem per ``period_s``: a flood of bad frames must not flood the log.

    ``kind`` is a fixed string chosen by our code (never peer text), so a peer cannot mint new kinds; the table
    is still capped at ``max_keys`` kinds, the oldest forgotten first."""

    def __init__(self, logger: logging.Logger, period_s: float = 5.0, max_keys: int = 256) -> None:
        self.logger, self.period_s, self.max_keys = logger, period_s, max_keys
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def warn(self, kind: str, detail: str) -> None:
        """Log ``"<kind>: <detail>"`` unless ``kind`` was logged less than ``period_s`` ago (then count it)."""
        now = time.monotonic()
        if now - self.last.get(kind, -1e9) >= self.period_s:
            extra = self.suppressed.pop(kind, 0)
            self.logger.warning("%s: %s%s", kind, detail, f" (+{extra} similar suppressed)" if extra else "")
            self.last.pop(kind, None)
            self.last[kind] = now  # re-inserted: dict order is oldest-logged first
            while len(self.last) > self.max_keys:
                oldest = next(iter(self.last))
                del self.last[oldest]
                self.suppressed.pop(oldest, None)
        else:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1


ChunkSink = Callable[[Chunk], None]
"""Called by the learner transport for every new, validated chunk (under the ledger lock)."""


class DedupLedger:
    """Which ``(actor_id, incarnation, seq)`` the learner holds; contiguous prefix + the few seqs above it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        """Held while a chunk is ingested and while a checkpoint snapshots replay + ledger together."""
        self._prefix: dict[tuple[str, str], int] = {}   # highest seq s with 0..s all held; -1 if none
        self._above: dict[tuple[str, str], set[int]] = {}

    def seen(self, actor_id: str, incarnation: str, seq: int) -> bool:
        key = (actor_id, incarnation)
        return seq <= self._prefix.get(key, -1) or seq in self._above.get(key, ())

    def mark(self, actor_id: str, incarnation: str, seq: int) -> None:
        key = (actor_id, incarnation)
        prefix = self._prefix.get(key, -1)
        above = self._above.setdefault(key, set())
        above.add(seq)
        while prefix + 1 in above:
            prefix += 1
            above.discard(prefix)
        self._prefix[key] = prefix

    def marks(self) -> dict[str, dict[str, int]]:
        """actor_id -> {incarnation: highest contiguous seq held}. Take it under ``lock`` together with the
        replay snapshot: only what a checkpoint holds may be committed to actors."""
        out: dict[str, dict[str, int]] = {}
        for (aid, inc), s in self._prefix.items():
            if s >= 0:
                out.setdefault(aid, {})[inc] = s
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"prefix": [[a, i, s] for (a, i), s in self._prefix.items()],
                "above": [[a, i, sorted(v)] for (a, i), v in self._above.items() if v]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._prefix = {(a, i): int(s) for a, i, s in state["prefix"]}
        self._above = {(a, i): set(int(x) for x in v) for a, i, v in state["above"]}


class ActorTransport(ABC):
    """Actor side. Every method returns immediately: the control loop never waits on the network."""

    @abstractmethod
    def send(self, transition: Transition) -> None:
        """Queue one transition; it is chunked, sent, acked and kept until the learner commits it."""

    @abstractmethod
    def flush(self) -> None:
        """Send the partial chunk now (call at episode end)."""

    @abstractmethod
    def poll_weights(self) -> Weights | None:
        """Newest weights not yet returned, or None. Swap them in only between chunks/episodes."""

    def learner_progress(self) -> dict[str, int] | None:
        """Progress counters of the newest weights message seen (None before the first)."""
        return None

    def backpressure(self) -> str | None:
        """Why the producer must pause now (uncommitted data it cannot hold any more), or None to go on."""
        return None

    @abstractmethod
    def stats(self) -> dict[str, float]:
        """queue depth, pending/spilled chunks, acked/committed counts, connection state, weights version."""

    def report_status(self, status: ActorStatus) -> None:
        """Hand the actor's latest fleet-table figures to the learner (sent with the next heartbeat)."""

    def poll_controls(self) -> list[Control]:
        """Operator commands relayed by the learner since the last call, oldest first (none by default)."""
        return []

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    def close(self, drain_s: float = 0.0) -> None:
        """Stop; optionally wait up to ``drain_s`` for pending chunks to be acked first."""


class LearnerTransport(ABC):
    """Learner side: ingests chunks into ``sink``, publishes weights, tells actors what is committed."""

    ledger: DedupLedger

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def publish_weights(self, weights: Mapping[str, np.ndarray], version: int,
                        progress: Mapping[str, int] | None = None) -> None:
        """Publish a new policy version (latest only) with the learner's progress counters."""

    def republish(self) -> None:
        """Send the last weights again (late-joining actors missed them: PUB/SUB keeps no history)."""

    @abstractmethod
    def commit(self, marks: dict[str, dict[str, int]]) -> None:
        """Tell actors which of their chunks are durable: ``marks`` is the ledger snapshot taken with the
        checkpoint just written (:meth:`DedupLedger.marks`), never the live ledger."""

    @abstractmethod
    def stats(self) -> dict[str, float]: ...

    @abstractmethod
    def connected_actors(self) -> list[str]: ...

    def fleet(self) -> list[dict[str, Any]]:
        """One record per known actor for the dashboard: ``actor_id``, ``connected``, ``seen_s_ago``,
        ``transitions`` and ``status`` (the actor's latest :class:`ActorStatus` as a dict, or None)."""
        return []

    def send_control(self, actor_id: str, control: Control) -> bool:
        """Relay an operator command to ``actor_id``; False when no connected actor has that id."""
        return False

    @abstractmethod
    def close(self) -> None: ...
