"""The typed records that flow actor -> wire -> replay -> learner, and the episode written to disk.

Field meanings are the same everywhere: a :class:`Transition` is one control step, a :class:`Batch` is N of
them stacked (numpy on the wire and in replay, torch on the learner), an :class:`Episode` stores each
observation frame once (``T + 1`` frames for ``T`` steps) so ``next_obs`` never costs a second copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generic, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from robot_rl.specs import ActionSpec, ObsSpec, SpecError

Obs = dict[str, np.ndarray]
ArrayT = TypeVar("ArrayT")  # np.ndarray or torch.Tensor


@dataclass
class Transition:
    """One control step as the actor produced it."""

    obs: Obs
    """Observation before the action: ``state`` (float32 (S,)) and ``images/<cam>`` (uint8 (H, W, 3))."""
    action: np.ndarray
    """float32 (A,): the action actually sent to the robot (the operator's while intervening)."""
    reward: float
    """Environment (or reward-model) reward for this step."""
    next_obs: Obs
    """Observation after the action, same keys as ``obs``."""
    terminated: bool
    """True when the MDP ended (success/failure): no bootstrapping from ``next_obs``."""
    truncated: bool
    """True when a time limit or reset cut the episode: bootstrapping from ``next_obs`` is still valid."""
    actor_id: str
    """Which actor produced it (unique per robot / sim process)."""
    episode_id: int
    """Actor-local episode counter; ``(actor_id, episode_id)`` identifies an episode globally."""
    step: int
    """Index of this step within its episode, from 0."""
    intervened: bool = False
    """True when a human's teleop command replaced the policy's action."""
    policy_action: np.ndarray | None = None
    """float32 (A,): what the policy proposed; equals ``action`` unless ``intervened``."""

    def __post_init__(self) -> None:
        if self.policy_action is None:
            self.policy_action = self.action

    def check(self, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        obs_spec.check(self.obs, what="obs")
        obs_spec.check(self.next_obs, what="next_obs")
        action_spec.check(self.action, what="action")
        action_spec.array.check("policy_action", self.policy_action)
        if not np.isfinite(self.reward):
            raise SpecError(f"reward is {self.reward}")


# Per-step scalar fields of a Batch with their dtypes: the single source for wire, replay and episode files.
SCALAR_FIELDS: dict[str, str] = {
    "reward": "float32",
    "terminated": "bool",
    "truncated": "bool",
    "intervened": "bool",
    "episode_id": "int64",
    "step": "int64",
}
VECTOR_FIELDS = ("action", "policy_action")  # float32 (N, *action_shape)


@dataclass
class Batch(Generic[ArrayT]):
    """N transitions stacked along dim 0. ``actor_id`` is kept as a tuple of strings (not a tensor field)."""

    obs: dict[str, ArrayT]
    action: ArrayT
    reward: ArrayT
    next_obs: dict[str, ArrayT]
    terminated: ArrayT
    truncated: ArrayT
    intervened: ArrayT
    policy_action: ArrayT
    episode_id: ArrayT
    step: ArrayT
    actor_id: tuple[str, ...] = field(default=())
    from_demo: ArrayT | None = None
    """bool (N,): the row was drawn from the demo buffer (demonstrations and human interventions). Set by the
    learner's sampler for algorithms with a behaviour-cloning term; never on the wire or on disk."""

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @staticmethod
    def from_transitions(transitions: Sequence[Transition],
                         alloc: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None
                         ) -> "Batch[np.ndarray]":
        """Stack transitions. ``alloc(shape, dtype)`` may supply reused output buffers for the observation
        arrays (the actor's chunk pool: fresh multi-MB allocations page-fault on every first touch)."""
        if not transitions:
            raise ValueError("cannot stack zero transitions")
        keys = transitions[0].obs.keys()

        def stack(arrays: list[np.ndarray]) -> np.ndarray:
            if alloc is None:
                return np.stack(arrays)
            return np.stack(arrays, out=alloc((len(arrays), *arrays[0].shape), arrays[0].dtype))

        return Batch(
            obs={k: stack([t.obs[k] for t in transitions]) for k in keys},
            next_obs={k: stack([t.next_obs[k] for t in transitions]) for k in keys},
            action=np.stack([t.action for t in transitions]).astype(np.float32, copy=False),
            policy_action=np.stack([t.policy_action for t in transitions]).astype(np.float32, copy=False),
            reward=np.asarray([t.reward for t in transitions], np.float32),
            terminated=np.asarray([t.terminated for t in transitions], bool),
            truncated=np.asarray([t.truncated for t in transitions], bool),
            intervened=np.asarray([t.intervened for t in transitions], bool),
            episode_id=np.asarray([t.episode_id for t in transitions], np.int64),
            step=np.asarray([t.step for t in transitions], np.int64),
            actor_id=tuple(t.actor_id for t in transitions),
        )

    def select(self, rows: np.ndarray) -> "Batch[np.ndarray]":
        """The rows ``rows`` picks: a boolean mask, or integer positions in the order given (numpy batches;
        copies)."""
        rows = np.asarray(rows)
        index = np.flatnonzero(rows) if rows.dtype == bool else rows
        return Batch(obs={k: v[index] for k, v in self.obs.items()},
                     next_obs={k: v[index] for k, v in self.next_obs.items()},
                     **{name: getattr(self, name)[index] for name in VECTOR_FIELDS + tuple(SCALAR_FIELDS)},
                     actor_id=tuple(self.actor_id[i] for i in index) if self.actor_id else ())

    def with_obs_keys(self, keys: Sequence[str]) -> "Batch[ArrayT]":
        """The same rows with ``obs``/``next_obs`` narrowed to ``keys`` (in that order; the arrays themselves, no
        copies), e.g. the keys a critic reads out of a replay batch that also holds a reward model's frames."""
        return replace(self, obs={k: self.obs[k] for k in keys}, next_obs={k: self.next_obs[k] for k in keys})

    def transitions(self) -> Iterator[Transition]:
        """Unstack a numpy batch back into transitions (views, no copies)."""
        for i in range(len(self)):
            yield Transition(
                obs={k: v[i] for k, v in self.obs.items()},
                action=self.action[i],
                reward=float(self.reward[i]),
                next_obs={k: v[i] for k, v in self.next_obs.items()},
                terminated=bool(self.terminated[i]),
                truncated=bool(self.truncated[i]),
                actor_id=self.actor_id[i] if self.actor_id else "",
                episode_id=int(self.episode_id[i]),
                step=int(self.step[i]),
                intervened=bool(self.intervened[i]),
                policy_action=self.policy_action[i],
            )

    def arrays(self) -> dict[str, ArrayT]:
        """Flat name -> array view (``obs/<key>``, ``next_obs/<key>``, then per-step fields)."""
        out: dict[str, Any] = {f"obs/{k}": self.obs[k] for k in sorted(self.obs)}  # spec order
        out.update({f"next_obs/{k}": self.next_obs[k] for k in sorted(self.next_obs)})
        for name in VECTOR_FIELDS + tuple(SCALAR_FIELDS):
            out[name] = getattr(self, name)
        return out

    @staticmethod
    def from_arrays(arrays: Mapping[str, Any], actor_id: tuple[str, ...] = ()) -> "Batch":
        obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs/")}
        next_obs = {k[9:]: v for k, v in arrays.items() if k.startswith("next_obs/")}
        rest = {name: arrays[name] for name in VECTOR_FIELDS + tuple(SCALAR_FIELDS)}
        return Batch(obs=obs, next_obs=next_obs, actor_id=actor_id, **rest)

    def check(self, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        """Validate every field against the specs (shape, dtype, finiteness, action bounds, equal lengths)."""
        n = len(self)
        obs_spec.check(self.obs, batched=True, what="obs")
        obs_spec.check(self.next_obs, batched=True, what="next_obs")
        # Bounds too, not only finiteness: a finite 1e30 would otherwise enter replay and wreck the critic.
        action_spec.check(self.action, batched=True, what="action")
        action_spec.check(self.policy_action, batched=True, what="policy_action")
        for name, dtype in SCALAR_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != (n,) or value.dtype != np.dtype(dtype):
                raise SpecError(f"{name}: expected {dtype} ({n},), got {getattr(value, 'dtype', type(value))} "
                                f"{getattr(value, 'shape', '')}")
        for key, arr in list(self.obs.items()) + list(self.next_obs.items()):
            if arr.shape[0] != n:
                raise SpecError(f"obs field {key!r} has {arr.shape[0]} rows, batch has {n}")
        if not np.isfinite(self.reward).all():
            raise SpecError("reward contains NaN or inf")
        if self.actor_id and len(self.actor_id) != n:
            raise SpecError(f"actor_id has {len(self.actor_id)} entries, batch has {n}")

    def to_torch(self, device: Any = "cpu", non_blocking: bool = False) -> "Batch":
        """Torch view of a numpy batch. Images stay uint8: the encoder normalises on the device."""
        import torch

        # On the CPU the numpy views are the result: skip ``.to``, a no-op that still costs ~1 us per field.
        on_cpu = torch.device(device).type == "cpu"

        def t(x: np.ndarray) -> "torch.Tensor":
            tensor = torch.from_numpy(np.ascontiguousarray(x))
            return tensor if on_cpu else tensor.to(device, non_blocking=non_blocking)

        return Batch(
            obs={k: t(v) for k, v in self.obs.items()},
            next_obs={k: t(v) for k, v in self.next_obs.items()},
            **{name: t(getattr(self, name)) for name in VECTOR_FIELDS + tuple(SCALAR_FIELDS)},
            actor_id=self.actor_id,
            from_demo=None if self.from_demo is None else t(self.from_demo),
        )


@dataclass
class Episode:
    """One episode as written to disk: each observation frame once (``T + 1`` frames for ``T`` steps)."""

    frames: dict[str, np.ndarray]
    """obs key -> (T + 1, ...) array; frame t is ``obs`` of step t, frame t + 1 its ``next_obs``."""
    action: np.ndarray
    """float32 (T, A)."""
    policy_action: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    intervened: np.ndarray
    actor_id: str
    episode_id: int
    spec_hash: str
    """Spec hash of the task that produced it; readers refuse an episode from another spec."""
    success: bool = False
    """True when the episode reached the task's success condition (or an operator pressed success)."""
    task: str = ""
    """Natural-language task description (used by language-conditioned policies and reward models)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON-able metadata (source, seed, git revision...). Never read on the hot path."""

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @staticmethod
    def from_transitions(transitions: Sequence[Transition], spec_hash: str, success: bool = False,
                         task: str = "", meta: dict[str, Any] | None = None) -> "Episode":
        if not transitions:
            raise ValueError("an episode needs at least one transition")
        b = Batch.from_transitions(transitions)
        for i in range(1, len(transitions)):
            if transitions[i].step != transitions[i - 1].step + 1:
                raise ValueError(f"steps are not consecutive at index {i}")
        frames = {k: np.concatenate([v, b.next_obs[k][-1:]], axis=0) for k, v in b.obs.items()}
        return Episode(frames=frames, action=b.action, policy_action=b.policy_action, reward=b.reward,
                       terminated=b.terminated, truncated=b.truncated, intervened=b.intervened,
                       actor_id=transitions[0].actor_id, episode_id=transitions[0].episode_id,
                       spec_hash=spec_hash, success=success, task=task, meta=dict(meta or {}))

    def to_batch(self) -> Batch[np.ndarray]:
        """All steps as a batch whose obs/next_obs are views into ``frames`` (no copy)."""
        n = len(self)
        return Batch(
            obs={k: v[:-1] for k, v in self.frames.items()},
            next_obs={k: v[1:] for k, v in self.frames.items()},
            action=self.action, policy_action=self.policy_action, reward=self.reward,
            terminated=self.terminated, truncated=self.truncated, intervened=self.intervened,
            episode_id=np.full(n, self.episode_id, np.int64), step=np.arange(n, dtype=np.int64),
            actor_id=(self.actor_id,) * n,
        )

    def transitions(self) -> Iterator[Transition]:
        return self.to_batch().transitions()

