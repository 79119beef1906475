"""ADPO's optimizer (ADAPG): Adam at lambda = 1, RMSProp's direction at lambda = 0, and it minimises a toy problem."""
from __future__ import annotations

import pytest
import torch

from robot_rl.algorithms.adpo import ADAPG, ADPO
from robot_rl.config import load_config
from robot_rl.registry import ALGORITHMS, POLICIES
from test_chunk_finetune import ENV

pytestmark = pytest.mark.usefixtures("single_thread")


def run(opt_factory, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(7))
    target = torch.linspace(-1, 1, 7)
    opt = opt_factory([w])
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2 * torch.arange(1.0, 8.0)).sum().backward()
        opt.step()
    return w.detach()


def test_adapg_is_adam_at_lambda_one() -> None:
    ours = run(lambda p: ADAPG(p, lr=0.05, lam=1.0))
    adam = run(lambda p: torch.optim.Adam(p, lr=0.05, eps=1e-8))
    assert torch.allclose(ours, adam, atol=1e-6)


def test_adapg_lambda_zero_steps_along_the_raw_gradient() -> None:
    w = torch.nn.Parameter(torch.zeros(3))
    opt = ADAPG([w], lr=0.1, lam=0.0)
    w.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()  # first step: v^ = g^2, so the step is lr * sign(g) for both Adam and RMSProp ...
    g1, g2 = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([-1.0, -2.0, 0.5])
    w.grad = g2
    before = w.detach().clone()
    opt.step()
    # lambda = 0: the step is RMSProp's -lr g / sqrt(v^) (bias-corrected second moment), no momentum at all.
    v_hat = (0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2) / (1 - 0.999 ** 2)
    assert torch.allclose(w.detach() - before, -0.1 * g2 / (v_hat.sqrt() + 1e-8), atol=1e-6)
    adam_w = torch.nn.Parameter(torch.zeros(3))
    adam = torch.optim.Adam([adam_w], lr=0.1)
    for g in ([1.0, -2.0, 0.5], [-1.0, -2.0, 0.5]):
        adam_w.grad = torch.tensor(g)
        adam.step()
    assert not torch.allclose(adam_w.detach(), w.detach())  # lambda really changes the update


def test_adapg_minimises_a_quadratic() -> None:
    w = run(lambda p: ADAPG(p, lr=0.05, lam=0.5, weight_decay=1e-4), steps=400)
    assert torch.allclose(w, torch.linspace(-1, 1, 7), atol=0.02)


def test_adpo_uses_adapg_for_the_denoiser() -> None:
    cfg = load_config(["env=point_reach", "policy=diffusion", "policy.backbone=mlp", "policy.width=32",
                       "policy.depth=2", "policy.chunk_size=1", "policy.inference_steps=3", "algo=adpo",
                       "algo.adapg_lambda=0.5"])
    policy = POLICIES.make("diffusion", cfg.policy, ENV.obs_spec, ENV.action_spec)
    algo = ALGORITHMS.make("adpo", cfg.algo, policy, ENV.obs_spec, ENV.action_spec, "cpu")
    assert isinstance(algo, ADPO) and isinstance(algo.actor_opt, ADAPG)
    assert algo.actor_opt.param_groups[0]["lam"] == 0.5
    assert {id(p) for p in algo.actor_opt.param_groups[0]["params"]} == {id(p) for p in policy.denoiser.parameters()}


def test_adpo_trains_through_the_learner(tmp_path) -> None:
    from robot_rl.actor import Actor
    from robot_rl.learner import Learner
    from support import run_with_actor_thread

    cfg = load_config(["env=point_reach", "policy=diffusion", "policy.backbone=mlp", "policy.width=32",
                       "policy.depth=2", "policy.chunk_size=1", "policy.execute_steps=1", "policy.inference_steps=3",
                       "algo=adpo", "algo.batch_size=32", "algo.critic_hidden_dims=[32,32]",
                       "algo.critic_warmup_updates=5", "algo.iteration_updates=5", f"run_dir={tmp_path}",
                       "logger.wandb=disabled", "logger.progress=false", "learner.warmup_transitions=64",
                       "learner.max_env_steps=200", "learner.utd=0.25", "learner.publish_every=10",
                       "replay.prefetch=0", "transport.kind=inproc", "transport.chunk_size=16"])
    learner = Learner(cfg)
    before = {k: v.clone() for k, v in learner.algo.policy.denoiser.state_dict().items()}
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, _ = run_with_actor_thread(learner, actor, join_s=30)
    algo = learner.algo
    assert learned["updates"] >= 49 and algo.ppo_updates == algo.updates - 5
    assert algo.accepted + algo.rejected == algo.ppo_updates // 5  # the OPE gate ran once per iteration
    steps = [s["step"] for s in algo.actor_opt.state.values()]
    assert steps and min(steps) == algo.ppo_updates  # every denoiser parameter took every ADAPG step
    if algo.accepted:  # an accepted iteration moved the denoiser (rejected ones are rolled back)
        after = algo.policy.denoiser.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
