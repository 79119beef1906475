"""Soft Actor-Critic with the RLPD design choices as options (registered as ``sac`` and ``rlpd``).

- Critic ensemble of N Q-functions evaluated as *one* batched MLP (weights ``(N, in, out)``, ``baddbmm``), not a
  Python loop over critics; optional LayerNorm after every hidden layer (RLPD).
- REDQ-style target: the min over a random subset of M target critics.
- UTD > 1 inside one :meth:`SAC.update`: the incoming batch is split into ``critic_updates_per_actor_update``
  interleaved minibatches (rows ``i::k``, so each keeps the batch's demo/online mix), the critic takes one
  step on each, then the actor and the temperature take one step (on the last minibatch), as in RLPD.
  The learner should therefore hand in ``batch_size_per_update`` transitions.
- Critic network and value loss are switches: ``critic=mlp|simbav2`` (:mod:`robot_rl.algorithms.critics`,
  :mod:`robot_rl.algorithms.simbav2`) and ``value_loss=mse|hl_gauss`` (:mod:`robot_rl.algorithms.value_heads`).
- Temperature: ``log_alpha`` auto-tuned toward ``target_entropy_per_action_dim * A``.
- Pixels: the policy's encoder is shared with the critic and trained by the critic loss only; the actor sees
  detached features. A Polyak-averaged copy of the encoder feeds the target critic. Random-shift augmentation.
- WSRL-style warm start: :meth:`SAC.load_pretrained` plus ``critic_warmup_updates`` (critic-only updates first).
- BC on demo rows (``bc_weight``) and an offline warm start on the demos (``offline_pretrain_updates``).
- HIL-SERL's discrete gripper (``policy.discrete_gripper``): the policy's grasp critic ``Q(s) -> (N, K)`` is
  trained here by double DQN next to every critic step (own optimizer and Polyak target), plus DQfD's
  large-margin loss on demo rows when BC is on. The continuous critic still sees the full action.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_rl.algorithms.base import Algorithm
from robot_rl.algorithms.critics import EnsembleCritic, EnsembleLinear, build_critic  # noqa: F401  (re-exported)
from robot_rl.algorithms.fast_adam import FastAdam, make_adam, zero_grad
from robot_rl.algorithms.sac_config import RLPDConfig, SACConfig
from robot_rl.algorithms.sac_handwritten import HandWrittenSACUpdate, unsupported_reason
from robot_rl.algorithms.value_heads import make_value_head
from robot_rl.registry import ALGORITHMS
from robot_rl.sequence_replay import SequenceBatch, n_step_rows
from robot_rl.specs import ActionSpec, ObsSpec
from robot_rl.types import Batch


class SAC(Algorithm):
    """SAC/RLPD learner for a policy with ``encoder``, ``sample_from_features`` and ``actor_parameters``."""

    def __init__(self, cfg: SACConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
                 device: str | torch.device = "cpu") -> None:
        for attr in ("encoder", "sample_from_features", "actor_parameters"):
            if not hasattr(policy, attr):
                raise TypeError(f"SAC needs a Gaussian-style policy with .{attr}; got {type(policy).__name__}")
        if cfg.num_critics < 1 or not 1 <= cfg.target_subset_size <= cfg.num_critics:
            raise ValueError(f"need num_critics >= 1 and 1 <= target_subset_size <= num_critics, got "
                             f"{cfg.num_critics}/{cfg.target_subset_size}")
        if cfg.critic_updates_per_actor_update < 1:
            raise ValueError(f"critic_updates_per_actor_update must be >= 1, got {cfg.critic_updates_per_actor_update}")
        if cfg.n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {cfg.n_step}")
        if not cfg.td_target_min < cfg.td_target_max:
            raise ValueError(f"need td_target_min < td_target_max, got [{cfg.td_target_min}, {cfg.td_target_max}]")
        if cfg.actor_q_reduction not in ("min", "mean"):
            raise ValueError(f"actor_q_reduction must be 'min' or 'mean', got {cfg.actor_q_reduction!r}")
        self.cfg = cfg
        self.obs_spec = obs_spec
        self.action_spec = action_spec
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.encoder = policy.encoder
        self.value_head = make_value_head(cfg.value_loss, cfg.value_bins, cfg.value_min, cfg.value_max,
                                          cfg.value_sigma).to(self.device)
        self.critic = build_critic(cfg.critic, self.encoder.output_dim + action_spec.dim, cfg.critic_hidden_dims,
                                   cfg.num_critics, cfg.critic_layer_norm, self.value_head.num_outputs,
                                   cfg.simbav2_mlp_ratio).to(self.device)
        if cfg.value_loss == "hl_gauss":  # start at Q = 0 like the scalar critic, not mid-support
            with torch.no_grad():
                self.critic.output_bias.copy_(self.value_head.initial_logits(0.0).expand_as(self.critic.output_bias))
        # SimbaV2 keeps its weights on the unit sphere: re-project after every critic step.
        self._project = getattr(self.critic, "project_weights", None)
        self._clip_target = math.isfinite(cfg.td_target_min) or math.isfinite(cfg.td_target_max)
        self._scalar_q = cfg.value_loss == "mse"  # fast path: the critic already returns Q (E, N)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        # Trainable encoder parameters only: a frozen backbone (``policy.encoder=frozen|task``) has no optimizer
        # state and no Polyak update; only its head is trained (by the critic loss).
        trainable = [(n, p) for n, p in self.encoder.named_parameters() if p.requires_grad]
        encoder_params = [p for _, p in trainable]
        # A parameter-free (state-only) encoder needs no target copy: reuse its output for both critics.
        self._has_target_encoder = bool(encoder_params)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False) if encoder_params else self.encoder
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        # A discrete gripper is not part of the Gaussian: the entropy target counts continuous dimensions only.
        self.target_entropy = float(cfg.target_entropy_per_action_dim
                                    * getattr(policy, "continuous_dim", action_spec.dim))
        grasp_params = list(policy.grasp_parameters()) if hasattr(policy, "grasp_parameters") else []
        self._grasp = bool(grasp_params)
        if self._grasp:
            self.target_grasp = copy.deepcopy(policy.grasp_critic).requires_grad_(False)
            self.grasp_optimizer = make_adam(grasp_params, cfg.critic_lr)
            self._grasp_online, self._grasp_target = grasp_params, list(self.target_grasp.parameters())
        # Actor and temperature losses touch disjoint parameters, so they share one backward pass and one
        # fused Adam step (two parameter groups with their own learning rates).
        self.actor_optimizer = make_adam([{"params": list(policy.actor_parameters()), "lr": cfg.actor_lr},
                                          {"params": [self.log_alpha], "lr": cfg.temperature_lr}], cfg.actor_lr)
        self.critic_optimizer = make_adam(list(self.critic.parameters()) + encoder_params, cfg.critic_lr)
        # Flat parameter lists for zero_grad (the optimizers' param_groups, without the per-call walk).
        self._actor_opt_params = [p for group in self.actor_optimizer.param_groups for p in group["params"]]
        self._critic_opt_params = list(self.critic_optimizer.param_groups[0]["params"])
        # Their steps go through FastAdam (same fused kernel, without torch.optim's ~0.1 ms of Python per step).
        self._actor_adam, self._critic_adam = FastAdam(self.actor_optimizer), FastAdam(self.critic_optimizer)
        self._online_params = list(self.critic.parameters()) + (encoder_params if self._has_target_encoder else [])
        target_named = dict(self.target_encoder.named_parameters())
        self._target_params = list(self.target_critic.parameters()) + (
            [target_named[n] for n, _ in trainable] if self._has_target_encoder else [])
        self._augment = self.encoder.has_images and getattr(self.encoder, "augment_pad", 0) > 0
        self._float_obs_keys = [k for k, s in obs_spec.fields.items() if s.dtype.startswith("float")]
        self._critic_loss_fn, self._actor_losses_fn = self._critic_loss, self._actor_losses
        if cfg.bf16_matmuls:
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16)
            self._critic_loss_fn, self._actor_losses_fn = autocast(self._critic_loss), autocast(self._actor_losses)
        self.num_updates = 0
        self.num_critic_updates = 0
        self.num_actor_updates = 0
        # Why this configuration uses autograd (None: the hand-written update handles every plain SAC step).
        self.handwritten_fallback = unsupported_reason(self)
        self._handwritten = HandWrittenSACUpdate(self) if self.handwritten_fallback is None else None

    @property
    def sequence_horizon(self) -> int:
        """``n_step > 1``: the learner hands in :class:`SequenceBatch` rows of up to ``n_step`` executed steps."""
        return self.cfg.n_step if self.cfg.n_step > 1 else 0

    @property
    def batch_size_per_update(self) -> int:
        """Transitions one :meth:`update` call expects: ``batch_size`` per critic step x critic steps."""
        return self.cfg.batch_size * self.cfg.critic_updates_per_actor_update

    # ------------------------------------------------------------------ updates
    def _check_finite(self, batch: Batch) -> None:
        tensors = [batch.reward, batch.action] + [batch.obs[k] for k in self._float_obs_keys] \
            + [batch.next_obs[k] for k in self._float_obs_keys]
        # Fast path, one host sync: a sum is NaN/inf when any element is (``isfinite(t).all()`` costs four
        # kernels per tensor). A finite batch whose sum overflows float32 (|values| ~1e34) only costs the
        # exact per-tensor check below, which then finds nothing to report.
        if math.isfinite(torch.stack([t.sum(dtype=torch.float32) for t in tensors]).sum().item()):
            return
        bad = [name for name, t in zip(["reward", "action"] + [f"obs/{k}" for k in self._float_obs_keys]
                                       + [f"next_obs/{k}" for k in self._float_obs_keys], tensors)
               if not bool(torch.isfinite(t).all())]
        if bad:
            raise ValueError(f"batch contains NaN/inf in {bad}")

    def _critic_loss(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
                     next_obs: dict[str, torch.Tensor], not_done: torch.Tensor, alpha: torch.Tensor,
                     members: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TD loss on a minibatch of n (pure: no optimizer); returns (loss, mean Q, detached features (n, F))."""
        cfg = self.cfg
        with torch.no_grad():
            next_features = self.encoder(next_obs)  # (n, F): the actor picks the next action
            next_action, next_log_prob = self.policy.sample_from_features(next_features)  # (n, A), (n,)
            target_features = self.target_encoder(next_obs) if self._has_target_encoder else next_features
            next_value = self._q(self.target_critic(target_features, next_action, members)).amin(0)  # (n,)
            if cfg.backup_entropy:
                next_value = next_value - alpha * next_log_prob
            target = torch.addcmul(reward, not_done, next_value, value=cfg.gamma)  # r + gamma (1 - term) V'
            if self._clip_target:  # (n,) into the returns' achievable range
                target = target.clamp(cfg.td_target_min, cfg.td_target_max)
        features = self.encoder(obs)  # (n, F); carries the encoder's gradient for pixel observations
        out = self.critic(features, action)  # (E, n), or (E, n, bins) for HL-Gauss
        if not self._scalar_q:  # HL-Gauss: cross-entropy to the smoothed target, summed over members
            return self.value_head.loss(out, target), self._q(out.detach()).mean(), features.detach()
        # Sum over members of each member's MSE: every critic gets the gradient it would get alone. One
        # mse_loss kernel (sum over (E, n), then / n) instead of sub/square/mean/sum, forward and backward.
        loss = F.mse_loss(out, target.expand_as(out), reduction="sum") * (0.5 / out.shape[1])
        return loss, out.detach().mean(), features.detach()

    def _q(self, out: torch.Tensor) -> torch.Tensor:
        """Critic output -> Q ``(E, n)`` (identity for scalar critics, expected bin centre for HL-Gauss)."""
        return out if self._scalar_q else self.value_head.value(out)

    @torch.no_grad()
    def q_values(self, batch: Batch) -> np.ndarray:
        """Ensemble-mean Q ``(N,)`` of a numpy batch's (obs, action) rows (the obs keys the critic reads): what
        :class:`robot_rl.value_check.ValueCheck` compares with the returns the policy realised."""
        t = batch.to_torch(self.device)
        return self._q(self.critic(self.encoder(t.obs), t.action)).mean(0).float().cpu().numpy()

    def _critic_step(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
                     next_obs: dict[str, torch.Tensor], not_done: torch.Tensor,
                     alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One TD step + Polyak update; returns (loss, mean Q, detached obs features ``(n, F)``)."""
        cfg = self.cfg
        if self._augment:  # independent shifts for obs and next_obs, as in DrQ
            obs, next_obs = self.encoder.augment(obs), self.encoder.augment(next_obs)
        members = None
        if cfg.target_subset_size < cfg.num_critics:  # REDQ: min over a random subset of target critics
            members = torch.randperm(cfg.num_critics, device=self.device)[:cfg.target_subset_size]
        loss, q_mean, features = self._critic_loss_fn(obs, action, reward, next_obs, not_done, alpha, members)
        zero_grad(self._critic_opt_params)
        loss.backward()
        self._critic_adam.step()
        if self._project is not None:  # SimbaV2: back onto the unit sphere (the target follows by Polyak)
            self._project()
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._online_params, cfg.tau)
        self.num_critic_updates += 1
        return loss.detach(), q_mean, features

    def _grasp_step(self, features: torch.Tensor, action: torch.Tensor, reward: torch.Tensor,
                    next_obs: dict[str, torch.Tensor], not_done: torch.Tensor, demo_mask: torch.Tensor | None,
                    bc_weight: float) -> torch.Tensor:
        """Double-DQN step of the policy's grasp critic (+ large-margin BC on demo rows); ``features (n, F)``
        detached, ``action (n, A)`` env space. Returns the detached loss."""
        grasp = self.policy.grasp_critic
        with torch.no_grad():
            next_features = self.encoder(next_obs)  # (n, F)
            target_features = self.target_encoder(next_obs) if self._has_target_encoder else next_features
            best = grasp(next_features).argmax(-1, keepdim=True)  # (n, 1): online net picks, target evaluates
            next_q = self.target_grasp(target_features).gather(1, best).squeeze(1)  # (n,)
            target = torch.addcmul(reward, not_done, next_q, value=self.cfg.gamma)
        q = grasp(features).gather(1, self.policy.gripper_index(action)[:, None]).squeeze(1)  # (n,)
        loss = 0.5 * (q - target).square().mean()
        if demo_mask is not None and bc_weight > 0:
            margin = self.policy.grasp_bc_loss(features, action)  # (n,)
            loss = loss + bc_weight * (margin * demo_mask).sum() / demo_mask.sum().clamp(min=1.0)
        zero_grad(self._grasp_online)
        loss.backward()
        self.grasp_optimizer.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._grasp_target, self._grasp_online, self.cfg.tau)
        return loss.detach()

    def _bc_loss(self, features: torch.Tensor, demo_action: torch.Tensor, demo_mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the deterministic action on demo rows: ``features (n, F)``, ``demo_action
        (n, A)``, ``demo_mask (n,)`` float 0/1. Zero when the minibatch holds no demo row."""
        mean, _ = self.policy.distribution(features)  # (n, C) pre-tanh; C = A, or A - 1 with a discrete gripper
        c = mean.shape[-1]
        scale, bias = self.policy.action_scale[:c], self.policy.action_bias[:c]
        # Normalised by the action range so the weight means the same whatever the bounds are.
        error = ((torch.tanh(mean) * scale + bias - demo_action[:, :c]) / scale).square().mean(-1)  # (n,)
        return (error * demo_mask).sum() / demo_mask.sum().clamp(min=1.0)

    def _actor_losses(self, features: torch.Tensor, alpha: torch.Tensor, demo_action: torch.Tensor,
                      demo_mask: torch.Tensor | None, bc_only: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(actor + temperature loss, actor loss, mean log-prob, BC loss) on detached features ``(n, F)``."""
        bc = self._bc_loss(features, demo_action, demo_mask) if demo_mask is not None \
            else torch.zeros((), device=features.device)
        if bc_only:  # offline warm start: imitate; the temperature waits for online data
            return bc, bc.detach(), torch.zeros((), device=features.device), bc.detach()
        action, log_prob = self.policy.sample_from_features(features)  # (n, A), (n,)
        q = self._q(self.critic(features, action, detach_weights=True))  # (E, n)
        q_pi = q.amin(0) if self.cfg.actor_q_reduction == "min" else q.mean(0)
        actor_loss = (alpha * log_prob - q_pi).mean()  # alpha is detached here
        if demo_mask is not None:  # without demo rows the BC term is exactly 0: skip its kernels
            actor_loss = actor_loss + self.cfg.bc_weight * bc
        mean_log_prob = log_prob.detach().mean()  # detached: the temperature loss does not move the actor
        temperature_loss = -self.log_alpha * (mean_log_prob + self.target_entropy)
        return actor_loss + temperature_loss, actor_loss.detach(), mean_log_prob, bc.detach()

    def _actor_step(self, features: torch.Tensor, alpha: torch.Tensor, demo_action: torch.Tensor,
                    demo_mask: torch.Tensor | None, bc_only: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Actor + temperature step (one backward, one fused Adam step); returns (actor loss, mean log-prob,
        BC loss)."""
        total, actor_loss, mean_log_prob, bc = self._actor_losses_fn(features, alpha, demo_action, demo_mask,
                                                                     bc_only)
        zero_grad(self._actor_opt_params)
        total.backward()
        self._actor_adam.step()
        self.num_actor_updates += 1
        return actor_loss, mean_log_prob, bc

    def update(self, batch: Batch | SequenceBatch, bc_only: bool = False) -> dict[str, float]:
        """Critic steps on ``critic_updates_per_actor_update`` interleaved minibatches, then one actor step.
        ``bc_only`` (offline warm start) trains the actor by behaviour cloning on the demo rows alone.
        With ``n_step > 1`` the batch is a :class:`SequenceBatch` (n-step TD targets)."""
        bootstrap = None
        if isinstance(batch, SequenceBatch):
            batch, bootstrap = n_step_rows(batch, self.cfg.gamma)
        self._check_finite(batch)
        steps = self.cfg.critic_updates_per_actor_update
        n = len(batch)
        if n < steps:
            raise ValueError(f"batch of {n} cannot be split into {steps} critic minibatches")
        size = n // steps
        alpha = self.log_alpha.detach().exp()
        not_done = torch.logical_not(batch.terminated).float()  # only termination stops bootstrapping
        if bootstrap is not None:  # n-step: gamma * not_done * V' becomes gamma^L (1 - terminated) V'
            not_done = not_done * bootstrap
        reward = batch.reward.float()
        if self._handwritten is not None and not bc_only and self.num_updates >= self.cfg.critic_warmup_updates \
                and (batch.from_demo is None or self.cfg.bc_weight == 0):  # no BC term, no critic-only warm-up
            return self._handwritten.step(batch, reward, not_done, alpha)
        critic_losses, q_means, grasp_losses = [], [], []
        bc_weight = 1.0 if bc_only else self.cfg.bc_weight
        for i in range(steps):
            # Strided, not contiguous: the sampler stacks the demo rows first and the online rows after
            # them, so contiguous slices would give pure-demo and pure-online minibatches (and an actor
            # step on online states only); every i::steps slice keeps the batch's demo/online mix.
            if steps > 1:
                part = slice(i, steps * size, steps)
                obs = {k: v[part] for k, v in batch.obs.items()}
                next_obs = {k: v[part] for k, v in batch.next_obs.items()}
            else:  # UTD 1: the whole batch, no slicing views to create
                part, obs, next_obs = slice(None), batch.obs, batch.next_obs
            loss, q_mean, features = self._critic_step(obs, batch.action[part], reward[part], next_obs,
                                                       not_done[part], alpha)
            critic_losses.append(loss)
            q_means.append(q_mean)
            if self._grasp:
                demo_mask = batch.from_demo[part].float() if batch.from_demo is not None else None
                grasp_losses.append(self._grasp_step(features, batch.action[part], reward[part], next_obs,
                                                     not_done[part], demo_mask, bc_weight))
        values = [torch.stack(critic_losses).mean(), torch.stack(q_means).mean(), alpha]
        names = ["critic_loss", "q_mean", "alpha"]
        if grasp_losses:
            values.append(torch.stack(grasp_losses).mean())
            names.append("grasp_loss")
        if self.num_updates >= self.cfg.critic_warmup_updates or bc_only:
            # The actor reuses the last minibatch's (augmented, detached) features: no second encoder pass.
            last = slice(steps - 1, steps * size, steps) if steps > 1 else slice(None)
            use_bc = batch.from_demo is not None and (bc_only or self.cfg.bc_weight > 0)
            demo_mask = batch.from_demo[last].float() if use_bc else None
            actor_loss, mean_log_prob, bc = self._actor_step(features, alpha, batch.action[last], demo_mask,
                                                             bc_only)
            values += [actor_loss, -mean_log_prob, bc]
            names += ["actor_loss", "entropy", "bc_loss"]
        if not bc_only:  # offline warm-start steps do not spend the online update budget (critic warm-up)
            self.num_updates += 1
        metrics = dict(zip(names, torch.stack(values).tolist()))  # one host transfer for all metrics
        metrics["num_critic_updates"] = float(self.num_critic_updates)
        return metrics

    def pretrain_offline(self, sample_demo_batch: Callable[[], Batch], num_updates: int) -> dict[str, float]:
        """Offline warm start on demo batches (``from_demo`` all true): TD steps for the critic, behaviour
        cloning for the actor. Does not count towards ``num_updates`` (the online UTD budget)."""
        metrics: dict[str, float] = {}
        for _ in range(num_updates):
            metrics = self.update(sample_demo_batch(), bc_only=True)
        return metrics

    def warm_up_critic(self, sample_batch: Callable[[], Batch], num_updates: int) -> dict[str, float]:
        """WSRL-style: ``num_updates`` critic-only steps on batches from ``sample_batch`` (e.g. offline data)."""
        alpha = self.log_alpha.detach().exp()
        loss = torch.zeros((), device=self.device)
        for _ in range(num_updates):
            batch = sample_batch()
            self._check_finite(batch)
            loss, _, _ = self._critic_step(batch.obs, batch.action, batch.reward.float(), batch.next_obs,
                                           torch.logical_not(batch.terminated).float(), alpha)
        return {"critic_loss": float(loss)}

    def sync_target_encoder(self) -> None:
        """Copy the online encoder (weights and buffers: state normalisation, a pretrained frozen backbone) into
        the target encoder. Call after anything changes the encoder outside the updates (the learner does after
        fitting the state normalisation and after pretraining a task encoder)."""
        if self._has_target_encoder:
            self.target_encoder.load_state_dict(self.encoder.state_dict())

    # ------------------------------------------------------------------ weights and checkpoints
    def load_pretrained(self, policy_state_dict: dict[str, torch.Tensor],
                        critic_state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Warm start from a pre-trained policy (and critic); targets restart as copies of the online nets."""
        self.policy.load_state_dict(policy_state_dict)
        if critic_state_dict is not None:
            self.critic.load_state_dict(critic_state_dict)
        with torch.no_grad():
            torch._foreach_copy_(self._target_params, self._online_params)
            if self._grasp:
                torch._foreach_copy_(self._grasp_target, self._grasp_online)

    def policy_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.policy.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "target_encoder": self.target_encoder.state_dict() if self._has_target_encoder else {},
            "log_alpha": self.log_alpha.detach().clone(),
            **({"target_grasp": self.target_grasp.state_dict(),
                "grasp_optimizer": self.grasp_optimizer.state_dict()} if self._grasp else {}),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "num_updates": self.num_updates,
            "num_critic_updates": self.num_critic_updates,
            "num_actor_updates": self.num_actor_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        if self._has_target_encoder:
            self.target_encoder.load_state_dict(state["target_encoder"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if self._grasp:
            self.target_grasp.load_state_dict(state["target_grasp"])
            self.grasp_optimizer.load_state_dict(state["grasp_optimizer"])
        self.num_updates = int(state["num_updates"])
        self.num_critic_updates = int(state["num_critic_updates"])
        self.num_actor_updates = int(state["num_actor_updates"])


@ALGORITHMS.register("sac")
def make_sac(cfg: SACConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
             device: str | torch.device = "cpu") -> SAC:
    return SAC(cfg, policy, obs_spec, action_spec, device)


@ALGORITHMS.register("rlpd")
def make_rlpd(cfg: RLPDConfig, policy: nn.Module, obs_spec: ObsSpec, action_spec: ActionSpec,
              device: str | torch.device = "cpu") -> SAC:
    return SAC(cfg, policy, obs_spec, action_spec, device)
