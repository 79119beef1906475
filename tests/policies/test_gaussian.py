"""GaussianPolicy and the observation encoder: bounds, log-probabilities, BC, pixels and augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.config import load_config
from robot_rl.policies.encoders import ObservationEncoder, random_shift
from robot_rl.policies.gaussian import GaussianPolicy, GaussianPolicyConfig
from robot_rl.registry import POLICIES
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.types import Batch, Transition

pytestmark = pytest.mark.usefixtures("single_thread")


def make_policy(obs_spec: ObsSpec, action_spec: ActionSpec, **overrides) -> GaussianPolicy:
    return GaussianPolicy(GaussianPolicyConfig(**overrides), obs_spec, action_spec)


def test_registered_and_built_from_config() -> None:
    cfg = load_config(["policy=gaussian", "policy.hidden_dims=[64,32]"])
    assert isinstance(cfg.policy, GaussianPolicyConfig) and cfg.policy.hidden_dims == (64, 32)
    env = PointReach(PointReachConfig())
    policy = POLICIES.make("gaussian", cfg.policy, env.obs_spec, env.action_spec)
    assert isinstance(policy, GaussianPolicy)
    assert [m.out_features for m in policy.trunk if isinstance(m, torch.nn.Linear)] == [64, 32]


def test_actions_respect_asymmetric_bounds() -> None:
    torch.manual_seed(0)
    obs_spec = ObsSpec({"state": ArraySpec((5,), "float32")})
    action_spec = ActionSpec((3,), (-2.0, 0.0, 10.0), (0.0, 0.5, 30.0))
    policy = make_policy(obs_spec, action_spec, hidden_dims=[16])
    obs = {"state": np.random.default_rng(0).normal(0, 3, (512, 5)).astype(np.float32)}
    stochastic = policy.act({"state": np.repeat(obs["state"][:1], 64, 0)})
    assert stochastic.std(0).min() > 0  # sampling is really stochastic
    with torch.no_grad():  # large weights push tanh into saturation: bounds must still hold
        policy.head.weight.mul_(50.0)
    for deterministic in (True, False):
        action = policy.act(obs, deterministic=deterministic)
        assert action.shape == (512, 3) and action.dtype == np.float32
        action_spec.check(action, batched=True)
    single = policy.act({"state": obs["state"][0]}, deterministic=True)
    np.testing.assert_allclose(single, policy.act(obs, deterministic=True)[0], rtol=1e-6)


def test_sample_log_prob_matches_log_prob_of_the_sampled_action() -> None:
    torch.manual_seed(1)
    obs_spec = ObsSpec({"state": ArraySpec((4,), "float32")})
    action_spec = ActionSpec((2,), (-3.0, 0.0), (1.0, 2.0))
    policy = make_policy(obs_spec, action_spec, hidden_dims=[32], bc_clip_eps=1e-7)
    obs = {"state": torch.randn(256, 4)}
    with torch.no_grad():
        action, log_prob = policy.sample(obs)
        recomputed = policy.log_prob(obs, action)
    torch.testing.assert_close(log_prob, recomputed, atol=2e-3, rtol=1e-3)
    # Squashed density in [-1, 1]^A integrates to ~1: check with a Monte-Carlo volume estimate for one state.
    one = {"state": torch.zeros(200_000, 4)}
    squashed = torch.rand(200_000, 2) * 2 - 1
    env_action = squashed * policy.action_scale + policy.action_bias
    with torch.no_grad():
        density = policy.log_prob(one, env_action).exp()
    assert abs(float(density.mean() * 4.0) - 1.0) < 0.05


def test_bc_loss_decreases_on_expert_data_and_imitates() -> None:
    torch.manual_seed(2)
    env = PointReach(PointReachConfig(), seed=2)
    expert = env.expert()
    transitions = []
    for episode in range(20):
        obs = env.reset(seed=episode)
        for t in range(env.max_episode_steps):
            action = expert.act(obs)
            res = env.step(action)
            transitions.append(Transition(obs, action, res.reward, res.obs, res.terminated, res.truncated, "e",
                                          episode, t))
            obs = res.obs
            if res.terminated or res.truncated:
                break
    batch = Batch.from_transitions(transitions).to_torch("cpu")
    policy = make_policy(env.obs_spec, env.action_spec, hidden_dims=[64, 64])
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    first = float(policy.loss(batch).detach())
    for _ in range(300):
        loss = policy.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = float(policy.loss(batch).detach())
    assert last < first - 2.0, (first, last)
    with torch.no_grad():
        mean_action = policy.forward_act(batch.obs, deterministic=True)
    assert float((mean_action - batch.action).abs().mean()) < 0.15


def test_random_shift_is_a_bounded_integer_translation() -> None:
    torch.manual_seed(3)
    images = torch.randint(0, 256, (8, 20, 20, 3), dtype=torch.uint8)
    assert torch.equal(random_shift(images, 0), images)
    shifted = random_shift(images, 4)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    for i in range(8):  # every sample equals the replicate-padded image cropped at some offset in [0, 8]^2
        padded = torch.nn.functional.pad(images[i].permute(2, 0, 1).float()[None], (4, 4, 4, 4), mode="replicate")
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[0, :, dy:dy + 20, dx:dx + 20], shifted[i].permute(2, 0, 1).float())]
        assert matches, f"sample {i} is not a shifted crop"


def test_pixel_encoder_fuses_cameras_and_state() -> None:
    torch.manual_seed(4)
    obs_spec = ObsSpec({"state": ArraySpec((7,), "float32"), "images/front": ArraySpec((32, 32, 3), "uint8"),
                        "images/wrist": ArraySpec((24, 24, 3), "uint8")})
    encoder = ObservationEncoder(obs_spec, conv_channels=8, conv_layers=4, image_feature_dim=12)
    assert encoder.output_dim == 7 + 2 * 12 and set(encoder.cameras) == {"front", "wrist"}
    obs = {"state": torch.randn(5, 7), "images/front": torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8),
           "images/wrist": torch.randint(0, 256, (5, 24, 24, 3), dtype=torch.uint8)}
    features = encoder(obs)
    assert features.shape == (5, 31)
    torch.testing.assert_close(features[:, :7], obs["state"])
    assert features[:, 7:].abs().max() <= 1.0  # tanh bottleneck
    assert torch.equal(encoder(obs), features)  # no augmentation unless asked
    assert not torch.equal(encoder(obs, augment=True), features)
    action_spec = ActionSpec((4,), -1.0, 1.0)
    policy = make_policy(obs_spec, action_spec, encoder="drq", conv_channels=8, image_feature_dim=12, hidden_dims=[16])
    np_obs = {k: v.numpy() for k, v in obs.items()}
    assert policy.act(np_obs, deterministic=True).shape == (5, 4)
    assert policy.act({k: v[0] for k, v in np_obs.items()}).shape == (4,)
