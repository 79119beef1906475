"""The algorithm interface the learner loop drives.

An algorithm owns its critics and optimizers; the policy is a separate module (``robot_rl.policies``) whose
``state_dict`` is what actors receive. The learner calls ``update`` with a torch :class:`Batch` already on
``self.device`` and never looks inside.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from robot_rl.types import Batch


class Algorithm(ABC):
    device: torch.device
    cfg: Any

    @property
    def batch_size_per_update(self) -> int:
        """Transitions the learner samples for one :meth:`update` call (RLPD splits them into critic steps)."""
        return int(self.cfg.batch_size)

    @property
    def warmup_env_steps(self) -> int:
        """Online env steps collected with the initial (pre-trained) policy before the first update; updates
        then run at the UTD ratio over the steps after them (WSRL's warm-up rollouts). 0: update from the start."""
        return 0

    @property
    def keeps_offline_data(self) -> bool:
        """False: the learner empties its demo/offline buffer once the warm-up steps are in, and later batches
        are online only (WSRL: fine-tune without retaining the offline data)."""
        return True

    @property
    def sequence_horizon(self) -> int:
        """> 0: the algorithm trains an action-sequence critic and wants :class:`robot_rl.sequence_replay.
        SequenceBatch` chunks of this many executed steps instead of single transitions (the learner then samples
        with :class:`robot_rl.sequence_replay.SequenceSampler`). 0: plain transition batches."""
        return 0

    @abstractmethod
    def update(self, batch: Batch) -> dict[str, float]:
        """One gradient update (possibly several critic steps, see the algorithm's UTD); returns metrics."""

    @abstractmethod
    def policy_weights(self) -> dict[str, torch.Tensor]:
        """The actor-side policy's ``state_dict`` (CPU tensors), published to actors."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: networks, target networks, optimizers, temperature, counters."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
