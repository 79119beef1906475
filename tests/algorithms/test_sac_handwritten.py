"""The hand-written SAC update (``sac_handwritten.py``): its gradients equal autograd's on the same weights and
noise, whole updates equal the autograd path's (parameters, targets, optimizer state, metrics, across a
checkpoint round trip), and configurations it does not implement fall back to autograd with the reason."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from robot_rl.algorithms.sac import SAC
from robot_rl.config import load_config
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.types import Batch
from test_sac_reference import random_batch as reference_random_batch

pytestmark = pytest.mark.usefixtures("single_thread")

STATE_DIM, ACTION_DIM, BATCH = 9, 3, 48
OBS_SPEC = ObsSpec({"state": ArraySpec((STATE_DIM,), "float32")})
ACTION_SPEC = ActionSpec((ACTION_DIM,), [-1.0, -2.0, 0.0], [1.0, 2.0, 0.5])  # non-unit bounds: scale and bias


def build(overrides: list[str], seed: int = 0) -> SAC:
    torch.manual_seed(seed)
    # Unequal widths and depths (3 critic layers, 2 actor layers) so a transposed or mixed-up buffer shows.
    cfg = load_config(["algo=sac", f"algo.batch_size={BATCH}", "algo.critic_hidden_dims=[40,24,16]",
                       "policy.hidden_dims=[32,20]", "algo.init_temperature=0.3", "algo.tau=0.2",
                       "algo.actor_lr=1e-2", "algo.critic_lr=1e-2", "algo.temperature_lr=1e-2", *overrides])
    policy = POLICIES.make("gaussian", cfg.policy, OBS_SPEC, ACTION_SPEC)
    algo = ALGORITHMS.make("sac", cfg.algo, policy, OBS_SPEC, ACTION_SPEC, "cpu")
    states = torch.as_tensor(np.random.default_rng(seed).normal(1.0, 2.0, (200, STATE_DIM)), dtype=torch.float32)
    algo.policy.fit_state_normalization(states)
    return algo


def random_batch(rng: np.random.Generator) -> Batch:
    return reference_random_batch(rng, BATCH, STATE_DIM, ACTION_SPEC)


CONFIGS = [[], ["algo.backup_entropy=true", "algo.actor_q_reduction=mean", "algo.num_critics=3",
                "algo.target_subset_size=3"],
           ["algo.td_target_min=-0.5", "algo.td_target_max=0.5"]]  # rewards ~ N(0, 1): the bound binds
IDS = ["sac", "soft-backup-mean-3-critics", "td-target-clip"]


@pytest.mark.parametrize("fused_add_relu", [True, False], ids=["add-relu", "addmm-relu"])
@pytest.mark.parametrize("overrides", CONFIGS, ids=IDS)
def test_gradients_match_autograd(overrides: list[str], fused_add_relu: bool) -> None:
    """Both hidden-layer forms: product + fused add/ReLU (the CPU default) and addmm/baddbmm + relu_ (other
    devices, checked here on the CPU)."""
    algo = build(overrides)
    hand = algo._handwritten
    assert hand is not None and algo.handwritten_fallback is None
    assert hand.add_relu is not None  # the CPU default
    if not fused_add_relu:
        hand.add_relu = None
    batch = random_batch(np.random.default_rng(1))
    reward, not_done = batch.reward, torch.logical_not(batch.terminated).float()
    alpha = algo.log_alpha.detach().exp()
    torch.manual_seed(7)
    with torch.no_grad():
        loss, q_mean, buffers = hand.critic_gradients(batch.obs, batch.action, reward, batch.next_obs, not_done,
                                                      alpha)
        actor_loss, mean_log_prob = hand.actor_gradients(alpha, BATCH, buffers)
    ours = {p: g.clone() for p, g in hand.grads.items()}

    # Autograd on the same weights (no optimizer step in between here) and the same noise draws.
    torch.manual_seed(7)
    ref_loss, ref_q_mean, features = algo._critic_loss(batch.obs, batch.action, reward, batch.next_obs, not_done,
                                                       alpha, None)
    critic_params = list(algo.critic.parameters())
    critic_grads = torch.autograd.grad(ref_loss, critic_params)
    total, ref_actor_loss, ref_mean_log_prob, _ = algo._actor_losses(features, alpha, batch.action, None)
    actor_params = list(algo.policy.actor_parameters()) + [algo.log_alpha]
    actor_grads = torch.autograd.grad(total, actor_params)

    tol = dict(rtol=1e-5, atol=1e-6)
    for p, ref in zip(critic_params + actor_params, critic_grads + actor_grads):
        assert ref.abs().max() > 1e-4  # every gradient is non-trivial, so the comparison means something
        torch.testing.assert_close(ours[p], ref, **tol)
    for value, ref in [(loss, ref_loss), (q_mean, ref_q_mean), (actor_loss, ref_actor_loss),
                       (mean_log_prob, ref_mean_log_prob)]:
        torch.testing.assert_close(value, ref.detach(), **tol)


def test_min_member_gradient_when_one_member_is_never_the_minimum() -> None:
    """The min-member backward groups the rows by member: a member that is the minimum on no row (an empty
    group) contributes nothing, and the gradients still equal autograd's."""
    algo = build([])
    with torch.no_grad():
        algo.critic.layers[-1].bias[0].fill_(-100.0)  # member 0 is the minimum on every row
    batch = random_batch(np.random.default_rng(4))
    reward, not_done = batch.reward, torch.logical_not(batch.terminated).float()
    alpha = algo.log_alpha.detach().exp()
    hand = algo._handwritten
    torch.manual_seed(11)
    with torch.no_grad():
        _, _, buffers = hand.critic_gradients(batch.obs, batch.action, reward, batch.next_obs, not_done, alpha)
        q = hand._critic_forward(hand._views().critic_w, hand._views().critic_b, buffers.x_pi_members, buffers)
        assert bool((q.argmin(0) == 0).all())  # the case under test: member 1's row group is empty
        hand.actor_gradients(alpha, BATCH, buffers)
    ours = {p: hand.grads[p].clone() for p in algo.policy.actor_parameters()}
    torch.manual_seed(11)
    _, _, features = algo._critic_loss(batch.obs, batch.action, reward, batch.next_obs, not_done, alpha, None)
    total, _, _, _ = algo._actor_losses(features, alpha, batch.action, None)
    actor_params = list(algo.policy.actor_parameters())
    for p, ref in zip(actor_params, torch.autograd.grad(total, actor_params)):
        assert ref.abs().max() > 1e-4
        torch.testing.assert_close(ours[p], ref, rtol=1e-5, atol=1e-6)


def test_cached_parameter_views_follow_a_moved_parameter() -> None:
    """The update reads parameters through views made once; replacing a parameter's storage (``param.data =
    ...``, as ``module.to(other_device)`` does) must rebuild them, or the update would read stale weights
    that the optimizer no longer steps. Here every parameter moves before the second update, and three
    updates still equal the autograd path's."""
    hand, auto = build([]), build(["algo.handwritten_update=false"])
    rng = np.random.default_rng(5)
    for step in range(3):
        batch = random_batch(rng)
        if step == 1:
            for module in (hand.critic, hand.target_critic, hand.policy):
                for tensor in list(module.parameters()) + list(module.buffers()):
                    tensor.data = tensor.data.clone()  # same values, new storage
        torch.manual_seed(200 + step)
        hand.update(batch)
        torch.manual_seed(200 + step)
        auto.update(batch)
    for module in ("policy", "critic", "target_critic"):
        ours, ref = getattr(hand, module).state_dict(), getattr(auto, module).state_dict()
        for (name, a), b in zip(ours.items(), ref.values()):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6, msg=lambda m: f"{module}.{name}: {m}")


def test_fused_add_relu_is_relu_of_the_sum() -> None:
    """The fused hidden-layer epilogue (torch's ``_add_relu_``) is relu(x + bias) bit for bit, with the bias
    broadcast over rows and ensemble members as the update uses it."""
    from robot_rl.algorithms.sac_handwritten import _add_relu_

    assert _add_relu_ is not None
    gen = torch.Generator().manual_seed(0)
    for x, bias in [(torch.randn(2, 37, 64, generator=gen), torch.randn(2, 1, 64, generator=gen)),
                    (torch.randn(300, 256, generator=gen), torch.randn(256, generator=gen))]:
        expected = (x + bias).relu()
        out = x.clone()
        assert _add_relu_(out, bias) is out
        assert torch.equal(out, expected) and bool((expected == 0).any()) and bool((expected > 0).any())


def optimizer_tensors(algo: SAC) -> list[torch.Tensor]:
    return [v for opt in (algo.actor_optimizer, algo.critic_optimizer) for state in opt.state.values()
            for v in state.values()]


@pytest.mark.parametrize("overrides", CONFIGS, ids=IDS)
def test_updates_match_the_autograd_path(overrides: list[str]) -> None:
    hand, auto = build(overrides), build(overrides + ["algo.handwritten_update=false"])
    assert hand._handwritten is not None and auto._handwritten is None
    assert auto.handwritten_fallback == "algo.handwritten_update=false"
    rng = np.random.default_rng(2)
    for step in range(5):
        batch = random_batch(rng)
        if step == 3:  # a checkpoint round trip: fresh optimizer state objects, the short paths rebuild
            # (a deep copy: torch.optim's load_state_dict keeps the given state tensors, which would be shared)
            hand.load_state_dict(copy.deepcopy(auto.state_dict()))
        torch.manual_seed(100 + step)
        ours = hand.update(batch)
        torch.manual_seed(100 + step)
        ref = auto.update(batch)
        assert ours.keys() == ref.keys()
        for key in ref:
            assert math.isclose(ours[key], ref[key], rel_tol=1e-4, abs_tol=1e-5), (step, key, ours[key], ref[key])
    tol = dict(rtol=1e-4, atol=2e-6)
    for module in ("policy", "critic", "target_critic"):
        ours, ref = getattr(hand, module).state_dict(), getattr(auto, module).state_dict()
        for (name, a), b in zip(ours.items(), ref.values()):
            torch.testing.assert_close(a, b, **tol, msg=lambda m: f"{module}.{name}: {m}")
    torch.testing.assert_close(hand.log_alpha, auto.log_alpha, **tol)
    for a, b in zip(optimizer_tensors(hand), optimizer_tensors(auto)):
        torch.testing.assert_close(a, b, **tol)
    assert (hand.num_updates, hand.num_critic_updates, hand.num_actor_updates) == (5, 5, 5)


@pytest.mark.parametrize("overrides, reason", [
    (["algo.critic_layer_norm=true"], "critic is not a plain MLP ensemble"),
    (["algo.value_loss=hl_gauss"], "value_loss=hl_gauss"),
    (["algo.num_critics=4"], "REDQ target subset"),
    (["algo.critic_updates_per_actor_update=2"], "critic UTD > 1"),
    (["algo.bf16_matmuls=true"], "bf16 autocast"),
])
def test_other_configurations_fall_back_to_autograd(overrides: list[str], reason: str) -> None:
    algo = build(overrides)
    assert algo._handwritten is None and algo.handwritten_fallback == reason
    metrics = algo.update(random_batch(np.random.default_rng(3)))
    assert all(math.isfinite(v) for v in metrics.values())
