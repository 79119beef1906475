"""Action chunks: training targets from episodes, and executing chunks on the robot.

- :class:`ChunkBatch`: observations ``(N, ...)`` with the next ``H`` actions ``(N, H, A)`` (what a chunked policy
  imitates) and optional task ids (language-conditioned policies).
- :func:`chunk_dataset`: every step of every episode -> one chunk sample; a chunk running past the episode end is
  padded by repeating the last action (as Diffusion Policy / LeRobot do), so the policy learns to hold still.
- :class:`ChunkExecutor`: per batch row, either receding horizon (plan ``H`` actions, execute the first
  ``execute_steps``, replan) or ACT-style temporal ensembling (replan every step and average, for the current
  step, the predictions of every chunk that covers it with weights ``exp(-m * age)``, oldest first).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from robot_rl.types import Episode


@dataclass
class ChunkBatch:
    """Behaviour-cloning batch of action chunks (numpy for datasets, torch for training)."""

    obs: dict
    """Observation key -> ``(N, ...)`` (uint8 images, float32 state)."""
    action: object
    """float32 ``(N, H, A)``: the action at this step and the ``H - 1`` that followed it."""
    task_id: object = None
    """int64 ``(N,)`` index into the dataset's task list (language-conditioned policies), or None."""

    def __len__(self) -> int:
        return int(self.action.shape[0])

    def index(self, rows) -> "ChunkBatch":
        return ChunkBatch({k: v[rows] for k, v in self.obs.items()}, self.action[rows],
                          None if self.task_id is None else self.task_id[rows])

    def to_torch(self, device: torch.device | str = "cpu") -> "ChunkBatch":
        def t(x):
            return torch.as_tensor(np.ascontiguousarray(x), device=device)

        return ChunkBatch({k: t(v) for k, v in self.obs.items()}, t(self.action),
                          None if self.task_id is None else t(self.task_id))


def episode_chunks(episode: Episode, chunk_size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One episode -> (obs ``(T, ...)``, chunks ``(T, H, A)``), padded past the end with the last action."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    actions = np.asarray(episode.action, np.float32)  # (T, A)
    t = len(actions)
    index = np.minimum(np.arange(t)[:, None] + np.arange(chunk_size)[None, :], t - 1)  # (T, H)
    obs = {k: v[:-1] for k, v in episode.frames.items()}  # frame t is the obs of step t
    return obs, actions[index]


def chunk_dataset(episodes: Iterable[Episode], chunk_size: int,
                  tasks: Sequence[str] | None = None) -> tuple[ChunkBatch, list[str]]:
    """All steps of ``episodes`` as one :class:`ChunkBatch`; returns it and the task list (episode ``task``
    strings in first-seen order, or ``tasks`` when given: an episode whose task is not in it is an error)."""
    obs_parts: dict[str, list[np.ndarray]] = {}
    chunks, task_ids = [], []
    task_list = list(tasks) if tasks is not None else []
    for episode in episodes:
        obs, chunk = episode_chunks(episode, chunk_size)
        for k, v in obs.items():
            obs_parts.setdefault(k, []).append(v)
        chunks.append(chunk)
        if episode.task not in task_list:
            if tasks is not None:
                raise ValueError(f"episode task {episode.task!r} is not one of {task_list}")
            task_list.append(episode.task)
        task_ids.append(np.full(len(chunk), task_list.index(episode.task), np.int64))
    if not chunks:
        raise ValueError("no episodes to build a chunk dataset from")
    batch = ChunkBatch({k: np.concatenate(v) for k, v in obs_parts.items()}, np.concatenate(chunks),
                       np.concatenate(task_ids))
    return batch, task_list


class ChunkExecutor:
    """Turns a chunk planner into a per-step action source for ``N`` parallel rows (envs)."""

    def __init__(self, chunk_size: int, execute_steps: int, ensemble_decay: float) -> None:
        if not 1 <= execute_steps <= chunk_size:
            raise ValueError(f"execute_steps must be in [1, chunk_size={chunk_size}], got {execute_steps}")
        self.chunk_size = chunk_size
        self.execute_steps = execute_steps
        self.ensemble_decay = ensemble_decay
        """< 0: receding horizon; >= 0: temporal ensembling with weights exp(-decay * age)."""
        self.reset()

    def reset(self) -> None:
        self._queues: list[list[np.ndarray]] = []  # receding horizon: per row, actions still to execute
        self._history: list[list[tuple[int, np.ndarray]]] = []  # ensembling: per row, (start step, chunk)
        self._t: list[int] = []

    def _ensure_rows(self, n: int) -> None:
        if len(self._t) != n:  # a different number of envs than last time: start over
            self._queues = [[] for _ in range(n)]
            self._history = [[] for _ in range(n)]
            self._t = [0] * n

    def step(self, n: int, plan: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Next action per row ``(n, A)``. ``plan(rows)`` returns fresh chunks ``(len(rows), H, A)`` for those rows."""
        self._ensure_rows(n)
        if self.ensemble_decay < 0:
            need = np.array([i for i in range(n) if not self._queues[i]], np.int64)
            if need.size:
                chunks = plan(need)  # (len(need), H, A)
                for row, chunk in zip(need, chunks):
                    self._queues[row] = list(chunk[:self.execute_steps])
            return np.stack([self._queues[i].pop(0) for i in range(n)])
        chunks = plan(np.arange(n))  # ensembling replans every row every step
        out = []
        for i in range(n):
            t = self._t[i]
            self._history[i].append((t, chunks[i]))
            self._history[i] = [(s, c) for s, c in self._history[i] if t - s < self.chunk_size]
            preds = np.stack([c[t - s] for s, c in self._history[i]])  # (K, A), oldest first
            weights = np.exp(-self.ensemble_decay * np.arange(len(preds)))
            out.append((weights[:, None] * preds).sum(0) / weights.sum())
            self._t[i] = t + 1
        return np.stack(out).astype(np.float32)
