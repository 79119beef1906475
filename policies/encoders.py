"""Observation encoders: a flat observation dict -> one feature vector per sample.

``state`` (float32 ``(N, S)``) is standardised with a per-dimension mean/std (persistent buffers, identity until
:meth:`ObservationEncoder.set_state_normalization` sets them, e.g. from the demonstrations; they travel with the
weights) and then feeds the policy/critic MLPs directly. Every
``images/<cam>`` key (uint8 ``(N, H, W, 3)``) gets its own small conv encoder in the DrQ/RLPD/SERL style:
4 conv layers (3x3, 32 channels, first one stride 2), a linear bottleneck, LayerNorm and tanh. Images stay
uint8 until they are on the device, where they are normalised to [-0.5, 0.5]. Random-shift augmentation
(pad 4 with edge replication, then a random crop back to HxW) is applied only when asked (training).
Features are fused by concatenation: ``[state, cam_0 features, cam_1 features, ...]``.

``camera_factory`` swaps the per-camera encoder for a frozen one (:mod:`robot_rl.policies.frozen_encoders`):
then :attr:`ObservationEncoder.frozen_cameras` is non-empty, replay stores each frame's embedding under
``embed/<cam>`` (:meth:`ObservationEncoder.replay_spec`) and :meth:`forward` runs only the trainable head on it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from robot_rl.specs import IMAGE_PREFIX, ObsSpec


def random_shift(images: torch.Tensor, pad: int) -> torch.Tensor:
    """DrQ random shift on uint8 ``(N, H, W, C)`` images, one integer shift per sample in ``[-pad, pad]``.

    Clamping the shifted pixel indices to the image is exactly "replicate-pad by ``pad`` then crop HxW at a
    random offset", without materialising the padded copy, and it works on uint8 (no float copy first).
    """
    n, height, width, _ = images.shape
    device = images.device
    shift = torch.randint(-pad, pad + 1, (n, 2), device=device)  # (N, 2): row and column offsets
    rows = (torch.arange(height, device=device)[None, :] + shift[:, :1]).clamp_(0, height - 1)  # (N, H)
    cols = (torch.arange(width, device=device)[None, :] + shift[:, 1:]).clamp_(0, width - 1)  # (N, W)
    batch_index = torch.arange(n, device=device)[:, None, None]  # (N, 1, 1)
    return images[batch_index, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)


class CameraEncoder(nn.Module):
    """One camera: uint8 ``(N, H, W, 3)`` -> float ``(N, feature_dim)`` in [-1, 1]."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int = 32, num_layers: int = 4,
                 feature_dim: int = 50) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a camera encoder needs at least one conv layer, got {num_layers}")
        height, width, in_channels = image_shape
        layers: list[nn.Module] = []
        for i in range(num_layers):
            # The first conv halves the resolution (cheap on CPU), the rest keep stride 1 as in DrQ.
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, stride=2 if i == 0 else 1),
                       nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            conv_out = self.convs(torch.zeros(1, in_channels, height, width)).numel()
        # Bottleneck as in DrQ/SAC-AE: LayerNorm + tanh keeps the critic's input well scaled.
        self.projection = nn.Sequential(nn.Linear(conv_out, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.output_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # (N, H, W, 3) uint8 -> (N, 3, H, W) float in [-0.5, 0.5]; the permute yields channels-last strides,
        # which oneDNN/cuDNN convolutions consume without a copy.
        x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
        return self.projection(self.convs(x).flatten(1))  # (N, feature_dim)


class ObservationEncoder(nn.Module):
    """Obs dict -> ``(N, output_dim)`` features. Has no parameters for state-only observations."""

    def __init__(self, obs_spec: ObsSpec, conv_channels: int = 32, conv_layers: int = 4,
                 image_feature_dim: int = 50, augment_pad: int = 4,
                 camera_factory: Callable[[tuple[int, int, int]], nn.Module] | None = None) -> None:
        super().__init__()
        state = obs_spec.fields.get("state")
        if state is not None and len(state.shape) != 1:
            raise ValueError(f"obs['state'] must be a vector, got shape {state.shape}")
        self.state_dim = state.shape[0] if state is not None else 0
        self.image_keys = obs_spec.image_keys
        # Frozen encoders embed each frame once (no per-update image augmentation: the embedding is fixed).
        self.augment_pad = augment_pad if camera_factory is None else 0
        # ModuleDict names may not contain '.', camera names might: keep an explicit key -> module-name map.
        self._module_names = {key: key[len(IMAGE_PREFIX):].replace(".", "_") for key in self.image_keys}
        make = camera_factory or (lambda shape: CameraEncoder(shape, conv_channels, conv_layers, image_feature_dim))
        self.cameras = nn.ModuleDict({self._module_names[key]: make(obs_spec.fields[key].shape)
                                      for key in self.image_keys})
        self.output_dim = self.state_dim + sum(cam.output_dim for cam in self.cameras.values())
        # image key -> its frozen camera encoder (empty for the end-to-end DrQ encoder).
        self.frozen_cameras = {key: self.cameras[self._module_names[key]] for key in self.image_keys
                               if camera_factory is not None}
        self._embed_keys = {key: "embed/" + key[len(IMAGE_PREFIX):] for key in self.image_keys}
        if self.output_dim == 0:
            raise ValueError(f"observation spec {obs_spec.keys()} has neither 'state' nor images")
        # Persistent: part of state_dict, so actors receive the same normalisation with the weights.
        self.register_buffer("state_mean", torch.zeros(self.state_dim))  # (S,)
        self.register_buffer("state_std", torch.ones(self.state_dim))  # (S,)

    # Normalised state entries are clipped to this range: a state far outside the data the statistics came
    # from (a dimension that never moved in the demos) must not blow up the MLP inputs.
    STATE_CLIP = 10.0

    def set_state_normalization(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-2) -> None:
        """Standardise ``state`` with ``mean``/``std`` ``(S,)``; ``std`` is floored at ``min_std`` so dimensions
        that barely moved in the data (orientation, a still joint) are not amplified into noise."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (self.state_dim,) or std.shape != (self.state_dim,):
            raise ValueError(f"normalisation needs shapes ({self.state_dim},), got {tuple(mean.shape)}, "
                             f"{tuple(std.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("state normalisation statistics contain NaN/inf")
        with torch.no_grad():
            self.state_mean.copy_(mean)
            self.state_std.copy_(std.clamp(min=min_std))

    def replay_spec(self, obs_spec: ObsSpec, keep_frames: Sequence[str] = ()) -> ObsSpec:
        """What replay stores for ``obs_spec``: frames as frozen embeddings when the cameras are frozen (the
        cameras in ``keep_frames`` keep their frames too, for a learned reward model)."""
        if not self.frozen_cameras:
            return obs_spec
        from robot_rl.policies.frozen_encoders import replay_obs_spec

        return replay_obs_spec(obs_spec, {k: c.embedding_shape for k, c in self.frozen_cameras.items()},
                               keep_frames)

    @property
    def has_images(self) -> bool:
        return bool(self.image_keys)

    def augment(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Randomly shifted copies of the images (independently per sample and camera); state untouched.

        Separate from :meth:`forward` so that SAC can feed one augmented ``next_obs`` to both the online and
        the target encoder.
        """
        if not self.image_keys or self.augment_pad <= 0:
            return obs
        return {k: random_shift(v, self.augment_pad) if k in self._module_names else v for k, v in obs.items()}

    def forward(self, obs: dict[str, torch.Tensor], augment: bool = False) -> torch.Tensor:
        if augment:
            obs = self.augment(obs)
        parts: list[torch.Tensor] = []
        if self.state_dim:
            state = (obs["state"].float() - self.state_mean) / self.state_std  # (N, S)
            parts.append(state.clamp(-self.STATE_CLIP, self.STATE_CLIP))
        for key in self.image_keys:
            camera = self.cameras[self._module_names[key]]
            embedded = obs.get(self._embed_keys[key]) if self.frozen_cameras else None
            # (N, *E) embedding from replay -> trainable head only; else (N, H, W, 3) uint8 -> (N, feature_dim)
            parts.append(camera.head(embedded) if embedded is not None else camera(obs[key]))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (N, output_dim)
