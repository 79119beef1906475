"""What the TD target may bootstrap from: bounded targets (``algo.td_target_min/max``) and n-step windows at
episode ends (a time-limit truncation bootstraps, a success terminal does not, no window crosses into the next
episode)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.replay import ReplayBuffer
from robot_rl.sequence_replay import n_step_rows, sample_sequences
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from robot_rl.types import Batch, Transition
from test_sac import build, collect, torch_batch

pytestmark = pytest.mark.usefixtures("single_thread")


def _q_after_fitting_an_inflated_target(bounds: list[str]) -> torch.Tensor:
    """Freeze the target critic at V' ~ 10 everywhere (output bias 10, ``tau=0``) and fit the critic to it on
    non-terminal rows of PointReach (rewards 0 or 1): unbounded, Q -> r + gamma * 10 ~ 9.9."""
    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=rlpd_cpu", "algo.offline_pretrain_updates=0", "algo.tau=0", "algo.critic_lr=3e-3",
                  "algo.batch_size=64", *bounds], env)
    with torch.no_grad():
        algo.target_critic.output_bias.fill_(10.0)
    batch = torch_batch([t for t in collect(env, 400, 0) if not t.terminated][:128])  # 2 minibatches of 64
    for _ in range(300):
        algo.update(batch)
    with torch.no_grad():
        return algo._q(algo.critic(algo.encoder(batch.obs), batch.action))  # (E, 128)


def test_clipped_td_targets_keep_q_inside_the_achievable_range() -> None:
    bounded = _q_after_fitting_an_inflated_target(["algo.td_target_min=0", "algo.td_target_max=1"])
    assert bounded.max() <= 1.05 and bounded.min() >= -0.05, (bounded.min(), bounded.max())
    # The same fit without the bound follows the inflated bootstrap: the bound is what held Q down.
    unbounded = _q_after_fitting_an_inflated_target([])
    assert unbounded.mean() > 5.0, unbounded.mean()


def test_td_target_bounds_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="td_target_min < td_target_max"):
        build(["algo=rlpd_cpu", "algo.td_target_min=1", "algo.td_target_max=0"], PointReach(PointReachConfig()))


def test_redq_target_is_the_min_over_a_random_pair_of_target_critics() -> None:
    """4 target critics frozen at constant values 0.1, 0.2, 0.3, 0.4 (last layer's weights zeroed, ``tau=0``) and
    ``target_subset_size=2``: the critic, fitted on reward-0 non-terminal rows, converges to gamma times the mean over
    the 6 pairs of the pair's min, (3 * 0.1 + 2 * 0.2 + 0.3) / 6 = 1/6. The min over all 4 would give 0.1 and the
    ensemble mean 0.25: the random subset is REDQ's middle ground of pessimism (Chen et al. 2021)."""
    torch.manual_seed(0)
    env = PointReach(PointReachConfig(), seed=0)
    algo = build(["algo=rlpd_cpu", "algo.offline_pretrain_updates=0", "algo.num_critics=4", "algo.target_subset_size=2",
                  "algo.tau=0", "algo.critic_lr=1e-3", "algo.batch_size=64", "algo.gamma=0.9"], env)
    with torch.no_grad():
        algo.target_critic.layers[-1].weight.zero_()
        algo.target_critic.output_bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]).view(4, 1, 1))
    rows = [t for t in collect(env, 600, 0) if not t.terminated and t.reward == 0][:128]
    batch = torch_batch(rows)
    tail = []  # Q follows each step's random pair a little: average it over the last 200 updates
    for i in range(600):
        algo.update(batch)
        if i >= 400:
            with torch.no_grad():
                tail.append(float(algo._q(algo.critic(algo.encoder(batch.obs), batch.action)).mean()))
    q = sum(tail) / len(tail)
    assert abs(q - 0.9 / 6) < 0.02, q  # not 0.9 * 0.1 = 0.09 (min of all) nor 0.9 * 0.25 (mean)


def _episode(episode_id: int, length: int, success: bool, action_base: float) -> list[Transition]:
    """``length`` steps of one episode; the last one terminates with reward 1 (success) or is truncated by the
    time limit with reward 0 (failure). Observations and actions are unique, so windows can be located."""
    out = []
    for t in range(length):
        obs = {"state": np.full(6, 100 * episode_id + t, np.float32)}
        nxt = {"state": np.full(6, 100 * episode_id + t + 1, np.float32)}
        last = t == length - 1
        out.append(Transition(obs, np.array([action_base + t, 0.0], np.float32), float(last and success), nxt,
                              last and success, last and not success, "a", episode_id, t))
    return out


def test_n_step_windows_bootstrap_truncated_failures_and_stop_at_success_terminals() -> None:
    gamma, horizon = 0.9, 3
    failed, succeeded = _episode(0, 5, False, 0.0), _episode(1, 4, True, 10.0)  # stored back to back
    env = PointReach(PointReachConfig())
    buffer = ReplayBuffer(env.obs_spec, env.action_spec, 100)
    buffer.add_batch(Batch.from_transitions(failed + succeeded))
    seq = sample_sequences(buffer, 400, horizon, np.random.default_rng(0)).to_torch()
    rows, bootstrap = n_step_rows(seq, gamma)
    weight = gamma * bootstrap * torch.logical_not(rows.terminated).float()  # (N,): weight of V(next_obs)
    seen = set()
    for i in range(len(seq)):
        start = float(seq.action[i, 0, 0])
        episode, t = (failed, int(start)) if start < 10 else (succeeded, int(start - 10))
        length = int(seq.length[i])
        assert length == min(horizon, len(episode) - t)  # windows never cross an episode's end
        last = episode[t + length - 1]
        assert np.array_equal(seq.next_obs["state"][i].numpy(), last.next_obs["state"])  # not the next reset
        expected_reward = sum(gamma ** k * episode[t + k].reward for k in range(length))
        assert float(rows.reward[i]) == pytest.approx(expected_reward)
        if last.terminated:  # the success ends the MDP: the target is the discounted reward alone
            assert float(weight[i]) == 0.0
        else:  # mid-episode or time-limit truncated failure: bootstrap from the state reached after L steps
            assert float(weight[i]) == pytest.approx(gamma ** length)
        seen.add((start < 10, last.terminated, last.truncated))
    # Both episode ends, and windows in the middle of each, were drawn.
    assert {(True, False, True), (False, True, False), (True, False, False), (False, False, False)} <= seen
