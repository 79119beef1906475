"""Hand-written SAC update (forward and backward without autograd) for the common state-only configuration.

At batch 256 with 256-wide MLPs an autograd SAC update on the CPU spends about as long on everything around the
matrix products (graph bookkeeping, allocation of every activation and gradient, small elementwise kernels,
Python) as on the products themselves. This path computes exactly the same update as :meth:`SAC.update`
(the same losses, the same noise in the same order, the same fused Adam and Polyak kernels) with:

- every activation, gradient and scratch tensor preallocated once per batch size and written with ``out=``
  kernels (``mm``/``bmm``, ``threshold_backward`` for ReLU's gradient); on the CPU a hidden layer is the
  product without bias, then bias and ReLU in one in-place pass (``_add_relu_``; bit-identical to
  ``addmm``/``baddbmm`` + ``relu_``, which other devices use, and one pass over the activations fewer);
- one actor forward over ``[next_obs; obs]`` (``2n`` rows): the actor does not change between the TD target
  and the actor loss, so the next action and the actor's action come from one pass (noise still drawn
  next-state first, then the actor's, as the autograd path draws it);
- the critic ensemble as batched matrix products ``(E, n, .)``; the actor loss differentiates the critic with
  respect to the action only (no critic weight gradients, which the actor step would throw away), and with
  the ``min`` reduction through each row's minimising member only (rows sorted by member: one gather per layer);
- the parameters' views (transposes, per-member slices) made once and rebuilt only when a parameter's storage
  moves: at ~3 ms per update the ~1 us each view or ``Module.__getattr__`` costs adds up;
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
# relu(x + bias) in place in one pass (torch's CPU kernel for its add+relu fusion). A hidden layer as a matrix
# product without bias, then this, reads and writes its (n, H) output once less than addmm/baddbmm (which
# first copy the broadcast bias into the output) followed by relu_, with bit-identical results.
_add_relu_ = getattr(torch._C._VariableFunctions, "_add_relu_", None)


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


class _Buffers:
    """Activation, gradient and scratch tensors for one minibatch size ``n``, and the views of them the update
    reads, all made once (a view costs ~1 us of dispatch, the update ~3 ms). Per-layer tensors are lists
    indexed by hidden layer."""

    def __init__(self, update: HandWrittenSACUpdate, n: int) -> None:
        ref = update.algo.log_alpha
        new = lambda *shape: torch.empty(shape, device=ref.device, dtype=ref.dtype)  # noqa: E731
        e, f, c = update.num_members, update.feature_dim, update.action_dim
        self.n = n
        # Critic inputs [features | action]: rows :n (next_obs, next action) for the target critic, rows n:
        # (obs, actor's action) for the actor loss; their feature columns are the actor's input.
        self.x_actor = new(2 * n, f + c)
        self.x_critic = new(n, f + c)  # (obs, replayed action) for the TD loss
        self.features, self.actions = self.x_actor[:, :f], self.x_actor[:, f:]
        self.next_features, self.obs_features = self.x_actor[:n, :f], self.x_actor[n:, :f]
        self.critic_features, self.critic_action = self.x_critic[:, :f], self.x_critic[:, f:]
        # The first critic layer's inputs, one per batch expanded over the members: (E, n, F + A).
        self.x_next_members = self.x_actor[:n].expand(e, n, f + c)
        self.x_pi_members = self.x_actor[n:].expand(e, n, f + c)
        self.x_critic_members = self.x_critic.expand(e, n, f + c)
        self.x_critic_members_t = self.x_critic_members.transpose(1, 2)
        self.q, self.dq = new(e, n, 1), new(e, n, 1)
        self.dq_flat = self.dq.view(-1)
        self.da_members, self.da, self.da_rows = new(e, n, c), new(n, c), new(n, c)
        self.g_pre_tanh, self.g_scratch, self.g_head, self.head = new(n, c), new(n, c), new(n, 2 * c), new(2 * n, 2 * c)
        self.mean, self.raw_log_std = self.head[:, :c], self.head[:, c:]
        self.g_mean, self.g_raw_log_std = self.g_head[:, :c], self.g_head[:, c:]
        # The tanh-Gaussian on all 2n rows, with its next (:n) and obs (n:) halves.
        for name in ("noise", "tanh_raw", "log_std", "std", "pre_tanh", "tanh", "scratch"):
            whole = new(2 * n, c)
            setattr(self, name, whole)
            setattr(self, name + "_next", whole[:n])
            setattr(self, name + "_obs", whole[n:])
        self.log_prob = new(2 * n)
        self.log_prob_next, self.log_prob_obs = self.log_prob[:n], self.log_prob[n:]
        critic_widths = [w.shape[2] for w in update.critic_hidden_weights]
        self.c_act = [new(e, n, h) for h in critic_widths]  # post-ReLU activations (E, n, H_i)
        self.c_act_t = [a.transpose(1, 2) for a in self.c_act]
        self.c_act_rows = [a.view(e * n, a.shape[2]) for a in self.c_act]  # (E n, H_i): rows member-major
        self.c_grad = [new(e, n, h) for h in critic_widths]  # their gradients (E, n, H_i)
        # The min-member backward: each row's activations of its minimising member, rows grouped by member.
        self.sel_act = [new(n, h) for h in critic_widths]  # (n, H_i)
        self.sel_grad = [new(n, h) for h in critic_widths]
        actor_widths = [w.shape[0] for w in update.actor_hidden_weights]
        self.a_act = [new(2 * n, h) for h in actor_widths]  # (2n, H_i)
        self.a_act_obs = [a[n:] for a in self.a_act]  # the actor loss differentiates the obs rows only
        self.a_grad = [new(n, h) for h in actor_widths]  # (n, H_i)
        self.row_offsets = torch.arange(n, device=ref.device)  # (n,): row r of member m is row m n + r of c_act_rows


class _Views:
    """The parameter tensors and views of them that an update reads, made once: ``layer.weight`` goes through
    ``Module.__getattr__`` (~0.5 us) and every view (``.t()``, ``[m]``, slices) costs ~1 us of dispatch; an
    update reads ~80 of them. Rebuilt when a parameter's storage moves (see :meth:`HandWrittenSACUpdate._views`).
    Critic layer i: weight ``(E, in, out)``, bias ``(E, 1, out)``; actor layer i: weight ``(out, in)``."""

    def __init__(self, update: HandWrittenSACUpdate) -> None:
        f, e = update.feature_dim, update.num_members
        self.critic_w = [layer.weight for layer in update.critic_layers]
        self.critic_b = [layer.bias for layer in update.critic_layers]
        self.target_w = [layer.weight for layer in update.target_layers]
        self.target_b = [layer.bias for layer in update.target_layers]
        self.critic_w_t = [w.transpose(1, 2) for w in self.critic_w]  # (E, out, in)
        self.critic_w0_action_t = self.critic_w[0][:, f:].transpose(1, 2)  # (E, H_0, A): the action columns
        self.critic_head_rows = self.critic_w[-1][:, :, 0]  # (E, H): each member's scalar head
        # Per hidden layer i and member m, the transposed weight the min-member backward multiplies by:
        # (H_0, A) for layer 0 (its action columns only), (H_i, H_{i-1}) for the others.
        self.member_w_t = [[w[m, f:].t() if i == 0 else w[m].t() for m in range(e)]
                           for i, w in enumerate(self.critic_w[:-1])]
        self.actor_w = [layer.weight for layer in update.actor_layers]
        self.actor_b = [layer.bias for layer in update.actor_layers]
        self.actor_w_t = [w.t() for w in self.actor_w]  # (in, out)
        grads = update.grads
        self.critic_grad_w = [grads[w] for w in self.critic_w]
        self.critic_grad_b = [grads[b] for b in self.critic_b]
        self.actor_grad_w = [grads[w] for w in self.actor_w]
        self.actor_grad_b = [grads[b] for b in self.actor_b]
        self.log_alpha_grad = grads[update.algo.log_alpha]
        policy = update.algo.policy
        self.action_scale, self.action_bias = policy.action_scale, policy.action_bias  # (A,) each


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
        self.critic_hidden_weights = [layer.weight for layer in self.critic_layers[:-1]]
        self.actor_hidden_weights = [layer.weight for layer in self.actor_layers[:-1]]
        self.num_members = critic.num_members
        self.feature_dim = algo.encoder.output_dim
        self.action_dim = policy.action_dim
        # Gradient buffers, one per trained parameter, written in full every update and handed to the
        # optimizers as ``.grad``.
        params = [p for layer in self.critic_layers for p in (layer.weight, layer.bias)] \
            + [p for layer in self.actor_layers for p in (layer.weight, layer.bias)] + [algo.log_alpha]
        self.grads = {p: torch.zeros_like(p) for p in params}
        self._params = params
        self._critic_opt_grads = [self.grads[p] for p in algo._critic_opt_params]
        self._actor_opt_grads = [self.grads[p] for p in algo._actor_opt_params]
        self._buffers: dict[int, _Buffers] = {}
        # _add_relu_ has a CPU kernel only; other devices take baddbmm/addmm + relu_.
        self.add_relu = _add_relu_ if algo.log_alpha.device.type == "cpu" else None
        # The tensors _Views holds views of, and their storage addresses when the views were made: moving a
        # parameter (``param.data = ...``, ``module.to(other_device)``) changes the address, and stale views
        # would read the old storage.
        self._watched = params + [p for layer in self.target_layers for p in (layer.weight, layer.bias)] \
            + [policy.action_scale, policy.action_bias]
        self._watched_ptrs: list[int] = []
        self._cached_views: _Views | None = None

    def _views(self) -> _Views:
        ptrs = [t.data_ptr() for t in self._watched]
        if ptrs != self._watched_ptrs:
            self._cached_views, self._watched_ptrs = _Views(self), ptrs
        return self._cached_views

    def _buffers_for(self, n: int) -> _Buffers:
        """Activation/gradient buffers for minibatch size ``n`` (allocated on first use)."""
        b = self._buffers.get(n)
        if b is None:
            b = self._buffers[n] = _Buffers(self, n)
        return b

    # ------------------------------------------------------------------ critic ensemble
    def _critic_forward(self, weights: list[torch.Tensor], biases: list[torch.Tensor], x_members: torch.Tensor,
                        b: _Buffers) -> torch.Tensor:
        """``x_members (E, n, D)`` (one input expanded over members) -> Q ``(E, n, 1)`` in ``b.q``; the
        post-ReLU activations stay in ``b.c_act``."""
        h, add_relu = x_members, self.add_relu
        for weight, bias, out in zip(weights, biases, b.c_act):
            if add_relu is not None:
                add_relu(torch.bmm(h, weight, out=out), bias)  # (E, n, H_i)
            else:
                torch.baddbmm(bias, h, weight, out=out).relu_()
            h = out
        return torch.baddbmm(biases[-1], h, weights[-1], out=b.q)  # (E, n, 1)

    @staticmethod
    def _critic_backward(dq: torch.Tensor, v: _Views, b: _Buffers, weight_grads: bool) -> None:
        """Backward of :meth:`_critic_forward` (online critic) from ``dq (E, n, 1)``. ``weight_grads``: write
        every weight/bias gradient into the gradient buffers (input: ``b.x_critic``); else only the gradient
        w.r.t. the action columns of the input, per member, into ``b.da_members`` ``(E, n, A)``."""
        last = len(v.critic_w) - 1
        if weight_grads:
            torch.bmm(b.c_act_t[last - 1], dq, out=v.critic_grad_w[last])  # (E, H, 1)
            torch.sum(dq, 1, keepdim=True, out=v.critic_grad_b[last])  # (E, 1, 1)
        dh = b.c_grad[last - 1]
        torch.mul(dq, v.critic_w_t[last], out=dh)  # (E, n, 1) * (E, 1, H) -> (E, n, H)
        for i in range(last - 1, -1, -1):
            _relu_backward(dh, b.c_act[i], 0, grad_input=dh)  # (E, n, H_i): gradient before the ReLU
            if weight_grads:
                torch.bmm(b.c_act_t[i - 1] if i else b.x_critic_members_t, dh, out=v.critic_grad_w[i])
                torch.sum(dh, 1, keepdim=True, out=v.critic_grad_b[i])
            if i:
                dh = torch.bmm(dh, v.critic_w_t[i], out=b.c_grad[i - 1])
            elif not weight_grads:  # only the action columns of the input: (E, n, H_0) @ (E, H_0, A)
                torch.bmm(dh, v.critic_w0_action_t, out=b.da_members)

    def _min_member_action_grad(self, member: torch.Tensor, v: _Views, b: _Buffers) -> torch.Tensor:
        """d(-mean_rows min_e Q_e(s, a))/da ``(n, A)`` into ``b.da``, given each row's minimising member
        ``(n,)``. A row's gradient flows through that member only, so each member's backward runs on its own
        rows: n rows of matrix products in all instead of E x n (the other members' rows would be zeros).
        The rows are sorted by member once (stable, so each member's rows keep their order), which makes each
        member's rows one contiguous block: one gather per layer for all members, and per member only its
        matrix product."""
        n = b.n
        sorted_member, order = torch.sort(member, stable=True)  # (n,) each
        counts = torch.bincount(sorted_member, minlength=self.num_members).tolist()  # rows per member
        rows = torch.add(b.row_offsets.index_select(0, order), sorted_member, alpha=n)  # into c_act_rows
        # d(-q_m / n)/d(last hidden activation) is the same -w_m / n on every row before the ReLU mask.
        dh = torch.index_select(v.critic_head_rows, 0, sorted_member, out=b.sel_grad[-1]).mul_(-1.0 / n)  # (n, H)
        for i in range(len(b.c_act) - 1, -1, -1):
            act = torch.index_select(b.c_act_rows[i], 0, rows, out=b.sel_act[i])  # (n, H_i)
            dz = _relu_backward(dh, act, 0, grad_input=dh)
            out = b.sel_grad[i - 1] if i else b.da_rows  # (n, H_{i-1}), or (n, A) for the action columns
            for dz_m, out_m, w_t in zip(dz.split(counts), out.split(counts), v.member_w_t[i]):
                if len(dz_m):
                    torch.mm(dz_m, w_t, out=out_m)
            dh = out
        return b.da.index_copy_(0, order, b.da_rows)  # back to the batch's row order

    # ------------------------------------------------------------------ actor
    def _actor_forward(self, v: _Views, b: _Buffers) -> None:
        """Tanh-Gaussian sample and log-prob for all ``2n`` rows of ``b.features``; the actions go into the
        action columns of ``b.x_actor`` (rows :n the next action, rows n: the actor's action)."""
        policy = self.algo.policy
        h, add_relu = b.features, self.add_relu  # (2n, F): a strided view, read by BLAS in place
        for weight_t, bias, out in zip(v.actor_w_t, v.actor_b, b.a_act):
            if add_relu is not None:
                add_relu(torch.mm(h, weight_t, out=out), bias)  # (2n, H_i)
            else:
                torch.addmm(bias, h, weight_t, out=out).relu_()
            h = out
        torch.addmm(v.actor_b[-1], h, v.actor_w_t[-1], out=b.head)
        torch.tanh(b.raw_log_std, out=b.tanh_raw)
        log_std = torch.mul(b.tanh_raw, policy._log_std_half_range, out=b.log_std).add_(policy._log_std_mid)
        torch.exp(log_std, out=b.std)
        u = torch.addcmul(b.mean, b.std, b.noise, out=b.pre_tanh)  # mean + std * noise
        torch.tanh(u, out=b.tanh)
        torch.addcmul(v.action_bias, b.tanh, v.action_scale, out=b.actions)
        # log N(u; mean, std) - log(1 - tanh(u)^2) per dimension, as GaussianPolicy.sample_from_features:
        # 2 (u + softplus(-2u)) - log_std - noise^2 / 2, the constants subtracted after the sum.
        s = _softplus(torch.mul(u, -2.0, out=b.scratch), 1, 20, out=b.scratch).add_(u).mul_(2.0)
        s.sub_(log_std).addcmul_(b.noise, b.noise, value=-0.5)
        torch.sum(s, -1, out=b.log_prob).sub_(self.action_dim * (_HALF_LOG_2PI + 2.0 * _LOG_2))  # (2n,)

    def _actor_backward(self, da: torch.Tensor, alpha: torch.Tensor, v: _Views, b: _Buffers) -> None:
        """Gradients of ``mean(alpha * log_prob - q)`` over the obs rows (``n:``) into the gradient buffers,
        given ``da (n, A)`` = d(-mean q)/d(action)."""
        policy, n = self.algo.policy, b.n
        t, tanh_raw = b.tanh_obs, b.tanh_raw_obs  # (n, C) each
        # d/du: through the action, da * scale * (1 - t^2); through log_prob, (alpha / n) * 2 tanh(u).
        g_u = torch.addcmul(v.action_scale, v.action_scale * t, t, value=-1.0, out=b.g_pre_tanh)
        g_u.mul_(da).addcmul_(t, alpha, value=2.0 / n)
        b.g_mean.copy_(g_u)  # d/dmean
        # d/dlog_std = g_u * std * noise - alpha / n; d/draw = that * half_range * (1 - tanh(raw)^2).
        g_log_std = torch.mul(g_u, b.std_obs, out=b.g_scratch).mul_(b.noise_obs).sub_(alpha / n)
        torch.addcmul(g_log_std, g_log_std * tanh_raw, tanh_raw, value=-1.0, out=b.g_raw_log_std)
        b.g_raw_log_std.mul_(policy._log_std_half_range)
        dh = b.g_head  # (n, 2C)
        for i in range(len(v.actor_w) - 1, -1, -1):
            torch.mm(dh.t(), b.a_act_obs[i - 1] if i else b.obs_features, out=v.actor_grad_w[i])
            torch.sum(dh, 0, out=v.actor_grad_b[i])
            if i:
                grad_in = torch.mm(dh, v.actor_w[i], out=b.a_grad[i - 1])  # (n, H)
                dh = _relu_backward(grad_in, b.a_act_obs[i - 1], 0, grad_input=grad_in)

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
        # One conversion to Python floats for all metrics (each .item() is a call of its own).
        critic_loss, q_mean, alpha, actor_loss, mean_log_prob = torch.stack(
            [loss, q_mean, alpha, actor_loss, mean_log_prob]).tolist()
        return {"critic_loss": critic_loss, "q_mean": q_mean, "alpha": alpha, "actor_loss": actor_loss,
                "entropy": -mean_log_prob, "bc_loss": 0.0, "num_critic_updates": float(algo.num_critic_updates)}

    @torch.no_grad()
    def update(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
               next_obs: dict[str, torch.Tensor], not_done: torch.Tensor, alpha: torch.Tensor
               ) -> list[torch.Tensor]:
        """Critic step, Polyak update, actor + temperature step; returns the 0-dim tensors [critic loss,
        mean Q, actor loss, mean log-prob] (``SAC.update``'s metrics)."""
        algo, cfg = self.algo, self.algo.cfg
        loss, q_mean, b = self.critic_gradients(obs, action, reward, next_obs, not_done, alpha)
        self._set_grads(algo._critic_opt_params, self._critic_opt_grads)
        algo._critic_adam.step()
        torch._foreach_lerp_(algo._target_params, algo._online_params, cfg.tau)
        actor_loss, mean_log_prob = self.actor_gradients(alpha, len(action), b)
        self._set_grads(algo._actor_opt_params, self._actor_opt_grads)
        algo._actor_adam.step()
        return [loss, q_mean, actor_loss, mean_log_prob]

    @staticmethod
    def _set_grads(params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p, g in zip(params, grads):
            if p.grad is not g:  # zero_grad(set_to_none) or a checkpoint load may have cleared it
                p.grad = g

    def critic_gradients(self, obs: dict[str, torch.Tensor], action: torch.Tensor, reward: torch.Tensor,
                         next_obs: dict[str, torch.Tensor], not_done: torch.Tensor, alpha: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, _Buffers]:
        """Draws the noise, runs the actor on ``[next_obs; obs]`` and writes the TD loss's gradients into
        :attr:`grads`; returns (loss, mean Q, the buffers :meth:`actor_gradients` continues from)."""
        algo, cfg, n = self.algo, self.algo.cfg, len(action)
        b, v = self._buffers_for(n), self._views()
        b.next_features.copy_(algo.encoder(next_obs))
        b.obs_features.copy_(algo.encoder(obs))
        b.critic_features.copy_(b.obs_features)
        b.critic_action.copy_(action)
        # The next action's noise first, then the actor's, as SAC draws them; sized draws (not ``out=`` or
        # ``normal_``), which data-parallel training's ShardedNoise turns into this rank's rows of the global draw.
        b.noise_next.copy_(torch.randn(b.noise_next.shape, device=b.noise.device))
        b.noise_obs.copy_(torch.randn(b.noise_obs.shape, device=b.noise.device))
        self._actor_forward(v, b)
        # TD target r + gamma (1 - terminated) min_e Q'_e(s', a') (- alpha log pi(a'|s') with the soft backup)
        next_value = self._critic_forward(v.target_w, v.target_b, b.x_next_members, b).amin(0).squeeze(1)  # (n,)
        if cfg.backup_entropy:
            next_value = next_value - alpha * b.log_prob_next
        target = torch.addcmul(reward, not_done, next_value, value=cfg.gamma)  # (n,)
        if algo._clip_target:  # algo.td_target_min/max, as on the autograd path
            target.clamp_(cfg.td_target_min, cfg.td_target_max)
        q = self._critic_forward(v.critic_w, v.critic_b, b.x_critic_members, b)  # (E, n, 1)
        q_mean = q.mean()
        diff = torch.sub(q, target[:, None], out=b.dq)  # (E, n, 1)
        loss = torch.dot(b.dq_flat, b.dq_flat) * (0.5 / n)  # sum over members of each member's 0.5 * MSE
        self._critic_backward(diff.mul_(1.0 / n), v, b, weight_grads=True)
        return loss, q_mean, b

    def actor_gradients(self, alpha: torch.Tensor, n: int, b: _Buffers) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the actor loss ``mean(alpha log_prob - Q(s, a))`` (Q: min or mean over members, with
        the critic's current weights) and of the temperature loss into :attr:`grads`; returns (actor loss,
        mean log-prob)."""
        algo, v = self.algo, self._views()
        q = self._critic_forward(v.critic_w, v.critic_b, b.x_pi_members, b)  # (E, n, 1)
        if algo.cfg.actor_q_reduction == "min":
            q_pi, member = q.min(0)  # (n, 1) each
            da = self._min_member_action_grad(member.view(-1), v, b)
        else:
            q_pi = q.mean(0)
            self._critic_backward(b.dq.fill_(-1.0 / (n * self.num_members)), v, b, weight_grads=False)
            da = b.da_members.sum(0)  # (n, A)
        mean_log_prob = b.log_prob_obs.mean()
        self._actor_backward(da, alpha, v, b)
        # Temperature loss -log_alpha * (mean log_prob + target entropy): its gradient w.r.t. log_alpha.
        torch.add(mean_log_prob, algo.target_entropy, out=v.log_alpha_grad).neg_()
        actor_loss = alpha * mean_log_prob - q_pi.mean()
        return actor_loss, mean_log_prob
