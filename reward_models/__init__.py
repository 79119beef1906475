"""Learned reward models (imported as ``robot_rl.reward_models``; see docs/architecture.md, "Reward models").

Importing this package is light (no torch): it stores the ``reward`` config group and registers the reward
models by name in ``robot_rl.registry.REWARD_MODELS``; each factory imports torch when called.

- :mod:`.progress`: the progress reward model (delta, Phi, done heads; multi-view; task text)
- :mod:`.classifier`: HIL-SERL-style success classifier (baseline)
- :mod:`.data`: twin episodes, progress labels (linear or step-wise by keyframes), pair batches + negatives
- :mod:`.train`, :mod:`.evaluate`, :mod:`.metrics`, :mod:`.adapt` (one-shot adaptation to a new task)
- :mod:`.shaping`: potential-based shaping (policy-invariant) and the naive delta
- :mod:`.labeller`: labels the learner's sampled batches; :mod:`.vlac`: pretrained VLAC-style weights
- :mod:`.cli`: ``robot-rl reward train | eval``
"""
from __future__ import annotations

from typing import Any

from robot_rl.registry import REWARD_MODELS
from robot_rl.reward_models import config  # noqa: F401  (stores the `reward` config group)


@REWARD_MODELS.register("prm")
def make_prm_labeller(cfg: Any, obs_spec: Any, learner_device: Any) -> Any:
    """``reward=prm``: the progress reward model of ``cfg.reward.checkpoint`` labelling the learner's batches."""
    from robot_rl.reward_models.labeller import labeller_from_checkpoint

    return labeller_from_checkpoint("prm", cfg, obs_spec, learner_device)


@REWARD_MODELS.register("classifier")
def make_classifier_labeller(cfg: Any, obs_spec: Any, learner_device: Any) -> Any:
    """``reward=classifier``: a success classifier (reward = 1 when P(success | s') >= threshold)."""
    from robot_rl.reward_models.labeller import labeller_from_checkpoint

    return labeller_from_checkpoint("classifier", cfg, obs_spec, learner_device)
