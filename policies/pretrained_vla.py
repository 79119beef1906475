"""Adapter for a HF-format pretrained vision-language backbone as a VLA (registered as ``pretrained_vla``).

It loads a SmolVLM-family checkpoint (``model_type: smolvlm`` / ``idefics3``: SigLIP vision encoder, pixel-shuffle
connector, Llama-style language model; SmolVLA's VLM is ``SmolVLM2-500M-Video-Instruct``) with ``transformers``
from a *local* directory (``policy.path``: ``config.json``, ``*.safetensors``, tokenizer files). Nothing is
downloaded: ``HF_HUB_OFFLINE=1`` and ``local_files_only=True``; a missing directory or missing weight is an error.

How the backbone is used follows SmolVLA's prefix (lerobot ``smolvlm_with_expert.py``): per camera, the image is
resized to the vision encoder's size and scaled to [-1, 1], encoded by the vision model and the connector, and the
tokens are multiplied by ``sqrt(hidden)``; the task text is tokenized (``"\\n"``-terminated) and embedded (also
``* sqrt(hidden)``); the standardised state is projected to one token. ``[images, text, state]`` go through the
first ``num_vlm_layers`` decoder layers (SmolVLA keeps 16 of 32). The last (state) token's final hidden state, which
under the causal mask attends to every image and text token, is projected to ``feature_dim`` and conditions our flow
(or diffusion) action head over chunks.

What this is NOT: SmolVLA's action expert (a second, smaller transformer interleaving cross-attention to the VLM's
per-layer keys/values, chunks of 50) is replaced by our FiLM-conditioned denoiser on one pooled feature, so
lerobot's SmolVLA/pi0 *action-expert* weights cannot be loaded; only the VLM backbone's weights are pretrained.
``lerobot`` itself is not a dependency (installing it replaces the CPU torch build).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.config import store
from robot_rl.policies.diffusion import DiffusionPolicy
from robot_rl.policies.flow import FlowPolicy
from robot_rl.policies.vla import LanguageConditioned, LanguagePolicyConfig, make_language_policy
from robot_rl.registry import POLICIES
from robot_rl.specs import ActionSpec, ObsSpec


@dataclass
class PretrainedVLAConfig(LanguagePolicyConfig):
    name: str = "pretrained_vla"
    path: str = ""
    """Local directory of a HF-format SmolVLM/Idefics3 checkpoint (config.json, safetensors, tokenizer); required."""
    num_vlm_layers: int = 0
    """Keep the first N decoder layers of the language model (SmolVLA: 16); 0 keeps all."""
    freeze_vision: bool = True
    """Freeze the vision encoder and connector (SmolVLA's default)."""
    freeze_language: bool = False
    """Also freeze the language model (then only the state projection, readout and action head learn)."""
    max_text_tokens: int = 48
    """Task-text token budget (longer instructions are truncated)."""
    feature_dim: int = 256
    """Size of the pooled feature the action head is conditioned on."""


store("policy", "pretrained_vla_schema", PretrainedVLAConfig)


def load_backbone(path: str):
    """(SmolVLM/Idefics3 base model, tokenizer) from a local directory; never downloads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    root = Path(path)
    if not path or not (root / "config.json").is_file():
        raise FileNotFoundError(f"policy.path={path!r} is not a local HF checkpoint directory (config.json, "
                                "*.safetensors, tokenizer files): download it yourself, e.g. "
                                "`hf download HuggingFaceTB/SmolVLM2-500M-Video-Instruct --local-dir DIR`")
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(str(root), local_files_only=True, output_loading_info=True,
                                            torch_dtype=torch.float32)
    if info.get("missing_keys"):
        raise RuntimeError(f"{root}: weights missing from the checkpoint: {sorted(info['missing_keys'])[:8]}")
    for part in ("vision_model", "connector", "text_model"):
        if not hasattr(model, part):
            raise TypeError(f"{root} holds a {type(model).__name__}, not a SmolVLM/Idefics3 model (no .{part})")
    return model, AutoTokenizer.from_pretrained(str(root), local_files_only=True)


class PretrainedVLMEncoder(nn.Module):
    """``(obs, token ids (N, L) padded with -1)`` -> ``(N, feature_dim)`` through the pretrained VLM prefix."""

    STATE_CLIP = 10.0

    def __init__(self, cfg: PretrainedVLAConfig, obs_spec: ObsSpec) -> None:
        super().__init__()
        self.backbone, self.tokenizer = load_backbone(cfg.path)
        text = self.backbone.text_model
        layers = len(text.layers)
        if cfg.num_vlm_layers:
            if not 1 <= cfg.num_vlm_layers <= layers:
                raise ValueError(f"num_vlm_layers must be in [1, {layers}], got {cfg.num_vlm_layers}")
            text.layers = text.layers[:cfg.num_vlm_layers]  # as SmolVLA: drop the top of the language model
            text.config.num_hidden_layers = cfg.num_vlm_layers
        self.backbone.vision_model.requires_grad_(not cfg.freeze_vision)
        self.backbone.connector.requires_grad_(not cfg.freeze_vision)
        text.requires_grad_(not cfg.freeze_language)
        hidden = text.config.hidden_size
        self.hidden = hidden
        self.image_size = int(self.backbone.config.vision_config.image_size)
        state = obs_spec.fields.get("state")
        self.state_dim = state.shape[0] if state is not None else 0
        self.image_keys = obs_spec.image_keys
        if not self.image_keys:
            raise ValueError("the pretrained VLA needs at least one camera (images/<name> observations)")
        self.max_text_tokens = cfg.max_text_tokens
        # The state token; a learned token stands in for it when the env has no state vector.
        self.state_proj = nn.Linear(self.state_dim, hidden) if self.state_dim else None
        self.state_token = None if self.state_dim else nn.Parameter(torch.zeros(1, 1, hidden))
        self.out = nn.Sequential(nn.Linear(hidden, cfg.feature_dim), nn.LayerNorm(cfg.feature_dim))
        self.output_dim = cfg.feature_dim
        self.register_buffer("state_mean", torch.zeros(self.state_dim))  # (S,)
        self.register_buffer("state_std", torch.ones(self.state_dim))  # (S,)
        self.register_buffer("task_codes", torch.full((cfg.max_tasks, cfg.max_text_tokens), -1, dtype=torch.long))
        self.register_buffer("num_tasks", torch.zeros((), dtype=torch.long))

    def text_code(self, texts: Sequence[str]) -> torch.Tensor:
        """Task texts -> token ids ``(T, max_text_tokens)``, -1 where padded (SmolVLA appends a newline)."""
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"task text must be a non-empty string, got {t!r}")
        tok = self.tokenizer([t.strip() + "\n" for t in texts], padding="max_length", truncation=True,
                             max_length=self.max_text_tokens, return_tensors="pt")
        ids = tok["input_ids"].masked_fill(tok["attention_mask"] == 0, -1)
        return ids.to(self.task_codes.device)

    def set_state_normalization(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-2) -> None:
        if mean.shape != (self.state_dim,) or not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError(f"normalisation needs finite ({self.state_dim},) statistics, got {tuple(mean.shape)}")
        with torch.no_grad():
            self.state_mean.copy_(mean)
            self.state_std.copy_(std.clamp(min=min_std))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> image tokens ``(N, P, hidden)`` (vision model + connector, * sqrt(hidden))."""
        x = images.permute(0, 3, 1, 2).float().div(255.0)  # (N, 3, H, W) in [0, 1]
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = x * 2.0 - 1.0  # SmolVLM's processor: mean 0.5, std 0.5
        dtype = next(self.backbone.vision_model.parameters()).dtype
        feats = self.backbone.vision_model(pixel_values=x.to(dtype)).last_hidden_state  # (N, patches, vision)
        return self.backbone.connector(feats).float() * math.sqrt(self.hidden)  # (N, P, hidden)

    def forward(self, obs: dict[str, torch.Tensor], ids: torch.Tensor, augment: bool = False) -> torch.Tensor:
        n = ids.shape[0]
        if ids.shape != (n, self.max_text_tokens) or ids.dtype != torch.long:
            raise ValueError(f"expected token ids ({n}, {self.max_text_tokens}) int64, got {tuple(ids.shape)} "
                             f"{ids.dtype}")
        parts, masks = [], []
        for key in self.image_keys:
            images = obs[key]
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[0] != n:
                raise ValueError(f"{key} must be uint8 ({n}, H, W, 3), got {images.dtype} {tuple(images.shape)}")
            tokens = self.embed_images(images)
            parts.append(tokens)
            masks.append(torch.ones(n, tokens.shape[1], dtype=torch.long, device=ids.device))
        text_mask = (ids >= 0).long()  # (N, L)
        embed = self.backbone.text_model.get_input_embeddings()
        parts.append(embed(ids.clamp_min(0)).float() * math.sqrt(self.hidden))  # (N, L, hidden)
        masks.append(text_mask)
        if self.state_proj is not None:
            state = ((obs["state"].float() - self.state_mean) / self.state_std).clamp(-self.STATE_CLIP,
                                                                                      self.STATE_CLIP)
            parts.append(self.state_proj(state).unsqueeze(1))  # (N, 1, hidden)
        else:
            parts.append(self.state_token.expand(n, -1, -1))
        masks.append(torch.ones(n, 1, dtype=torch.long, device=ids.device))
        out = self.backbone.text_model(inputs_embeds=torch.cat(parts, 1), attention_mask=torch.cat(masks, 1),
                                       use_cache=False).last_hidden_state  # (N, P_all + L + 1, hidden)
        feature = self.out(out[:, -1].float())  # (N, feature_dim): the state token, last under the causal mask
        if not torch.isfinite(feature).all():
            raise FloatingPointError("pretrained VLA backbone produced non-finite features")
        return feature


class _PretrainedBuild:
    def build_encoder(self) -> nn.Module:
        return PretrainedVLMEncoder(self.cfg, self.obs_spec)


class FlowPretrainedVLA(LanguageConditioned, _PretrainedBuild, FlowPolicy):
    """Pretrained VLM backbone + flow-matching action head."""


class DiffusionPretrainedVLA(LanguageConditioned, _PretrainedBuild, DiffusionPolicy):
    """Pretrained VLM backbone + diffusion action head."""


@POLICIES.register("pretrained_vla")
def make_pretrained_vla(cfg: PretrainedVLAConfig, obs_spec: ObsSpec, action_spec: ActionSpec):
    return make_language_policy(FlowPretrainedVLA, DiffusionPretrainedVLA, cfg, obs_spec, action_spec)
