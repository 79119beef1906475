"""The replay sampler whose batches a :class:`~robot_rl.reward_models.labeller.RewardLabeller` labels, on the
sampler's prefetch thread (one-step batches; executed sequences: :mod:`robot_rl.reward_models.sequence_labels`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from robot_rl.replay import MixedSampler
from robot_rl.types import Batch

if TYPE_CHECKING:
    from robot_rl.reward_models.labeller import RewardLabeller


class LabelledSampler(MixedSampler):
    """A :class:`MixedSampler` whose batches are labelled by a :class:`RewardLabeller` on its prefetch thread.

    ``keep_keys``: the observation keys the algorithm reads (empty = all). Keys only the reward model reads
    (the cameras of an images-only reward with a state policy) are dropped after labelling, before the batch
    is turned into tensors."""

    def __init__(self, inner: MixedSampler, labeller: RewardLabeller, keep_keys: Sequence[str] = ()) -> None:
        super().__init__(inner.online, inner.demo, inner.batch_size, inner.demo_ratio, inner.device, inner.prefetch)
        self.rng = inner.rng
        self.labeller = labeller
        self.keep_keys = tuple(keep_keys)
        missing = sorted(set(self.keep_keys) - set(inner.online.obs_spec.fields))
        if missing:
            raise ValueError(f"keep_keys {missing} are not stored in replay ({inner.online.obs_spec.keys()})")

    def _keep(self, batch: Batch) -> Batch:
        if not self.keep_keys or set(self.keep_keys) == set(batch.obs):
            return batch
        return batch.with_obs_keys(self.keep_keys)

    def sample_numpy(self) -> Batch:
        return self._keep(self.labeller.label(super().sample_numpy()))

    def sample_demo_numpy(self) -> Batch:
        # Offline pre-training must train on the same (learned) reward as the online phase that follows it.
        return self._keep(self.labeller.label(super().sample_demo_numpy()))
