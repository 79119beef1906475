"""Hand-written SAC update (forward and backward without autograd) for the common state-only configuration.

At batch 256 with 256-wide MLPs an autograd SAC update on the CPU spends about as long on everything around the
matrix products (graph bookkeeping, allocation of every activation and gradient, small elementwise kernels,
Python) as on the products themselves. This path computes exactly the same update as :meth:`SAC.update`
(the same losses, the same noise in the same order, the same fused Adam and Polyak kernels) with:

- every activation, gradient and scratch tensor preallocated once per batch size and written with ``out=``
  kernels (``addmm``/``baddbmm``/``bmm``, in-place ReLU, ``threshold_backward`` for its gradient);
- one actor forward over ``[next_obs; obs]`` (``2n`` rows): the actor does not change between the TD target
  and the actor loss, so the next action and the actor's action come from one pass (noise still drawn
  next-state first, then the actor's, as the autograd path draws it);
- the critic ensemble as batched matrix products ``(E, n, .)``; the actor loss differentiates the critic with
  respect to the action only (no critic weight gradients, which the actor step would throw away);
- the tanh-Gaussian log-probability and its gradient in closed form (``d/du [u + softplus(-2u)] = tanh(u)``).

:func:`unsupported_reason` says why a configuration cannot take this path (pixels, LayerNorm, HL-Gauss,
REDQ subsets, UTD > 1, a discrete gripper, bf16 autocast, ...); :class:`SAC` then uses autograd. Gradients are
checked against autograd in ``tests/algorithms/test_sac_handwritten.py``; the whole update against a textbook
SAC in ``tests/algorithms/test_sac_reference.py``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from robot_rl.algorithms.critics import EnsembleCritic
from robot_rl.types import Batch

if TYPE_CHECKING:
    from robot_rl.algorithms.sac import SAC

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)
# ReLU's backward from its output: grad where out > 0, else 0 (written in place into the gradient buffer).
_relu_backward = torch.ops.aten.threshold_backward.grad_input
_softplus = torch._C._nn.softplus  # F.softplus with out=


def unsupported_reason(algo: SAC) -> str | None:
    """None when ``algo``'s configuration is the one :class:`HandWrittenSACUpdate` implements, else why not."""
    from robot_rl.algorithms.sac import SAC
    from robot_rl.policies.gaussian import GaussianPolicy

    cfg, policy, critic = algo.cfg, algo.policy, algo.critic
    checks = [
        (cfg.handwritten_update, "algo.handwritten_update=false"),
        (type(algo)._critic_loss is SAC._critic_loss and type(algo)._actor_losses is SAC._actor_losses,
         "a subclass changes the losses"),
        (not cfg.bf16_matmuls, "bf16 autocast"),
        (cfg.critic_updates_per_actor_update == 1, "critic UTD > 1"),
        (cfg.target_subset_size == cfg.num_critics, "REDQ target subset"),
        (cfg.value_loss == "mse", f"value_loss={cfg.value_loss}"),
        (type(critic) is EnsembleCritic and critic.norm_scales is None and critic.out_features == 1,
         "critic is not a plain MLP ensemble"),
        (not algo.encoder.image_keys and not any(p.requires_grad for p in algo.encoder.parameters()),
         "observations other than state"),
        (type(policy) is GaussianPolicy and policy.grasp_critic is None, "policy is not a plain Gaussian"),
    ]
    for ok, reason in checks:
        if not ok:
            return reason
    trunk = list(policy.trunk)
    if not all(isinstance(m, nn.Linear) for m in trunk[0::2]) or not all(isinstance(m, nn.ReLU) for m in trunk[1::2]) \
            or len(trunk) % 2:
        return "actor trunk is not Linear/ReLU pairs"
    return None


class HandWrittenSACUpdate:
    """One SAC update (critic step, Polyak, actor + temperature step) of ``algo`` with hand-written gradients.

    Holds references to ``algo``'s parameters (``load_state_dict`` copies into them, so they stay valid) and
    steps ``algo``'s own optimizers: checkpoints, learning rates and the data-parallel gradient hook (an
    optimizer pre-step hook reading ``.grad``) work as on the autograd path.
    """

    def __init__(self, algo: SAC) -> None:
        self.algo = algo
        policy, critic = algo.policy, algo.critic
        self.actor_layers = [m for m in policy.trunk if isinstance(m, nn.Linear)] + [policy.head]
        self.critic_layers = list(critic.layers)  # EnsembleLinear: weight (E, in, out), bias (E, 1, out)
        self.target_layers = list(algo.target_critic.layers)
        self.num_members = critic.num_members
        self.feature_dim = algo.encoder.output_dim
        self.action_dim = policy.action_dim
        # Gradient buffers, one per trained parameter, written in full every update and handed to the
        # optimizers as ``.grad``.
        params = [p for layer in self.critic_layers for p in (layer.weight, layer.bias)] \
            + [p for layer in self.actor_layers for p in (layer.weight, layer.bias)] + [algo.log_alpha]
        self.grads = {p: torch.zeros_like(p) for p in params}
        self._params = params
        self._buffers: dict[int, dict[str, torch.Tensor]] = {}

    def _buffers_for(self, n: int) -> dict[str, torch.Tensor]:
        """Activation/gradient buffers for minibatch size ``n`` (allocated on first use), with the views of them
        the update reads (made once here: a view costs ~1 us of dispatch, and the update takes ~50)."""
        if n in self._buffers:
            return self._buffers[n]
        ref = self.algo.log_alpha
        new = lambda *shape: torch.empty(shape, device=ref.device, dtype=ref.dtype)  # noqa: E731
        e, f, c = self.num_members, self.feature_dim, self.action_dim
        # Critic inputs [features | action]: rows :n (next_obs, next action) for the target critic, rows n:
        # (obs, actor's action) for the actor loss; their feature columns are the actor's input.
        x_actor = new(2 * n, f + c)
        x_critic = new(n, f + c)  # (obs, replayed action) for the TD loss
        b = {"x_actor": x_actor, "x_critic": x_critic, "features": x_actor[:, :f], "actions": x_actor[:, f:],
             "next_features": x_actor[:n, :f], "obs_features": x_actor[n:, :f],
             "critic_features": x_critic[:, :f], "critic_action": x_critic[:, f:],
             "q": new(e, n, 1), "dq": new(e, n, 1), "da_members": new(e, n, c), "da": new(n, c), "da_rows": new(n, c),
             "g_pre_tanh": new(n, c), "g_scratch": new(n, c), "g_head": new(n, 2 * c), "head": new(2 * n, 2 * c)}
        for name, x in [("x_next", x_actor[:n]), ("x_pi", x_actor[n:]), ("x_critic", x_critic)]:
            b[name + "_members"] = x.expand(e, n, f + c)  # the first critic layer's input, shared by every member
        b["x_critic_members_t"] = b["x_critic_members"].transpose(1, 2)
        for name in ("noise", "tanh_raw", "log_std", "std", "pre_tanh", "tanh", "scratch"):
            b[name] = new(2 * n, c)  # the tanh-Gaussian on all 2n rows
            b[name + "_next"], b[name + "_obs"] = b[name][:n], b[name][n:]
        b["log_prob"] = new(2 * n)
        b["log_prob_next"], b["log_prob_obs"] = b["log_prob"][:n], b["log_prob"][n:]
        b["mean"], b["raw_log_std"] = b["head"][:, :c], b["head"][:, c:]
        b["g_mean"], b["g_raw_log_std"] = b["g_head"][:, :c], b["g_head"][:, c:]
        b["dq_flat"] = b["dq"].view(-1)
        for i, layer in enumerate(self.critic_layers[:-1]):
            b[f"c_act{i}"] = new(e, n, layer.weight.shape[2])  # post-ReLU activations (E, n, H_i)
            b[f"c_act{i}_t"] = b[f"c_act{i}"].transpose(1, 2)
            b[f"c_grad{i}"] = new(e, n, layer.weight.shape[2])  # their gradients (E, n, H_i)
            b[f"sel_act{i}"] = new(n, layer.weight.shape[2])  # one member's rows of them (n_e <= n, H_i)
            b[f"sel_grad{i}"] = new(n, layer.weight.shape[2])
        for i, layer in enumerate(self.actor_layers[:-1]):
            b[f"a_act{i}"] = new(2 * n, layer.weight.shape[0])  # (2n, H_i)
            b[f"a_act{i}_obs"] = b[f"a_act{i}"][n:]  # the actor loss differentiates the obs rows only
            b[f"a_grad{i}"] = new(n, layer.weight.shape[0])  # (n, H_i)
        self._buffers[n] = b
        return b

    # ------------------------------------------------------------------ critic ensemble
    def _critic_forward(self, layers: list[nn.Module], x_members: torch.Tensor, b: dict[str, torch.Tensor]
                        ) -> torch.Tensor:
        """``x_members (E, n, D)`` (one input expanded over members) -> Q ``(E, n, 1)`` in ``b['q']``; the
        post-ReLU activations stay in ``b['c_act<i>']``."""
        h = x_members
        for i, layer in enumerate(layers[:-1]):
            out = b[f"c_act{i}"]
            torch.baddbmm(layer.bias, h, layer.weight, out=out).relu_()  # (E, n, H_i)
            h = out
        return torch.baddbmm(layers[-1].bias, h, layers[-1].weight, out=b["q"])  # (E, n, 1)

    def _critic_backward(self, dq: torch.Tensor, b: dict[str, torch.Tensor], weight_grads: bool) -> None:
        """Backward of :meth:`_critic_forward` (online critic) from ``dq (E, n, 1)``. ``weight_grads``: write
        every weight/bias gradient into :attr:`grads` (input: ``b['x_critic']``); else only the gradient w.r.t.
        the action columns of the input, per member, into ``b['da_members']`` ``(E, n, A)``."""
        layers, grads = self.critic_layers, self.grads
        last = len(layers) - 1
        if weight_grads:
            torch.bmm(b[f"c_act{last - 1}_t"], dq, out=grads[layers[last].weight])  # (E, H, 1)
            torch.sum(dq, 1, keepdim=True, out=grads[layers[last].bias])  # (E, 1, 1)
        dh = b[f"c_grad{last - 1}"]
        torch.mul(dq, layers[last].weight.transpose(1, 2), out=dh)  # (E, n, 1) * (E, 1, H) -> (E, n, H)
        for i in range(last - 1, -1, -1):
            _relu_backward(dh, b[f"c_act{i}"], 0, grad_input=dh)  # (E, n, H_i): gradient before the ReLU
            weight = layers[i].weight  # (E, in, H_i)
            if weight_grads:
                torch.bmm(b[f"c_act{i - 1}_t"] if i else b["x_critic_members_t"], dh, out=grads[weight])
                torch.sum(dh, 1, keepdim=True, out=grads[layers[i].bias])
            if i:
                dh = torch.bmm(dh, weight.transpose(1, 2), out=b[f"c_grad{i - 1}"])
            elif not weight_grads:  # only the action columns of the input: (E, n, H_0) @ (E, H_0, A)
                torch.bmm(dh, weight[:, self.feature_dim:].transpose(1, 2), out=b["da_members"])

    def _min_member_action_grad(self, member: torch.Tensor, n: int, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """d(-mean_rows min_e Q_e(s, a))/da ``(n, A)`` into ``b['da']``, given each row's minimising member
        ``(n,)``. A row's gradient flows through that member only, so each member's backward runs on its own
        rows: n rows of matrix products in all instead of E x n (the other members' rows would be zeros)."""
        layers, last, da = self.critic_layers, len(self.critic_layers) - 1, b["da"]
        for e in range(self.num_members):
            rows = torch.nonzero(member == e).view(-1)  # (n_e,)
            count = len(rows)
            if count == 0:
                continue
            # d(-q_e / n)/d(last hidden activation) is the same -w_e / n on every row before the ReLU mask.
            dh = layers[last].weight[e, :, 0].mul(-1.0 / n).expand(count, -1)  # (n_e, H)
            for i in range(last - 1, -1, -1):
                act = torch.index_select(b[f"c_act{i}"][e], 0, rows, out=b[f"sel_act{i}"][:count])  # (n_e, H_i)
                dz = _relu_backward(dh, act, 0, grad_input=b[f"sel_grad{i}"][:count])
                weight = layers[i].weight[e]  # (in, H_i)
                if i:
                    dh = torch.mm(dz, weight.t(), out=b[f"sel_grad{i - 1}"][:count])
                else:  # the action columns of the input only
                    da.index_copy_(0, rows, torch.mm(dz, weight[self.feature_dim:].t(), out=b["da_rows"][:count]))
        return da

    # ------------------------------------------------------------------ actor
    def _actor_forward(self, b: dict[str, torch.Tensor]) -> None:
        """Tanh-Gaussian sample and log-prob for all ``2n`` rows of ``b['features']``; the actions go into the
        action columns of ``b['x_actor']`` (rows :n the next action, rows n: the actor's action)."""
        policy, c = self.algo.policy, self.action_dim
        h = b["features"]  # (2n, F): a strided view, read by BLAS in place
        for i, layer in enumerate(self.actor_layers[:-1]):
            out = b[f"a_act{i}"]
            torch.addmm(layer.bias, h, layer.weight.t(), out=out).relu_()  # (2n, H_i)
            h = out
        torch.addmm(self.actor_layers[-1].bias, h, self.actor_layers[-1].weight.t(), out=b["head"])
        torch.tanh(b["raw_log_std"], out=b["tanh_raw"])
        log_std = torch.mul(b["tanh_raw"], policy._log_std_half_range, out=b["log_std"]).add_(policy._log_std_mid)
        torch.exp(log_std, out=b["std"])
        u = torch.addcmul(b["mean"], b["std"], b["noise"], out=b["pre_tanh"])  # mean + std * noise
        torch.tanh(u, out=b["tanh"])
        torch.addcmul(policy.action_bias, b["tanh"], policy.action_scale, out=b["actions"])
        # log N(u; mean, std) - log(1 - tanh(u)^2) per dimension, as GaussianPolicy.sample_from_features:
        # 2 (u + softplus(-2u)) - log_std - noise^2 / 2, the constants subtracted after the sum.
        s = _softplus(torch.mul(u, -2.0, out=b["scratch"]), 1, 20, out=b["scratch"]).add_(u).mul_(2.0)
        s.sub_(log_std).addcmul_(b["noise"], b["noise"], value=-0.5)
        torch.sum(s, -1, out=b["log_prob"]).sub_(c * (_HALF_LOG_2PI + 2.0 * _LOG_2))  # (2n,)

    def _actor_backward(self, da: torch.Tensor, alpha: torch.Tensor, n: int, b: dict[str, torch.Tensor]) -> None:
        """Gradients of ``mean(alpha * log_prob - q)`` over the obs rows (``n:``) into :attr:`grads`, given
        ``da (n, A)`` = d(-mean q)/d(action)."""
        policy, grads = self.algo.policy, self.grads
        t, tanh_raw = b["tanh_obs"], b["tanh_raw_obs"]  # (n, C) each
        # d/du: through the action, da * scale * (1 - t^2); through log_prob, (alpha / n) * 2 tanh(u).
        g_u = torch.addcmul(policy.action_scale, policy.action_scale * t, t, value=-1.0, out=b["g_pre_tanh"])
        g_u.mul_(da).addcmul_(t, alpha, value=2.0 / n)
        b["g_mean"].copy_(g_u)  # d/dmean
        # d/dlog_std = g_u * std * noise - alpha / n; d/draw = that * half_range * (1 - tanh(raw)^2).
        g_log_std = torch.mul(g_u, b["std_obs"], out=b["g_scratch"]).mul_(b["noise_obs"]).sub_(alpha / n)
        torch.addcmul(g_log_std, g_log_std * tanh_raw, tanh_raw, value=-1.0, out=b["g_raw_log_std"])
        b["g_raw_log_std"].mul_(policy._log_std_half_range)
        dh = b["g_head"]  # (n, 2C)
        for i in range(len(self.actor_layers) - 1, -1, -1):
            layer = self.actor_layers[i]
            torch.mm(dh.t(), b[f"a_act{i - 1}_obs"] if i else b["obs_features"], out=grads[layer.weight])
            torch.sum(dh, 0, out=grads[layer.bias])
            if i:
                grad_in = torch.mm(dh, layer.weight, out=b[f"a_grad{i - 1}"])  # (n, H)
                dh = _relu_backward(grad_in, b[f"a_act{i - 1}_obs"], 0, grad_input=grad_in)

    # ------------------------------------------------------------------ the update
    def step(self, batch: Batch, reward: torch.Tensor, not_done: torch.Tensor, alpha: torch.Tensor
             ) -> dict[str, float]:
        """One full :meth:`SAC.update` on ``batch`` (``reward (n,)`` float, ``not_done (n,)`` with any n-step
        bootstrap factor, ``alpha`` 0-dim): the update, the counters and the same metrics."""
        algo = self.algo
        loss, q_mean, actor_loss, mean_log_prob = self.update(batch.obs, batch.action, reward, batch.next_obs,
                                                              not_done, alpha)
        algo.num_updates += 1
        algo.num_critic_updates += 1
        algo.num_actor_updates += 1
        values = torch.stack([loss, q_mean, alpha, actor_loss, -mean_log_prob, torch.zeros_like(loss)]).tolist()
        return dict(zip(["critic_loss", "q_mean", "alpha", "actor_loss", "entropy", "bc_loss"], values),
                    num_critic_updates=float(algo.num_critic_updates))

    @torch.no_grad()
    def update(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
               next_obs: dict[str, torch.Tensor], not_done: torch.Tensor, alpha: torch.Tensor
               ) -> list[torch.Tensor]:
        """Critic step, Polyak update, actor + temperature step; returns the 0-dim tensors [critic loss,
        mean Q, actor loss, mean log-prob] (``SAC.update``'s metrics)."""
        algo, cfg = self.algo, self.algo.cfg
        loss, q_mean, b = self.critic_gradients(obs, action, reward, next_obs, not_done, alpha)
        self._set_grads(algo._critic_opt_params)
        algo._critic_adam.step()
        torch._foreach_lerp_(algo._target_params, algo._online_params, cfg.tau)
        actor_loss, mean_log_prob = self.actor_gradients(alpha, len(action), b)
        self._set_grads(algo._actor_opt_params)
        algo._actor_adam.step()
        return [loss, q_mean, actor_loss, mean_log_prob]

    def _set_grads(self, params: list[torch.Tensor]) -> None:
        for p in params:
            p.grad = self.grads[p]

    def critic_gradients(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
                         next_obs: dict[str, torch.Tensor], not_done: torch.Tensor, alpha: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Draws the noise, runs the actor on ``[next_obs; obs]`` and writes the TD loss's gradients into
        :attr:`grads`; returns (loss, mean Q, the buffers :meth:`actor_gradients` continues from)."""
        cfg, n = self.algo.cfg, len(action)
        b = self._buffers_for(n)
        b["next_features"].copy_(self.algo.encoder(next_obs))
        b["obs_features"].copy_(self.algo.encoder(obs))
        b["critic_features"].copy_(b["obs_features"])
        b["critic_action"].copy_(action)
        # The next action's noise first, then the actor's, as SAC draws them; sized draws (not ``out=`` or
        # ``normal_``), which data-parallel training's ShardedNoise turns into this rank's rows of the global draw.
        b["noise_next"].copy_(torch.randn(b["noise_next"].shape, device=b["noise"].device))
        b["noise_obs"].copy_(torch.randn(b["noise_obs"].shape, device=b["noise"].device))
        self._actor_forward(b)
        # TD target r + gamma (1 - terminated) min_e Q'_e(s', a') (- alpha log pi(a'|s') with the soft backup)
        next_value = self._critic_forward(self.target_layers, b["x_next_members"], b).amin(0).squeeze(1)  # (n,)
        if cfg.backup_entropy:
            next_value = next_value - alpha * b["log_prob_next"]
        target = torch.addcmul(reward, not_done, next_value, value=cfg.gamma)  # (n,)
        if self.algo._clip_target:  # algo.td_target_min/max, as on the autograd path
            target.clamp_(cfg.td_target_min, cfg.td_target_max)
        q = self._critic_forward(self.critic_layers, b["x_critic_members"], b)  # (E, n, 1)
        q_mean = q.mean()
        diff = torch.sub(q, target[:, None], out=b["dq"])  # (E, n, 1)
        loss = torch.dot(b["dq_flat"], b["dq_flat"]) * (0.5 / n)  # sum over members of each member's 0.5 * MSE
        self._critic_backward(diff.mul_(1.0 / n), b, weight_grads=True)
        return loss, q_mean, b

    def actor_gradients(self, alpha: torch.Tensor, n: int, b: dict[str, torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the actor loss ``mean(alpha log_prob - Q(s, a))`` (Q: min or mean over members, with
        the critic's current weights) and of the temperature loss into :attr:`grads`; returns (actor loss,
        mean log-prob)."""
        algo, e = self.algo, self.num_members
        q = self._critic_forward(self.critic_layers, b["x_pi_members"], b)  # (E, n, 1)
        if algo.cfg.actor_q_reduction == "min":
            q_pi, member = q.min(0)  # (n, 1) each
            da = self._min_member_action_grad(member.view(-1), n, b)
        else:
            q_pi = q.mean(0)
            self._critic_backward(b["dq"].fill_(-1.0 / (n * e)), b, weight_grads=False)
            da = b["da_members"].sum(0)  # (n, A)
        mean_log_prob = b["log_prob_obs"].mean()
        self._actor_backward(da, alpha, n, b)
        # Temperature loss -log_alpha * (mean log_prob + target entropy): its gradient w.r.t. log_alpha.
        torch.add(mean_log_prob, algo.target_entropy, out=self.grads[algo.log_alpha]).neg_()
        actor_loss = alpha * mean_log_prob - q_pi.mean()
        return actor_loss, mean_log_prob
