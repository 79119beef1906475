"""One-shot adaptation: fine-tune a trained progress model to a new task from a single expert trajectory.

The new trajectory (with its task text) is labelled like any successful episode (linear or step-wise by its
keyframes, all pair directions, mismatched-text negatives); the old training episodes, if given, are mixed in
under their own texts so the model keeps the tasks it knew. A copy is trained; the original is untouched.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch.nn as nn

from robot_rl.reward_models.config import RewardTrainConfig
from robot_rl.reward_models.train import train_model
from robot_rl.types import Episode


def adapt_one_shot(model: nn.Module, demo: Episode, task: str | None = None, old_episodes: Sequence[Episode] = (),
                   steps: int = 200, lr: float = 3e-4, cfg: RewardTrainConfig | None = None) -> nn.Module:
    """A copy of ``model`` fine-tuned on ``demo`` (successful; ``task`` overrides its text)."""
    if not demo.success:
        raise ValueError("one-shot adaptation needs a successful demonstration")
    demo = replace(demo, task=task) if task else demo
    if not demo.task.strip():
        raise ValueError("the demonstration has no task text (pass task=...)")
    missing = [v for v in model.encoder.views if v not in demo.frames]
    if missing:
        raise ValueError(f"the demonstration lacks the model's views {missing}")
    base = cfg or RewardTrainConfig()
    train_cfg = replace(base, steps=steps, lr=lr, failure_prob=base.failure_prob if any(
        not e.success for e in old_episodes) else 0.0)
    adapted = copy.deepcopy(model)
    return train_model([demo, *old_episodes], train_cfg, model=adapted,
                       task_embedding=dict(getattr(model, "task_embedding", {})))
