"""The compact VLA: language-conditioned multi-task BC, instructions steer actions, DSRL fine-tunes it unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.algorithms.dsrl import DSRL, DSRLConfig
from robot_rl.config import load_config
from robot_rl.policies.chunking import ChunkBatch
from robot_rl.registry import POLICIES
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from support import batch_from_obs

pytestmark = pytest.mark.usefixtures("single_thread")

TASKS = ["move the point to the goal", "move the point away from the goal"]
ENV = PointReach(PointReachConfig(obs="pixels", image_size=16))
SMALL = ["env=point_reach", "env.obs=pixels", "env.image_size=16", "policy=vla", "policy.d_model=32",
         "policy.num_heads=2", "policy.num_layers=1", "policy.width=64", "policy.depth=2", "policy.chunk_size=2",
         "policy.inference_steps=5", "policy.stem_channels=8", "policy.noise_actor_hidden_dims=[32,32]"]


def make_vla(*overrides: str):
    cfg = load_config([*SMALL, *overrides]).policy
    return POLICIES.make("vla", cfg, ENV.obs_spec, ENV.action_spec)


def observations(n: int, seed: int) -> dict[str, np.ndarray]:
    env = PointReach(PointReachConfig(obs="pixels", image_size=16), seed=seed)
    obs = [env.reset(seed=seed + i) for i in range(n)]
    return {k: np.stack([o[k] for o in obs]) for k in obs[0]}


def multitask_dataset(n: int, seed: int) -> ChunkBatch:
    """The same ``n`` observations under both tasks: towards the goal (task 0) and away from it (task 1)."""
    obs = observations(n, seed)
    towards = np.clip(obs["state"][:, 4:6] * 3.0, -0.9, 0.9).astype(np.float32)  # (n, 2)
    chunks = np.concatenate([towards, -towards])[:, None].repeat(2, axis=1)  # (2n, H=2, 2)
    both = {k: np.concatenate([v, v]) for k, v in obs.items()}
    task_id = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    return ChunkBatch(both, chunks, task_id).to_torch()


@pytest.mark.parametrize("head,steps,tol", [("flow", 500, 0.15), ("diffusion", 500, 0.2)])
def test_vla_overfits_a_multitask_dataset_and_follows_the_instruction(head: str, steps: int, tol: float) -> None:
    torch.manual_seed(0)
    policy = make_vla(f"policy.action_head={head}", "policy.augment_pad=0")
    policy.set_tasks(TASKS)
    data = multitask_dataset(12, seed=0)
    policy.fit_state_normalization(data.obs["state"])
    opt = torch.optim.Adam(policy.generator_parameters(), lr=2e-3)
    for _ in range(steps):
        loss = policy.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    with torch.no_grad():
        cond = policy.features(data.obs, data.task_id)
        pred = policy.sample(cond, torch.zeros(len(data), 2, 2))  # deterministic, normalised == env units here
    err = (pred - data.action).abs().mean().item()
    assert err < tol, f"VLA ({head}) did not overfit its multi-task dataset: mean |err| {err:.3f}"

    # The same observation, two instructions: opposite actions, and the instruction path (set_instruction: text
    # embedded at run time) gives exactly what the stored task table gives.
    obs = {k: v[0].numpy() for k, v in data.obs.items()}
    acts = []
    for i, text in enumerate(TASKS):
        policy.set_instruction(text)
        policy.reset()
        a = policy.act(obs, deterministic=True)
        acts.append(a)
        np.testing.assert_allclose(a, pred[i * 12, 0].numpy(), atol=1e-5)
    target = data.action[0, 0].numpy()  # task 0 wants `target`, task 1 wants `-target`
    assert float(np.dot(acts[0], target)) > 0.0 > float(np.dot(acts[1], target)), acts
    assert np.linalg.norm(acts[0] - acts[1]) > np.linalg.norm(target), f"instructions barely changed the action {acts}"


def test_vla_diffusion_head_task_table_and_bad_inputs() -> None:
    policy = make_vla("policy.action_head=diffusion")
    with pytest.raises(RuntimeError, match="no task"):  # neither a task table nor an instruction yet
        policy.features({k: torch.as_tensor(v) for k, v in observations(1, 1).items()})
    policy.set_tasks(TASKS)
    data = multitask_dataset(3, seed=1)
    loss = policy.loss(data)
    assert torch.isfinite(loss) and loss.item() > 0
    bad = ChunkBatch(data.obs, data.action, torch.full((6,), 5))
    with pytest.raises(ValueError, match="task_id"):
        policy.loss(bad)
    with pytest.raises(ValueError, match="uint8"):
        policy.features({"state": data.obs["state"], "images/top": data.obs["images/top"].float()})
    assert int(policy.encoder.num_tasks) == 2
    # The task table travels with the weights: a fresh actor-side copy acts on task 0 without set_tasks.
    copy = make_vla("policy.action_head=diffusion")
    copy.load_state_dict(policy.state_dict(), strict=True)
    obs = {k: v[0].numpy() for k, v in data.obs.items()}
    np.testing.assert_allclose(copy.act(obs, deterministic=True), policy.act(obs, deterministic=True), atol=1e-6)
    with pytest.raises(ValueError, match="action_head"):
        make_vla("policy.action_head=gaussian")


def test_dsrl_fine_tunes_the_vla_unchanged() -> None:
    torch.manual_seed(0)
    policy = make_vla(f"policy.instruction={TASKS[1]}")
    policy.set_tasks(TASKS)
    frozen = {k: v.clone() for k, v in policy.state_dict().items() if k.startswith(("encoder.", "denoiser."))}
    algo = DSRL(DSRLConfig(batch_size=16, critic_hidden_dims=[32, 32]), policy, ENV.obs_spec, ENV.action_spec)
    n = 16
    obs, next_obs = observations(n, 2), observations(n, 3)
    rng = np.random.default_rng(0)
    action = torch.as_tensor(rng.uniform(-1, 1, (n, 2)).astype(np.float32))
    batch = batch_from_obs(obs, next_obs, action, torch.as_tensor(rng.normal(size=n).astype(np.float32)))
    head_before = policy.noise_actor.head.weight.clone()
    for _ in range(5):
        metrics = algo.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    assert not torch.equal(policy.noise_actor.head.weight, head_before)
    for k, v in policy.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), f"DSRL changed the frozen VLA weight {k}"
    actor_copy = make_vla(f"policy.instruction={TASKS[1]}")
    actor_copy.load_state_dict(algo.policy_weights(), strict=True)
    assert actor_copy.steer_noise.item() == 1.0
    a = actor_copy.act({k: v[:4] for k, v in obs.items()})
    assert a.shape == (4, 2) and np.isfinite(a).all() and np.abs(a).max() <= 1.0
