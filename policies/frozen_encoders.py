"""Frozen camera encoders: a frozen backbone whose output is computed once per frame, plus a small trainable head.

A :class:`FrozenCameraEncoder` splits one camera's encoder in two:

- ``embed(images)``: the frozen backbone, uint8 ``(N, H, W, 3)`` -> embedding ``(N, *embedding_shape)``. The
  learner runs it once per frame when the frame arrives and stores the embedding in replay under
  ``embed/<camera>`` (:func:`replay_obs_spec`, :func:`embed_numpy_obs`); updates never touch the backbone.
- ``head(embedding)``: trainable (by the critic loss, as the DrQ encoder is), embedding -> ``(N, feature_dim)``.

Actors and evaluation run both halves on raw frames (``forward``). Two backbones:

- ``frozen`` (:class:`ResNetCameraEncoder`): torchvision-layout ResNet-18 / ResNet-10 loaded from a local
  weights file (``policy.backbone.weights``), BatchNorm in eval mode; embedding = its feature map ``(C, h, w)``;
  head = spatial softmax or HIL-SERL's learned spatial pooling, then Linear + LayerNorm + tanh. The backbone is
  not part of the policy's ``state_dict``: every process loads it from the same file, so 11M frozen parameters
  never travel with the weights.
- ``task`` (:class:`TaskCameraEncoder`): a small conv net + spatial softmax (keypoints ``(2K,)``) pretrained on
  the task's own demonstrations (:mod:`robot_rl.policies.task_pretrain`), then frozen. It is small and learned per
  run, so it is part of the ``state_dict`` (checkpoints, weights to actors).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from robot_rl.config import ConfigNode
from robot_rl.policies.backbones import LearnedSpatialPooling, ResNetTrunk, SpatialSoftmax, load_backbone_weights
from robot_rl.specs import IMAGE_PREFIX, ArraySpec, ObsSpec
from robot_rl.types import Batch

EMBED_PREFIX = "embed/"
"""Replay key prefix of a camera's frozen-backbone embedding: ``images/front`` -> ``embed/front``."""


@dataclass
class BackboneConfig(ConfigNode):
    """The pretrained backbone of ``policy.encoder=frozen`` (weights from a local file, never downloaded)."""

    arch: str = "resnet18"
    """``resnet18`` (torchvision's layout: ``torch.save(torchvision.models.resnet18(weights=...).state_dict(),
    path)``) or ``resnet10`` (BasicBlocks [1, 1, 1, 1], HIL-SERL's ResNet-10 shape, same key names)."""
    weights: str = ""
    """Local state-dict file for ``arch``; required. A file of another architecture is refused."""
    stages: int = 4
    """ResNet stages kept (1-4): the embedding is the feature map after ``layer<stages>`` (stride 4 * 2^(s-1))."""
    pooling: str = "spatial_softmax"
    """Trainable head over the feature map: ``spatial_softmax`` (keypoint coordinates) or ``learned`` (HIL-SERL's
    learned spatial embeddings)."""
    keypoints: int = 32
    """Keypoints of the spatial softmax head."""
    features_per_channel: int = 8
    """Outputs per channel of the ``learned`` pooling head (HIL-SERL: 8)."""


@dataclass
class TaskEncoderConfig(ConfigNode):
    """The ``policy.encoder=task`` backbone and how it is pretrained on the task's demonstrations."""

    channels: int = 32
    """Channels of each of its 3 conv layers (5x5 stride 2, 3x3 stride 2, 3x3 stride 1: a 64 px image gives a
    16x16 map)."""
    keypoints: int = 16
    """Spatial-softmax keypoints per camera: the frozen embedding is their ``(x, y)``, ``2 * keypoints`` floats."""
    pretrain_steps: int = 1500
    """Gradient steps of the pretraining on the demos (learner, fresh runs only)."""
    batch_size: int = 64
    """Demo frames per pretraining step."""
    lr: float = 1e-3
    """Adam learning rate of the pretraining."""
    augment_pad: int = 4
    """Random-shift augmentation (pixels) of the pretraining frames; 0 disables it."""
    progress_weight: float = 1.0
    """Weight of the time/progress target (step / episode length) next to the action target."""
    success_weight: float = 0.5
    """Weight of the success target (the recorded reward > 0 of that step, a robot's success label)."""


class FrozenCameraEncoder(nn.Module):
    """``forward(images) = head(embed(images))``; ``embed`` is frozen and runs without gradients."""

    embedding_shape: tuple[int, ...]
    output_dim: int

    def embed(self, images: torch.Tensor) -> torch.Tensor:  # (N, H, W, 3) uint8 -> (N, *embedding_shape)
        raise NotImplementedError

    def head(self, embedding: torch.Tensor) -> torch.Tensor:  # (N, *embedding_shape) -> (N, output_dim)
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            embedding = self.embed(images)
        return self.head(embedding)


def _bottleneck(in_dim: int, feature_dim: int) -> nn.Sequential:
    """Linear + LayerNorm + tanh, as the DrQ encoder's projection: keeps the critic's input well scaled."""
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


class ResNetCameraEncoder(FrozenCameraEncoder):
    """Frozen ResNet from a local file + trainable pooling head (``policy.encoder=frozen``)."""

    def __init__(self, image_shape: tuple[int, int, int], cfg: BackboneConfig, feature_dim: int) -> None:
        super().__init__()
        if not cfg.weights:
            raise ValueError(f"policy.encoder=frozen needs policy.backbone.weights: a local {cfg.arch} state-dict "
                             f"file (weights are never downloaded at run time)")
        trunk = ResNetTrunk(cfg.arch, cfg.stages)
        load_backbone_weights(trunk, cfg.weights)
        trunk.eval().requires_grad_(False)
        # Kept outside the module tree: not in parameters() (no optimizer, no Polyak copy) nor in state_dict()
        # (weights sent to actors and checkpoints stay small; each process loads the same file).
        self._trunk = (trunk,)
        height, width = image_shape[:2]
        with torch.no_grad():
            out = trunk(torch.zeros(1, height, width, 3, dtype=torch.uint8))
        self.embedding_shape = tuple(out.shape[1:])  # (C, h, w)
        c, h, w = self.embedding_shape
        if cfg.pooling == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(c, h, w, cfg.keypoints)
        elif cfg.pooling == "learned":
            self.pool = LearnedSpatialPooling(c, h, w, cfg.features_per_channel)
        else:
            raise ValueError(f"policy.backbone.pooling must be 'spatial_softmax' or 'learned', got {cfg.pooling!r}")
        self.projection = _bottleneck(self.pool.output_dim, feature_dim)
        self.output_dim = feature_dim

    def _apply(self, fn: Any, recurse: bool = True) -> "ResNetCameraEncoder":
        super()._apply(fn, recurse)
        self._trunk[0]._apply(fn, recurse)  # .to(device) / .float() reach the hidden trunk too
        return self

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._trunk[0](images)  # (N, C, h, w); the trunk stays in eval mode (frozen BatchNorm)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pool(embedding.float()))


class TaskCameraEncoder(FrozenCameraEncoder):
    """Small conv net + spatial softmax pretrained on the task's demos, then frozen (``policy.encoder=task``)."""

    def __init__(self, image_shape: tuple[int, int, int], cfg: TaskEncoderConfig, feature_dim: int) -> None:
        super().__init__()
        height, width, channels = image_shape
        c = cfg.channels
        self.convs = nn.Sequential(
            nn.Conv2d(channels, c, 5, 2, 2), nn.ReLU(),  # 64 -> 32
            nn.Conv2d(c, c, 3, 2, 1), nn.ReLU(),  # 32 -> 16
            nn.Conv2d(c, c, 3, 1, 1), nn.ReLU())  # 16 -> 16
        with torch.no_grad():
            _, _, h, w = self.convs(torch.zeros(1, channels, height, width)).shape
        self.keypoints = SpatialSoftmax(c, h, w, cfg.keypoints)
        self.embedding_shape = (self.keypoints.output_dim,)
        self.projection = _bottleneck(self.keypoints.output_dim, feature_dim)
        self.output_dim = feature_dim
        self.freeze_backbone(True)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.convs.parameters()) + list(self.keypoints.parameters())

    def freeze_backbone(self, frozen: bool) -> None:
        """Frozen (default) for RL; the pretraining unfreezes it while it trains."""
        for p in self.backbone_parameters():
            p.requires_grad_(not frozen)

    def keypoints_of(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable backbone (pretraining): uint8 ``(N, H, W, 3)`` -> ``(N, 2K)``."""
        x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
        return self.keypoints(self.convs(x))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.keypoints_of(images)

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.projection(embedding)


def make_camera_encoder(kind: str, image_shape: tuple[int, int, int], feature_dim: int,
                        backbone: BackboneConfig, task: TaskEncoderConfig) -> FrozenCameraEncoder:
    if kind == "frozen":
        return ResNetCameraEncoder(image_shape, backbone, feature_dim)
    if kind == "task":
        return TaskCameraEncoder(image_shape, task, feature_dim)
    raise ValueError(f"no frozen camera encoder of kind {kind!r} (frozen or task)")


def embed_key(image_key: str) -> str:
    return EMBED_PREFIX + image_key[len(IMAGE_PREFIX):]


def replay_obs_spec(obs_spec: ObsSpec, embedding_shapes: dict[str, tuple[int, ...]],
                    keep_frames: Sequence[str] = ()) -> ObsSpec:
    """The spec replay stores: ``images/<cam>`` replaced by ``embed/<cam>`` float32 ``embedding_shape``; the
    cameras in ``keep_frames`` keep their frames too (a learned reward model reads them)."""
    fields = {k: s for k, s in obs_spec.fields.items() if k not in embedding_shapes or k in keep_frames}
    fields.update({embed_key(k): ArraySpec(tuple(shape), "float32") for k, shape in embedding_shapes.items()})
    return ObsSpec(fields)


@torch.no_grad()
def embed_numpy_obs(cameras: dict[str, FrozenCameraEncoder], obs: dict[str, np.ndarray], device: Any,
                    chunk: int = 256) -> dict[str, np.ndarray]:
    """numpy obs ``{images/<cam>: (N, H, W, 3) uint8, ...}`` -> ``{embed/<cam>: (N, *E) float32, ...}`` (other
    keys unchanged), in batches of ``chunk`` frames."""
    out = {k: v for k, v in obs.items() if k not in cameras}
    for key, camera in cameras.items():
        images = obs[key]
        parts = [camera.embed(torch.from_numpy(np.ascontiguousarray(images[i:i + chunk])).to(device))
                 for i in range(0, len(images), chunk)]
        out[embed_key(key)] = torch.cat(parts).float().cpu().numpy() if parts else \
            np.zeros((0, *camera.embedding_shape), np.float32)
    return out


def embed_batch(cameras: dict[str, FrozenCameraEncoder], batch: Batch, device: Any,
                keep_frames: Sequence[str] = ()) -> tuple[Batch, int]:
    """A numpy batch with every ``images/<cam>`` of ``cameras`` replaced by ``embed/<cam>`` (those in
    ``keep_frames`` kept beside it), and the number of frames embedded. Each frame is embedded once: the ``obs`` of a row that continues the previous row's episode
    (same actor and episode, next step) is that row's ``next_obs``, so only episode (and chunk) starts embed an
    ``obs`` frame of their own; both rows then hold the identical embedding."""
    n = len(batch)
    actors = batch.actor_id or ("",) * n
    cont = np.zeros(n, bool)  # (N,): obs[i] is next_obs[i - 1]
    if n > 1:
        cont[1:] = (batch.episode_id[1:] == batch.episode_id[:-1]) & (batch.step[1:] == batch.step[:-1] + 1) \
            & np.array([a == b for a, b in zip(actors[1:], actors[:-1])])
    fresh, cont_idx = np.flatnonzero(~cont), np.flatnonzero(cont)
    images = {k: np.concatenate([batch.next_obs[k], batch.obs[k][fresh]]) for k in cameras}  # (N + F, H, W, 3)
    embedded = embed_numpy_obs(cameras, images, device)
    obs = {k: v for k, v in batch.obs.items() if k not in cameras or k in keep_frames}
    next_obs = {k: v for k, v in batch.next_obs.items() if k not in cameras or k in keep_frames}
    for key in cameras:
        e = embedded[embed_key(key)]  # (N + F, *E)
        nxt = e[:n]
        cur = np.empty_like(nxt)
        cur[fresh] = e[n:]
        cur[cont_idx] = nxt[cont_idx - 1]
        obs[embed_key(key)], next_obs[embed_key(key)] = cur, nxt
    return dataclasses.replace(batch, obs=obs, next_obs=next_obs), n + len(fresh)
