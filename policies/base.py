"""The small interface every policy implements: ``reset``, ``act`` / ``act_chunk``, ``loss(batch)``.

Policies are ``torch.nn.Module``s built from ``(config, obs_spec, action_spec)``. Actors receive the learner's
``policy.state_dict()`` and load it into their own copy, so a policy's parameter names are its wire format.
``act`` takes numpy observations exactly as the env produced them (uint8 images, float32 state; unbatched
``(…)`` or batched ``(N, …)``) and returns float32 actions inside the action bounds.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn

from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch

Obs = dict[str, np.ndarray]


class Policy(nn.Module, ABC):
    chunk_size: int = 1
    """Actions produced per inference call (``act_chunk`` returns ``(chunk_size, A)``)."""
    onnx_exportable: bool = False
    """``forward_act`` is all there is to acting (no per-episode state kept in Python) and exports to ONNX, so the
    actor may run it through ONNX Runtime (``actor.inference=onnxruntime``, :mod:`robot_rl.policies.onnx_runtime`)."""

    def __init__(self, obs_spec: ObsSpec, action_spec: ActionSpec) -> None:
        super().__init__()
        self.obs_spec = obs_spec
        self.action_spec = action_spec

    def reset(self) -> None:
        """Forget per-episode state (queued action chunks, recurrent state). Called at every env reset."""

    @abstractmethod
    def forward_act(self, obs: dict[str, torch.Tensor], deterministic: bool) -> torch.Tensor:
        """Batched torch obs -> actions ``(N, A)`` (or ``(N, H, A)`` for chunked policies) in env bounds."""

    @torch.no_grad()
    def act(self, obs: Obs, *, deterministic: bool = False) -> np.ndarray:
        """numpy obs (unbatched or batched ``(N, …)``) -> float32 action ``(A,)`` or ``(N, A)``."""
        batched = obs["state"].ndim == 2 if "state" in obs else next(iter(obs.values())).ndim == 4
        device = next(self.parameters()).device
        tobs = {k: torch.as_tensor(v, device=device).unsqueeze(0) if not batched
                else torch.as_tensor(v, device=device) for k, v in obs.items()}
        out = self.forward_act(tobs, deterministic)
        if out.ndim == 3:  # chunked policy: first action of each chunk
            out = out[:, 0]
        act = out.float().cpu().numpy()
        return act if batched else act[0]

    @torch.no_grad()
    def act_chunk(self, obs: Obs, *, deterministic: bool = False) -> np.ndarray:
        """Unbatched numpy obs -> ``(chunk_size, A)`` actions to execute open-loop."""
        device = next(self.parameters()).device
        tobs = {k: torch.as_tensor(v, device=device).unsqueeze(0) for k, v in obs.items()}
        out = self.forward_act(tobs, deterministic)
        if out.ndim == 2:
            out = out.unsqueeze(1)
        return out[0].float().cpu().numpy()

    @abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor:
        """Behaviour-cloning loss on a torch batch (used for pre-training and as a BC regulariser)."""
