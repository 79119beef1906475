"""One-step distillation of a K-step generative policy (RL-100's consistency-distilled head for fast control).

Consistency distillation (Song et al. 2023) on the teacher's own sampling grid: for a clean chunk ``x0``, noise
``eps`` and a grid index ``i``, noise ``x0`` to ``x_i = noisy(x0, eps, i)``, take one deterministic teacher step
``x_{i+1} = ode_step(x_i, i)``, and train the head so that ``f(x_i, level_i) = sg[f(x_{i+1}, level_{i+1})]``;
the boundary condition ``f(x, 0) = x`` (built into :class:`~robot_rl.policies.heads.OneStepHead`) anchors the
last step to the teacher's output. Because that pure self-consistency signal needs many updates to propagate
from the data end to the noise end, we add a direct term (weight ``direct_weight``) regressing
``f(z, 1)`` onto the teacher's full K-step sample from the same noise ``z``, on training states. The student
is trained on states only; the teacher (encoder + denoiser) stays frozen.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from robot_rl.policies.chunking import ChunkBatch
from robot_rl.policies.generative import GenerativeChunkPolicy


def consistency_loss(policy: GenerativeChunkPolicy, cond: torch.Tensor, x0: torch.Tensor,
                     direct_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss on the one-step head for features ``cond (N, F)`` and normalised clean chunks ``x0 (N, H, A)``."""
    n, k = x0.shape[0], policy.num_steps
    levels = policy.levels
    i = int(torch.randint(0, k, ()))
    eps = torch.randn_like(x0)
    x_i = policy.noisy(x0, eps, i)
    with torch.no_grad():
        x_next = policy.ode_step(x_i, i, cond)
        target = policy.onestep(x_next, levels[i + 1].expand(n), cond)  # == x_next when i + 1 == K
    cd = F.mse_loss(policy.onestep(x_i, levels[i].expand(n), cond), target)
    z = torch.randn_like(x0)
    with torch.no_grad():
        teacher = policy.sample(cond, z)  # (N, H, A)
    direct = F.mse_loss(policy.onestep(z, torch.ones(n, device=z.device), cond), teacher)
    loss = cd + direct_weight * direct
    return loss, {"distill/consistency": float(cd.detach()), "distill/direct": float(direct.detach())}


def distill_one_step(policy: GenerativeChunkPolicy, data: ChunkBatch, steps: int, batch_size: int = 256,
                     lr: float = 1e-3, direct_weight: float = 1.0, seed: int = 0,
                     log: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Train ``policy.onestep`` on ``data`` (torch ChunkBatch on the policy's device) and switch acting to it."""
    gen = torch.Generator().manual_seed(seed)
    policy.onestep.requires_grad_(True)  # an EMA copy arrives with gradients off
    opt = torch.optim.Adam(policy.onestep.parameters(), lr=lr)
    was_training = policy.training
    policy.eval()  # no augmentation: the head must match the teacher on the states it will see
    metrics: dict[str, float] = {}
    for step in range(steps):
        rows = torch.randint(0, len(data), (min(batch_size, len(data)),), generator=gen)
        batch = data.index(rows.to(data.action.device))
        with torch.no_grad():
            cond = policy.features(batch.obs, batch.task_id)
        loss, metrics = consistency_loss(policy, cond, policy.chunk_targets(batch), direct_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite distillation loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log is not None and (step % 200 == 0 or step == steps - 1):
            log(step, metrics)
    policy.use_onestep.fill_(1.0)
    policy.train(was_training)
    return metrics
