"""Image backbones for frozen pixel encoders, and the heads that pool their feature maps.

- :class:`ResNetTrunk`: torchvision's ResNet layout (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
  ``layerK.0.downsample.0``), so a ``torchvision.models.resnet18().state_dict()`` saved with ``torch.save``
  loads as is (its ``fc.*`` classifier is ignored). ``resnet18`` = BasicBlocks ``[2, 2, 2, 2]``;
  ``resnet10`` = ``[1, 1, 1, 1]`` (the HIL-SERL/SERL ResNet-10 shape). torchvision itself is not needed.
- :func:`load_backbone_weights`: a local weights file only (nothing is ever downloaded); a file that does not fit
  the named architecture is refused with a message naming the file and that architecture.
- Heads over a ``(N, C, h, w)`` feature map: :class:`SpatialSoftmax` (expected image coordinates of K learned
  keypoints, Levine et al. 2016) and :class:`LearnedSpatialPooling` (HIL-SERL's learned spatial embeddings:
  a learned ``(h, w)`` weighting per channel and output, instead of one global average).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

RESNET_BLOCKS = {"resnet10": (1, 1, 1, 1), "resnet18": (2, 2, 2, 2)}
"""Architectures a ``frozen`` encoder can load: BasicBlocks per stage (torchvision key layout)."""
_WIDTHS = (64, 128, 256, 512)
# ImageNet statistics: torchvision-trained weights expect inputs standardised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneWeightsError(ValueError):
    """A weights file that does not match the configured backbone architecture."""


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names, so state-dict keys match)."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetTrunk(nn.Module):
    """ResNet without its classifier: uint8 ``(N, H, W, 3)`` -> feature map ``(N, C, H / s, W / s)``.

    ``stages`` (1-4) keeps ``layer1..layer<stages>``: stride ``s`` = 4, 8, 16, 32 and ``C`` = 64, 128, 256, 512.
    Inputs are standardised with the ImageNet statistics inside (weights trained by torchvision expect it).
    """

    def __init__(self, arch: str, stages: int = 4) -> None:
        super().__init__()
        if arch not in RESNET_BLOCKS:
            raise ValueError(f"unknown backbone architecture {arch!r}; known: {sorted(RESNET_BLOCKS)}")
        if not 1 <= stages <= 4:
            raise ValueError(f"backbone stages must be in 1..4, got {stages}")
        self.arch, self.stages = arch, stages
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (blocks, width) in enumerate(zip(RESNET_BLOCKS[arch][:stages], _WIDTHS)):
            layer = [BasicBlock(inplanes if b == 0 else width, width, (1 if i == 0 else 2) if b == 0 else 1)
                     for b in range(blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            inplanes = width
        self.out_channels = inplanes
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W) in [0, 1]
        x = self.maxpool(self.relu(self.bn1(self.conv1((x - self.mean) / self.std))))
        for i in range(self.stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x  # (N, C, H / s, W / s)


def load_backbone_weights(trunk: ResNetTrunk, path: str | Path) -> None:
    """Load a local torchvision-layout state dict into ``trunk``; refuse a file that does not fit it.

    Accepted: a ``state_dict`` (or a dict holding one under ``state_dict``/``model``) with every key of the kept
    stages at the right shape; keys of unused stages and the ``fc`` classifier are ignored.
    """
    path = Path(path)
    expected = f"{trunk.arch} (torchvision ResNet layout, {trunk.stages} stages)"
    if not path.is_file():
        raise BackboneWeightsError(f"backbone weights file {path} does not exist (expected a {expected} "
                                   f"state dict saved with torch.save; nothing is downloaded at run time)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        first_line = (str(exc).splitlines() or [""])[0][:160]
        raise BackboneWeightsError(f"backbone weights file {path} is not a torch state dict "
                                   f"({type(exc).__name__}: {first_line}); expected {expected}") from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise BackboneWeightsError(f"backbone weights file {path} holds a {type(state).__name__}, expected a "
                                   f"{expected} state dict")
    own = trunk.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or wrong:
        detail = (f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}" if missing else "") + \
                 ("; " if missing and wrong else "") + (f"wrong shapes {wrong[:3]}" if wrong else "")
        raise BackboneWeightsError(f"backbone weights file {path} does not match the expected architecture "
                                   f"{expected}: {detail}")
    trunk.load_state_dict({k: state[k] for k in own}, strict=True)


class SpatialSoftmax(nn.Module):
    """``(N, C, h, w)`` -> ``(N, 2K)``: a 1x1 conv to K keypoint maps, a softmax over positions, and each map's
    expected ``(x, y)`` in [-1, 1]. Keeps *where* things are, which global pooling throws away."""

    def __init__(self, in_channels: int, height: int, width: int, keypoints: int) -> None:
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, keypoints, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), persistent=False)  # (hw, 2)
        self.output_dim = 2 * keypoints

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        logits = self.keypoints(feature_map).flatten(2)  # (N, K, hw)
        return (logits.softmax(-1) @ self.grid).flatten(1)  # (N, K, 2) -> (N, 2K)


class LearnedSpatialPooling(nn.Module):
    """HIL-SERL's learned spatial embeddings: ``(N, C, h, w)`` -> ``(N, C * K)``, output ``[c, k]`` =
    ``sum_{h, w} F[c, h, w] * W[c, k, h, w]`` (a learned spatial weighting per channel and output)."""

    def __init__(self, in_channels: int, height: int, width: int, features_per_channel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_channels, features_per_channel, height * width))  # (C, K, hw)
        nn.init.kaiming_uniform_(self.weight.view(-1, height * width), a=5 ** 0.5)
        self.output_dim = in_channels * features_per_channel

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        flat = feature_map.flatten(2)  # (N, C, hw)
        return torch.einsum("ncp,ckp->nck", flat, self.weight).flatten(1)  # (N, C * K)
