"""SAC/RLPD learner: it learns PointReach, checkpoints round-trip exactly, pixels train the encoder via the
critic only, bad batches fail loudly, the RLPD ensemble runs, and warm starts behave."""
from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch

from robot_rl.algorithms.sac import SAC, RLPDConfig, SACConfig
from robot_rl.config import load_config
from robot_rl.policies.gaussian import GaussianPolicy
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.types import Batch, Transition

pytestmark = pytest.mark.usefixtures("single_thread")


def build(overrides: list[str], env: PointReach) -> SAC:
    cfg = load_config(["env=point_reach", "policy=gaussian", *overrides])
    policy = POLICIES.make("gaussian", cfg.policy, env.obs_spec, env.action_spec)
    return ALGORITHMS.make(cfg.algo.name, cfg.algo, policy, env.obs_spec, env.action_spec, "cpu")


def collect(env: PointReach, steps: int, seed: int) -> list[Transition]:
    """Uniformly random transitions (episodes reset on termination/truncation)."""
    rng = np.random.default_rng(seed)
    out: list[Transition] = []
    obs, episode, t = env.reset(seed=seed), 0, 0
    for _ in range(steps):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        res = env.step(action)
        out.append(Transition(obs, action, res.reward, res.obs, res.terminated, res.truncated, "a", episode, t))
        obs, t = res.obs, t + 1
        if res.terminated or res.truncated:
            obs, episode, t = env.reset(), episode + 1, 0
    return out


def torch_batch(transitions: list[Transition]) -> Batch:
    return Batch.from_transitions(transitions).to_torch("cpu")


def evaluate(policy: GaussianPolicy, episodes: int = 20, seed: int = 10_000) -> float:
    env = PointReach(PointReachConfig())
    successes = 0
    for i in range(episodes):
        obs = env.reset(seed=seed + i)
        for _ in range(env.max_episode_steps):
            res = env.step(policy.act(obs, deterministic=True))
            obs = res.obs
            if res.terminated or res.truncated:
                successes += int(res.success)
                break
    return successes / episodes


def test_sac_learns_point_reach() -> None:
    """Plain SAC from scratch (sparse reward, random warm-up, UTD 1) reaches >= 90% deterministic success."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    env = PointReach(PointReachConfig(), seed=0)
    # Default SAC config (init_temperature 0.1, no entropy backup) with smaller nets and faster learning rates.
    algo = build(["algo=sac", "algo.batch_size=128", "algo.critic_hidden_dims=[128,128]",
                  "policy.hidden_dims=[128,128]", "algo.actor_lr=1e-3", "algo.critic_lr=1e-3"], env)
    replay: list[Transition] = []
    random_steps, total_steps, eval_every = 500, 8000, 500
    obs, episode, t, success = env.reset(), 0, 0, 0.0
    start = time.perf_counter()
    for step in range(total_steps):
        if step < random_steps:
            action = rng.uniform(-1, 1, 2).astype(np.float32)
        else:
            action = algo.policy.act(obs)
        res = env.step(action)
        replay.append(Transition(obs, action, res.reward, res.obs, res.terminated, res.truncated, "a", episode, t))
        obs, t = res.obs, t + 1
        if res.terminated or res.truncated:
            obs, episode, t = env.reset(), episode + 1, 0
        if step >= random_steps:
            index = rng.integers(0, len(replay), algo.cfg.batch_size)
            metrics = algo.update(torch_batch([replay[i] for i in index]))
            assert all(np.isfinite(v) for v in metrics.values()), metrics
        if step >= 4 * random_steps and (step + 1) % eval_every == 0:
            success = evaluate(algo.policy)
            if success >= 0.9:
                break
    elapsed = time.perf_counter() - start
    assert success >= 0.9, f"success {success:.2f} after {step + 1} env steps ({elapsed:.0f}s)"


def test_state_dict_round_trip_reproduces_updates() -> None:
    env = PointReach(PointReachConfig(), seed=1)
    overrides = ["algo=sac", "algo.batch_size=64", "algo.critic_hidden_dims=[32,32]", "policy.hidden_dims=[32,32]"]
    torch.manual_seed(1)
    algo = build(overrides, env)
    data = collect(env, 300, seed=1)
    batches = [torch_batch(data[i:i + 64]) for i in range(0, 192, 64)]
    for batch in batches[:2]:
        algo.update(batch)
    saved = copy.deepcopy(algo.state_dict())
    torch.manual_seed(99)
    restored = build(overrides, env)  # different initial weights until loaded
    restored.load_state_dict(saved)
    torch.manual_seed(5)
    expected = algo.update(batches[2])
    torch.manual_seed(5)
    got = restored.update(batches[2])
    assert got == expected
    obs = batches[0].obs
    assert torch.equal(algo.policy.forward_act(obs, True), restored.policy.forward_act(obs, True))
    assert torch.equal(algo.critic(obs["state"], batches[0].action), restored.critic(obs["state"], batches[0].action))
    for a, b in zip(algo.target_critic.parameters(), restored.target_critic.parameters()):
        assert torch.equal(a, b)
    assert restored.num_updates == algo.num_updates == 3


def test_policy_weights_load_into_fresh_policy() -> None:
    env = PointReach(PointReachConfig(), seed=2)
    torch.manual_seed(2)
    algo = build(["algo=sac", "algo.batch_size=32", "policy.hidden_dims=[32,32]"], env)
    algo.update(torch_batch(collect(env, 32, seed=2)))
    weights = algo.policy_weights()
    assert all(t.device.type == "cpu" for t in weights.values())
    fresh = POLICIES.make("gaussian", algo.policy.cfg, env.obs_spec, env.action_spec)
    fresh.load_state_dict(weights)
    obs = {"state": np.random.default_rng(0).uniform(0, 1, (16, 6)).astype(np.float32)}
    np.testing.assert_array_equal(fresh.act(obs, deterministic=True), algo.policy.act(obs, deterministic=True))
    # A copy, not a view: further training does not change what was published.
    before = {k: v.clone() for k, v in weights.items()}
    algo.update(torch_batch(collect(env, 32, seed=3)))
    assert all(torch.equal(before[k], weights[k]) for k in weights)


def test_pixel_encoder_is_trained_by_the_critic_only() -> None:
    env = PointReach(PointReachConfig(obs="pixels", image_size=32), seed=3)
    torch.manual_seed(3)
    algo = build(["algo=sac", "policy.encoder=drq", "algo.batch_size=16", "algo.critic_hidden_dims=[32,32]",
                  "policy.hidden_dims=[32,32]", "policy.conv_channels=8", "policy.image_feature_dim=16"], env)
    assert algo._has_target_encoder and algo.encoder.output_dim == 6 + 16
    batch = torch_batch(collect(env, 16, seed=3))
    encoder_before = [p.detach().clone() for p in algo.encoder.parameters()]
    target_encoder_before = [p.detach().clone() for p in algo.target_encoder.parameters()]

    phase = {"actor": False}
    grads_in_actor_step: list[str] = []
    for name, param in algo.encoder.named_parameters():
        param.register_hook(lambda g, name=name: grads_in_actor_step.append(name) if phase["actor"] else None)
    actor_step = algo._actor_step

    def tracked_actor_step(*args, **kwargs):
        phase["actor"] = True
        try:
            return actor_step(*args, **kwargs)
        finally:
            phase["actor"] = False

    algo._actor_step = tracked_actor_step
    metrics = algo.update(batch)
    assert "actor_loss" in metrics and all(np.isfinite(v) for v in metrics.values())
    assert grads_in_actor_step == [], f"actor loss reached encoder params {grads_in_actor_step}"
    # The critic loss did train the encoder, and the target encoder moved toward it by Polyak averaging.
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, algo.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(target_encoder_before, algo.target_encoder.parameters()))
    # Acting never augments: the same image gives the same deterministic action.
    obs = {k: v[:4] for k, v in batch.obs.items()}
    assert torch.equal(algo.policy.forward_act(obs, True), algo.policy.forward_act(obs, True))


def test_nan_in_batch_raises() -> None:
    env = PointReach(PointReachConfig(), seed=4)
    algo = build(["algo=sac", "policy.hidden_dims=[16]", "algo.critic_hidden_dims=[16]"], env)
    clean = Batch.from_transitions(collect(env, 8, seed=4))
    for field in ("reward", "action", "obs", "next_obs"):
        bad = copy.deepcopy(clean)
        if field in ("obs", "next_obs"):
            getattr(bad, field)["state"][3, 1] = np.nan
        else:
            getattr(bad, field)[2] = np.inf if field == "reward" else np.nan
        with pytest.raises(ValueError, match="NaN"):
            algo.update(bad.to_torch("cpu"))
    assert algo.num_updates == 0
    algo.update(clean.to_torch("cpu"))  # the clean batch still works


def test_rlpd_ensemble_runs_with_critic_utd() -> None:
    env = PointReach(PointReachConfig(), seed=5)
    torch.manual_seed(5)
    algo = build(["algo=rlpd", "algo.batch_size=8", "algo.critic_hidden_dims=[32,32]", "policy.hidden_dims=[32,32]"],
                 env)
    assert isinstance(algo.cfg, RLPDConfig)
    assert (algo.cfg.num_critics, algo.cfg.target_subset_size, algo.cfg.critic_layer_norm) == (10, 2, True)
    assert algo.critic.layers[0].weight.shape == (10, 6 + 2, 32)
    assert algo.batch_size_per_update == 8 * algo.cfg.critic_updates_per_actor_update
    batch = torch_batch(collect(env, algo.batch_size_per_update, seed=5))
    actor_before = [p.detach().clone() for p in algo.policy.actor_parameters()]
    metrics = algo.update(batch)
    assert metrics["num_critic_updates"] == algo.cfg.critic_updates_per_actor_update
    assert algo.num_actor_updates == 1 and np.isfinite(metrics["actor_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, algo.policy.actor_parameters()))
    # Each ensemble member is its own network: members diverge, they are not copies.
    q = algo.critic(batch.obs["state"], batch.action)
    assert q.shape == (10, len(batch)) and q.std(0).mean() > 0


def test_terminal_transitions_do_not_bootstrap() -> None:
    """On terminated transitions with reward 1 the critic converges to 1; truncation keeps bootstrapping."""
    env = PointReach(PointReachConfig(), seed=6)
    torch.manual_seed(6)
    algo = build(["algo=sac", "algo.batch_size=32", "algo.critic_hidden_dims=[32,32]", "policy.hidden_dims=[32]",
                  "algo.critic_lr=3e-3", "algo.backup_entropy=false", "algo.tau=0.05"], env)
    batch = torch_batch(collect(env, 32, seed=6))
    batch.reward.fill_(1.0)
    batch.terminated.fill_(True)
    for _ in range(200):
        metrics = algo.update(batch)
    assert abs(metrics["q_mean"] - 1.0) < 0.1, metrics
    batch.terminated.fill_(False)
    batch.truncated.fill_(True)
    for _ in range(60):
        metrics = algo.update(batch)
    assert metrics["q_mean"] > 1.5, metrics  # r + 0.99 V(s') grows past 1 when bootstrapping


def test_warm_start_and_critic_warmup() -> None:
    env = PointReach(PointReachConfig(), seed=7)
    torch.manual_seed(7)
    overrides = ["algo=sac", "algo.batch_size=32", "algo.critic_hidden_dims=[32,32]", "policy.hidden_dims=[32,32]"]
    pretrained = build(overrides, env)
    pretrained.update(torch_batch(collect(env, 32, seed=7)))
    algo = build(overrides + ["algo.critic_warmup_updates=2"], env)
    algo.load_pretrained(pretrained.policy_weights(), pretrained.critic.state_dict())
    for a, b in zip(algo.target_critic.parameters(), pretrained.critic.parameters()):
        assert torch.equal(a, b)  # targets restart from the loaded critic
    actor_before = [p.detach().clone() for p in algo.policy.actor_parameters()]
    batch = torch_batch(collect(env, 32, seed=8))
    for _ in range(2):
        assert "actor_loss" not in algo.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(actor_before, algo.policy.actor_parameters()))
    assert "actor_loss" in algo.update(batch)
    assert algo.num_actor_updates == 1 and algo.num_critic_updates == 3
    offline = collect(env, 64, seed=9)
    out = algo.warm_up_critic(lambda: torch_batch(offline[:32]), num_updates=2)
    assert np.isfinite(out["critic_loss"]) and algo.num_critic_updates == 5 and algo.num_actor_updates == 1


def test_configs_are_registered_and_sealed() -> None:
    cfg = load_config(["algo=rlpd"])
    assert isinstance(cfg.algo, RLPDConfig) and isinstance(cfg.algo, SACConfig)
    assert {"sac", "rlpd"} <= set(ALGORITHMS.names())
    with pytest.raises(Exception):
        cfg.algo.num_critics = 3  # type: ignore[misc]
    with pytest.raises(Exception):
        load_config(["algo=sac", "algo.no_such_field=1"])


def test_bf16_matmul_option_updates_finitely() -> None:
    env = PointReach(PointReachConfig(), seed=8)
    torch.manual_seed(8)
    algo = build(["algo=sac", "algo.batch_size=32", "algo.critic_hidden_dims=[32,32]", "policy.hidden_dims=[32]",
                  "algo.bf16_matmuls=true"], env)
    batch = torch_batch(collect(env, 32, seed=8))
    critic_before = [p.detach().clone() for p in algo.critic.parameters()]
    metrics = algo.update(batch)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert all(p.dtype == torch.float32 for p in algo.critic.parameters())  # weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, algo.critic.parameters()))


def expert_transitions(env: PointReach, steps: int, seed: int) -> list[Transition]:
    """PointReach demonstrations: a proportional controller on the goal offset (state[4:6])."""
    out: list[Transition] = []
    obs, episode, t = env.reset(seed=seed), 0, 0
    for _ in range(steps):
        state = obs["state"]
        action = np.clip(4.0 * state[4:6], -1, 1).astype(np.float32)
        res = env.step(action)
        out.append(Transition(obs, action, res.reward, res.obs, res.terminated, res.truncated, "demo", episode, t))
        obs, t = res.obs, t + 1
        if res.terminated or res.truncated:
            obs, episode, t = env.reset(), episode + 1, 0
    return out


def test_offline_pretrain_clones_demos_and_bc_term_only_touches_demo_rows() -> None:
    env = PointReach(PointReachConfig(), seed=3)
    torch.manual_seed(3)
    overrides = ["algo=sac", "algo.batch_size=64", "algo.bc_weight=1.0"]
    algo = build(overrides, env)
    demos = Batch.from_transitions(expert_transitions(env, 512, seed=3))
    rng = np.random.default_rng(0)

    def demo_batch() -> Batch:
        batch = demos.select(rng.integers(0, len(demos), 64))
        batch.from_demo = np.ones(64, bool)
        return batch.to_torch("cpu")

    untrained = evaluate(algo.policy, episodes=10)
    first = algo.update(demo_batch(), bc_only=True)["bc_loss"]
    metrics = algo.pretrain_offline(demo_batch, num_updates=300)
    assert algo.num_updates == 0  # offline steps do not spend the online UTD budget
    assert metrics["bc_loss"] < 0.2 * first and metrics["actor_loss"] == metrics["bc_loss"]
    assert evaluate(algo.policy, episodes=10) >= max(0.8, untrained)  # cloning the controller reaches goals
    # Online update with no demo row in the minibatch: the BC term is exactly zero.
    online = torch_batch(collect(env, 64, seed=4))
    online.from_demo = torch.zeros(64, dtype=torch.bool)
    assert algo.update(online)["bc_loss"] == 0.0
    # Without a mask (a batch not from the mixed sampler) the algorithm runs plain SAC.
    assert algo.update(torch_batch(collect(env, 64, seed=5)))["bc_loss"] == 0.0


def test_state_normalisation_travels_with_the_policy_weights() -> None:
    env = PointReach(PointReachConfig(), seed=1)
    algo = build(["algo=sac"], env)
    states = torch.as_tensor(np.stack([t.obs["state"] for t in collect(env, 200, seed=1)]))
    assert algo.policy.fit_state_normalization(states)
    weights = algo.policy_weights()
    assert torch.allclose(weights["encoder.state_mean"], states.mean(0))
    fresh = POLICIES.make("gaussian", load_config(["env=point_reach"]).policy, env.obs_spec, env.action_spec)
    fresh.load_state_dict(weights)
    obs = {"state": states[:5]}
    assert torch.equal(fresh.forward_act(obs, deterministic=True), algo.policy.forward_act(obs, deterministic=True))
    features = fresh.encoder(obs)
    expected = ((states[:5] - states.mean(0)) / states.std(0).clamp(min=1e-2)).clamp(-10, 10)
    assert torch.allclose(features, expected, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        fresh.encoder.set_state_normalization(torch.full((6,), float("nan")), torch.ones(6))
    off = POLICIES.make("gaussian", load_config(["env=point_reach", "policy.normalize_state=false"]).policy,
                        env.obs_spec, env.action_spec)
    assert not off.fit_state_normalization(states)


def test_discrete_gripper_critic_learns_the_rewarded_command_and_imitates_demos() -> None:
    """A one-step task where only the gripper matters: reward 1 when the command closes (+1) exactly when
    state[0] > 0. The grasp critic (double DQN) must learn that rule; BC margin must copy a demo's rule."""
    from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec

    obs_spec = ObsSpec({"state": ArraySpec((3,), "float32")})
    action_spec = ActionSpec((4,), (-1.0,) * 4, (1.0,) * 4, ("dx", "dy", "dz", "grip"))
    cfg = load_config(["env=point_reach", "algo=sac", "algo.batch_size=128", "policy.discrete_gripper=true",
                       "policy.gripper_epsilon=0.0", "policy.grasp_hidden_dims=[64,64]"])
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def batch(rule: np.ndarray | None = None, demo: bool = False) -> Batch:
        state = rng.normal(size=(128, 3)).astype(np.float32)
        grip = rng.choice([-1.0, 1.0], 128) if rule is None else rule(state)
        action = np.concatenate([rng.uniform(-1, 1, (128, 3)), grip[:, None]], 1).astype(np.float32)
        reward = ((grip > 0) == (state[:, 0] > 0)).astype(np.float32)
        n = 128
        b = Batch(obs={"state": state}, next_obs={"state": state}, action=action, policy_action=action,
                  reward=reward, terminated=np.ones(n, bool), truncated=np.zeros(n, bool),
                  intervened=np.zeros(n, bool), episode_id=np.zeros(n, np.int64), step=np.zeros(n, np.int64),
                  from_demo=np.full(n, demo))
        return b.to_torch("cpu")

    policy = POLICIES.make("gaussian", cfg.policy, obs_spec, action_spec)
    algo = ALGORITHMS.make("sac", cfg.algo, policy, obs_spec, action_spec, "cpu")
    assert algo.target_entropy == -3.0  # the gripper is not part of the Gaussian
    test_states = {"state": torch.as_tensor(rng.normal(size=(500, 3)), dtype=torch.float32)}
    for _ in range(200):
        metrics = algo.update(batch())
    assert "grasp_loss" in metrics and np.isfinite(metrics["grasp_loss"])
    chosen = policy.forward_act(test_states, deterministic=True)[:, 3]
    assert set(chosen.unique().tolist()) <= {-1.0, 1.0}
    accuracy = ((chosen > 0) == (test_states["state"][:, 0] > 0)).float().mean()
    assert accuracy > 0.9, accuracy

    # Offline BC (bc_only) on demos that follow the opposite rule, with zero reward: the margin loss alone
    # must teach the demonstrated command.
    fresh = POLICIES.make("gaussian", cfg.policy, obs_spec, action_spec)
    bc_algo = ALGORITHMS.make("sac", cfg.algo, fresh, obs_spec, action_spec, "cpu")
    opposite = lambda s: np.where(s[:, 0] > 0, -1.0, 1.0)  # noqa: E731
    bc_algo.pretrain_offline(lambda: batch(opposite, demo=True), 120)
    chosen = fresh.forward_act(test_states, deterministic=True)[:, 3]
    assert ((chosen < 0) == (test_states["state"][:, 0] > 0)).float().mean() > 0.9
    # The grasp critic is part of the policy's weights (what actors receive) and checkpoints round-trip.
    assert any(k.startswith("grasp_critic.") for k in bc_algo.policy_weights())
    state = bc_algo.state_dict()
    again = ALGORITHMS.make("sac", cfg.algo, POLICIES.make("gaussian", cfg.policy, obs_spec, action_spec),
                            obs_spec, action_spec, "cpu")
    again.load_state_dict(state)
    assert torch.equal(again.policy.forward_act(test_states, deterministic=True),
                       fresh.forward_act(test_states, deterministic=True))
    with pytest.raises(ValueError, match="grip"):
        POLICIES.make("gaussian", cfg.policy, obs_spec,
                      ActionSpec((4,), (-1.0,) * 4, (1.0,) * 4, ("a", "b", "c", "d")))
