"""Replay: uint8 images end to end, each observation frame stored once, bounded memory, thread-safe sampling.

Layout. Observations live in a *frame ring* (``frames[key]``: ``(F, *shape)``); a transition stores the global
ids of its ``obs`` and ``next_obs`` frames. When transition ``t`` of an episode arrives right after ``t-1``
(same actor and episode), its ``obs`` is the previous ``next_obs`` frame, so ``next_obs`` costs no second copy:
an episode of T steps takes T + 1 frames. Frames are preallocated with ``np.empty`` (pages are touched only
when written) and overwritten oldest first; a transition whose frame has been overwritten is never sampled.
"""
from __future__ import annotations

import json
import queue
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import SCALAR_FIELDS, VECTOR_FIELDS, Batch, Episode


class ReplayBuffer:
    def __init__(self, obs_spec: ObsSpec, action_spec: ActionSpec, capacity: int,
                 frame_capacity: int | None = None) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.obs_spec, self.action_spec = obs_spec, action_spec
        self.capacity = int(capacity)
        # Episodes of >= 4 steps need <= 1.25 frames per transition; shorter ones just age out sooner.
        self.frame_capacity = int(frame_capacity or capacity + capacity // 4 + 1)
        self.frames = {k: np.empty((self.frame_capacity, *s.shape), s.dtype) for k, s in obs_spec.fields.items()}
        self.obs_fid = np.full(self.capacity, -1, np.int64)
        self.next_fid = np.full(self.capacity, -1, np.int64)
        # Frame ring position -> the slot of the transition whose obs is the frame written there last, so a
        # sequence sampler follows next_fid -> following step in O(1) (checked against obs_fid: a stale entry
        # points at a slot that now holds another frame id).
        self.obs_slot = np.full(self.frame_capacity, -1, np.int64)
        self.fields: dict[str, np.ndarray] = {
            name: np.empty((self.capacity, *action_spec.shape), np.float32) for name in VECTOR_FIELDS}
        self.fields.update({name: np.empty(self.capacity, dtype) for name, dtype in SCALAR_FIELDS.items()})
        self.actor_index = np.empty(self.capacity, np.int32)
        self.actor_names: list[str] = []
        self._actor_lookup: dict[str, int] = {}
        self.frames_written = 0
        self.transitions_written = 0
        # (actor_id, episode_id) -> (last step, frame id of its next_obs): lets the next step reuse that frame.
        self._open: dict[tuple[str, int], tuple[int, int]] = {}
        self.lock = threading.Lock()

    # --------------------------------------------------------------------------------------- adding
    def __len__(self) -> int:
        return min(self.transitions_written, self.capacity)

    @property
    def nbytes(self) -> int:
        arrays = list(self.frames.values()) + list(self.fields.values())
        return sum(a.nbytes for a in arrays) + self.obs_fid.nbytes * 2 + self.obs_slot.nbytes + self.actor_index.nbytes

    def _write_frame(self, obs: dict[str, np.ndarray], i: int) -> int:
        fid = self.frames_written
        slot = fid % self.frame_capacity
        for key, arr in self.frames.items():
            arr[slot] = obs[key][i]
        self.frames_written += 1
        return fid

    def _frame_matches(self, fid: int, obs: dict[str, np.ndarray], i: int) -> bool:
        if fid < self.frames_written - self.frame_capacity:
            return False
        slot = fid % self.frame_capacity
        return all(np.array_equal(arr[slot], obs[key][i]) for key, arr in self.frames.items())

    def _actor(self, name: str) -> int:
        idx = self._actor_lookup.get(name)
        if idx is None:
            idx = self._actor_lookup[name] = len(self.actor_names)
            self.actor_names.append(name)
        return idx

    def add_batch(self, batch: Batch) -> None:
        """Append N transitions (numpy batch, already validated against the spec)."""
        n = len(batch)
        actor_ids = batch.actor_id or ("",) * n
        with self.lock:
            for i in range(n):
                key = (actor_ids[i], int(batch.episode_id[i]))
                step = int(batch.step[i])
                prev = self._open.get(key)
                if prev is not None and prev[0] == step - 1 and self._frame_matches(prev[1], batch.obs, i):
                    obs_fid = prev[1]
                else:
                    obs_fid = self._write_frame(batch.obs, i)
                next_fid = self._write_frame(batch.next_obs, i)
                if batch.terminated[i] or batch.truncated[i]:
                    self._open.pop(key, None)
                else:
                    self._open[key] = (step, next_fid)
                slot = self.transitions_written % self.capacity
                self.obs_fid[slot], self.next_fid[slot] = obs_fid, next_fid
                self.obs_slot[obs_fid % self.frame_capacity] = slot
                for name, arr in self.fields.items():
                    arr[slot] = getattr(batch, name)[i]
                self.actor_index[slot] = self._actor(actor_ids[i])
                self.transitions_written += 1
            if len(self._open) > 10_000:  # actors that vanished mid-episode: forget the oldest
                for stale in list(self._open)[: len(self._open) - 10_000]:
                    del self._open[stale]

    def add_episode(self, episode: Episode) -> None:
        self.add_batch(episode.to_batch())

    # ------------------------------------------------------------------------------------- sampling
    def _valid(self, idx: np.ndarray) -> np.ndarray:
        oldest = self.frames_written - self.frame_capacity
        return (self.obs_fid[idx] >= oldest) & (self.next_fid[idx] >= oldest)

    def draw_slots(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` slots (n,) drawn uniformly, with replacement, among the sampleable transitions. Call under
        :attr:`lock`. Rejection first (O(n)): only a transition whose frame was overwritten by a long interleave
        is unsampleable, so the whole buffer is scanned only when redraws keep failing."""
        size = len(self)
        if size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, size, n)
        for _ in range(8):
            bad = ~self._valid(idx)
            if not bad.any():
                return idx
            idx[bad] = rng.integers(0, size, int(bad.sum()))
        valid = np.flatnonzero(self._valid(np.arange(size)))
        if valid.size == 0:
            raise ValueError("no sampleable transitions (frame ring too small for this data)")
        bad = ~self._valid(idx)
        idx[bad] = rng.choice(valid, int(bad.sum()))
        return idx

    def following_slots(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For transitions ``slots`` (n,): the slot of the step that followed each in its episode (the one whose
        obs is its next_obs frame) and whether that step is still stored and sampleable. Call under
        :attr:`lock`."""
        want = self.next_fid[slots]  # (n,)
        nxt = self.obs_slot[want % self.frame_capacity]
        nxt = np.where((nxt >= 0) & (nxt < len(self)), nxt, 0)
        found = (self.obs_fid[nxt] == want) & (want >= 0) & self._valid(nxt)
        return nxt, found

    def sample(self, n: int, rng: np.random.Generator) -> Batch:
        """Uniformly sample ``n`` transitions (with replacement); returns freshly allocated numpy arrays."""
        with self.lock:
            idx = self.draw_slots(n, rng)
            obs_slots = self.obs_fid[idx] % self.frame_capacity
            next_slots = self.next_fid[idx] % self.frame_capacity
            return Batch(
                obs={k: a[obs_slots] for k, a in self.frames.items()},
                next_obs={k: a[next_slots] for k, a in self.frames.items()},
                **{name: arr[idx] for name, arr in self.fields.items()},
            )

    # ------------------------------------------------------------------------------------ save/load
    def save(self, directory: Path) -> None:
        """Write the used part of every array as ``.npy`` + ``meta.json`` (caller makes the dir atomic)."""
        directory.mkdir(parents=True, exist_ok=True)
        with self.lock:
            n_frames = min(self.frames_written, self.frame_capacity)
            for key, arr in self.frames.items():
                np.save(directory / f"frame_{key.replace('/', '__')}.npy", arr[:n_frames])
            n = len(self)
            for name, arr in self.fields.items():
                np.save(directory / f"field_{name}.npy", arr[:n])
            np.save(directory / "obs_fid.npy", self.obs_fid[:n])
            np.save(directory / "next_fid.npy", self.next_fid[:n])
            np.save(directory / "actor_index.npy", self.actor_index[:n])
            meta = {"capacity": self.capacity, "frame_capacity": self.frame_capacity,
                    "frames_written": self.frames_written, "transitions_written": self.transitions_written,
                    "actor_names": self.actor_names, "obs_spec": self.obs_spec.to_dict(),
                    "action_spec": self.action_spec.to_dict(),
                    "open": [[a, e, s, f] for (a, e), (s, f) in self._open.items()]}
            (directory / "meta.json").write_text(json.dumps(meta))

    def load(self, directory: Path) -> None:
        """Restore a buffer saved by :meth:`save` into this (empty, same-spec, same-capacity) buffer."""
        meta = json.loads((directory / "meta.json").read_text())
        if meta["obs_spec"] != self.obs_spec.to_dict() or meta["action_spec"] != self.action_spec.to_dict():
            raise ValueError(f"replay in {directory} was saved for another spec")
        if (meta["capacity"], meta["frame_capacity"]) != (self.capacity, self.frame_capacity):
            raise ValueError(f"replay capacity {meta['capacity']}/{meta['frame_capacity']} != "
                             f"{self.capacity}/{self.frame_capacity}")
        with self.lock:
            for key, arr in self.frames.items():
                saved = np.load(directory / f"frame_{key.replace('/', '__')}.npy", mmap_mode="r")
                arr[: len(saved)] = saved
            for name, arr in self.fields.items():
                saved = np.load(directory / f"field_{name}.npy")
                arr[: len(saved)] = saved
            for name in ("obs_fid", "next_fid", "actor_index"):
                saved = np.load(directory / f"{name}.npy")
                getattr(self, name)[: len(saved)] = saved
            self.frames_written = int(meta["frames_written"])
            self.transitions_written = int(meta["transitions_written"])
            self.actor_names = list(meta["actor_names"])
            self._actor_lookup = {n: i for i, n in enumerate(self.actor_names)}
            self._open = {(a, int(e)): (int(s), int(f)) for a, e, s, f in meta["open"]}
            self.obs_slot[:] = -1
            n = len(self)
            order = np.argsort(self.obs_fid[:n], kind="stable")  # older frames first: the newest wins a ring slot
            self.obs_slot[self.obs_fid[:n][order] % self.frame_capacity] = order

    def iter_ids(self) -> Iterator[tuple[str, int, int]]:
        """(actor_id, episode_id, step) of every stored transition (tests check exactly-once with it)."""
        with self.lock:
            for slot in range(len(self)):
                yield (self.actor_names[self.actor_index[slot]], int(self.fields["episode_id"][slot]),
                       int(self.fields["step"][slot]))


class MixedSampler:
    """Batches drawn ``demo_ratio`` from the demo buffer (while it has data) and the rest from online replay,
    prepared ahead of time by a background thread and moved to ``device``."""

    def __init__(self, online: ReplayBuffer, demo: ReplayBuffer | None, batch_size: int, demo_ratio: float,
                 device: Any = "cpu", prefetch: int = 2, seed: int = 0) -> None:
        self.online, self.demo = online, demo
        self.batch_size, self.demo_ratio = int(batch_size), float(demo_ratio)
        self.device = device
        self.rng = np.random.default_rng(seed)
        self.prefetch = int(prefetch)
        self._queue: queue.Queue = queue.Queue(maxsize=max(self.prefetch, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def sample_numpy(self) -> Batch:
        n_demo = 0
        demo = self.demo  # read once: the learner may swap in an empty demo buffer (WSRL) while this runs
        if demo is not None and len(demo) > 0:
            n_demo = int(round(self.batch_size * self.demo_ratio)) if len(self.online) > 0 else self.batch_size
        parts = []
        if n_demo:
            parts.append(demo.sample(n_demo, self.rng))
        if self.batch_size - n_demo:
            parts.append(self.online.sample(self.batch_size - n_demo, self.rng))
        batch = parts[0] if len(parts) == 1 else concat_batches(parts)
        batch.from_demo = np.arange(self.batch_size) < n_demo  # demo rows come first
        return batch

    def sample_demo_numpy(self) -> Batch:
        """A numpy batch from the demo buffer alone (subclasses label it like :meth:`sample_numpy`)."""
        if self.demo is None or len(self.demo) == 0:
            raise ValueError("the demo buffer is empty")
        batch = self.demo.sample(self.batch_size, self.rng)
        batch.from_demo = np.ones(self.batch_size, bool)
        return batch

    def sample_demo(self) -> Batch:
        """A batch from the demo buffer alone (offline pre-training before online data exists), on ``device``."""
        return self._to_device(self.sample_demo_numpy())

    def _to_device(self, batch: Batch) -> Batch:
        # Runs on the prefetch thread, so the host->device copy overlaps the learner's update.
        return batch.to_torch(self.device)

    def _worker(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._to_device(self.sample_numpy())
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced on the learner thread by next()
            self._error = exc

    def next(self) -> Batch:
        if self.prefetch <= 0:
            return self._to_device(self.sample_numpy())
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="replay-prefetch", daemon=True)
            self._thread.start()
        while True:
            if self._error is not None:
                raise RuntimeError("replay prefetch thread failed") from self._error
            try:
                return self._queue.get(timeout=0.5)
            except queue.Empty:
                continue

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def concat_batches(parts: list[Batch]) -> Batch:
    first = parts[0]
    return Batch(
        obs={k: np.concatenate([p.obs[k] for p in parts]) for k in first.obs},
        next_obs={k: np.concatenate([p.next_obs[k] for p in parts]) for k in first.next_obs},
        **{name: np.concatenate([getattr(p, name) for p in parts]) for name in VECTOR_FIELDS + tuple(SCALAR_FIELDS)},
    )
