"""Pretraining of the ``policy.encoder=task`` camera encoders on the task's own demonstrations.

Inputs are the demos' camera frames only; targets are signals a real robot records too:

- the demonstrated action (normalised to [-1, 1] by the action bounds), MSE;
- progress, ``(t + 1) / T`` within its episode (time), MSE;
- success, the recorded reward > 0 of that step (a success label), binary cross-entropy.

No simulator-only quantity (object pose, contacts) enters inputs or targets. The proprioceptive ``state`` is left
out of the inputs on purpose: with it, 20 demonstrations can be fitted from the arm's own trajectory alone and the
cameras would learn nothing about where the object is. Each camera's backbone (conv + spatial softmax) and its
Linear/LayerNorm/tanh head are trained together with a throwaway MLP; afterwards the backbones are frozen (the
embedding replay stores) and the heads stay trainable for RL, starting from these weights.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.policies.encoders import ObservationEncoder, random_shift
from robot_rl.policies.frozen_encoders import TaskCameraEncoder, TaskEncoderConfig
from robot_rl.specs import ActionSpec
from robot_rl.types import Episode

log = logging.getLogger("robot_rl.policies.task_pretrain")


def task_targets(episodes: Sequence[Episode], action_spec: ActionSpec) -> dict[str, np.ndarray]:
    """Per-step targets of the demos: ``action (T, A)`` in [-1, 1], ``progress (T,)``, ``success (T,)``."""
    low, high = np.asarray(action_spec.low, np.float32), np.asarray(action_spec.high, np.float32)
    actions = np.concatenate([ep.action for ep in episodes]).astype(np.float32)
    return {
        "action": np.clip((actions - (high + low) / 2) / ((high - low) / 2), -1.0, 1.0),
        "progress": np.concatenate([(np.arange(len(ep)) + 1.0) / len(ep) for ep in episodes]).astype(np.float32),
        "success": np.concatenate([ep.reward > 0 for ep in episodes]).astype(np.float32),
    }


def pretrain_task_encoder(encoder: ObservationEncoder, episodes: Sequence[Episode], action_spec: ActionSpec,
                          cfg: TaskEncoderConfig, device: Any = "cpu", seed: int = 0) -> dict[str, float]:
    """Train ``encoder``'s task cameras on ``episodes`` (see the module docstring); returns final losses.

    Leaves every backbone frozen. Raises when there is nothing to learn from (no demos, no cameras)."""
    cameras = {k: c for k, c in encoder.frozen_cameras.items() if isinstance(c, TaskCameraEncoder)}
    if not cameras:
        raise ValueError("pretrain_task_encoder needs an encoder with policy.encoder=task cameras")
    episodes = [ep for ep in episodes if len(ep) > 0]
    if not episodes:
        raise ValueError("policy.encoder=task needs demonstrations to pretrain on (learner.demos or num_demos > 0); "
                         "without demos use policy.encoder=drq or policy.encoder=frozen")
    device = torch.device(device)
    frames = {k: torch.from_numpy(np.concatenate([ep.frames[k][:-1] for ep in episodes])) for k in cameras}
    targets = {k: torch.from_numpy(v) for k, v in task_targets(episodes, action_spec).items()}
    n = len(targets["action"])
    action_dim = targets["action"].shape[1]
    generator = torch.Generator().manual_seed(seed)
    feature_dim = sum(c.output_dim for c in cameras.values())
    mlp = nn.Sequential(nn.Linear(feature_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, action_dim + 2)).to(device)  # action, progress, success logit
    params = list(mlp.parameters())
    for camera in cameras.values():
        camera.freeze_backbone(False)
        params += [p for p in camera.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    t0 = time.monotonic()
    losses: dict[str, float] = {}
    try:
        for step in range(cfg.pretrain_steps):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=generator)
            features = []
            for key, camera in cameras.items():
                images = frames[key][idx].to(device)  # (B, H, W, 3) uint8
                if cfg.augment_pad > 0:
                    images = random_shift(images, cfg.augment_pad)
                features.append(camera.head(camera.keypoints_of(images)))  # (B, feature_dim)
            out = mlp(torch.cat(features, -1))  # (B, A + 2)
            action_loss = F.mse_loss(out[:, :action_dim], targets["action"][idx].to(device))
            progress_loss = F.mse_loss(out[:, action_dim], targets["progress"][idx].to(device))
            success_loss = F.binary_cross_entropy_with_logits(out[:, action_dim + 1],
                                                              targets["success"][idx].to(device))
            loss = action_loss + cfg.progress_weight * progress_loss + cfg.success_weight * success_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step == cfg.pretrain_steps - 1 or step % 250 == 0:
                losses = {"action_mse": action_loss.item(), "progress_mse": progress_loss.item(),
                          "success_bce": success_loss.item()}
                log.info("task encoder pretraining step %d/%d: %s", step + 1, cfg.pretrain_steps,
                         {k: round(v, 4) for k, v in losses.items()})
    finally:
        for camera in cameras.values():
            camera.freeze_backbone(True)
            camera.zero_grad(set_to_none=True)
    losses["seconds"] = time.monotonic() - t0
    losses["frames"] = float(n)
    return losses
