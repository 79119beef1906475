"""The critic over-estimation check: start-state Q of finished online episodes against their realised returns."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.learner import Learner
from robot_rl.run_log import read_metrics
from robot_rl.types import Batch
from robot_rl.value_check import ValueCheck, discounted_returns
from support import run_with_actor_thread


def _episode(actor: str, episode_id: int, rewards: list[float], success: bool) -> Batch:
    """One finished episode as replay holds it: state = (step, episode id), terminated on success, else truncated
    at its last row."""
    n = len(rewards)
    state = np.stack([np.arange(n), np.full(n, episode_id)], 1).astype(np.float32)  # (T, 2)
    last = np.arange(n) == n - 1
    return Batch(obs={"state": state}, next_obs={"state": state + 1}, action=np.zeros((n, 1), np.float32),
                 reward=np.asarray(rewards, np.float32), terminated=last & success, truncated=last & (not success),
                 intervened=np.zeros(n, bool), policy_action=np.zeros((n, 1), np.float32),
                 episode_id=np.full(n, episode_id, np.int64), step=np.arange(n, dtype=np.int64),
                 actor_id=(actor,) * n)


def _rows(batch: Batch, rows: slice) -> Batch:
    mask = np.zeros(len(batch), bool)
    mask[rows] = True
    return batch.select(mask)


def test_discounted_returns_known_answer() -> None:
    np.testing.assert_allclose(discounted_returns(np.array([0.0, 0.0, 1.0]), 0.5), [0.25, 0.5, 1.0])
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 1.0]), 1.0), [2.0, 1.0])


def test_an_episode_is_kept_once_its_last_row_arrived_across_chunks_and_actors() -> None:
    check = ValueCheck(gamma=0.9, episodes=2)
    a, b = _episode("a", 0, [0, 0, 0, 1], True), _episode("b", 0, [0, 0, 0], False)  # same id, two actors
    check.observe(_rows(a, slice(0, 2)))
    check.observe(_rows(b, slice(0, 2)))
    assert not check.finished  # neither has ended yet
    check.observe(_rows(a, slice(2, 4)))
    assert len(check.finished) == 1 and len(check.finished[0]) == 4
    np.testing.assert_array_equal(check.finished[0].reward, a.reward)  # a's rows, in order, not b's
    check.observe(_rows(b, slice(2, 3)))
    check.observe(_episode("a", 1, [0, 1], True))
    assert [len(e) for e in check.finished] == [3, 2]  # keeps the last 2


def test_the_alarm_fires_on_a_critic_far_above_every_realised_return_and_not_on_an_honest_one(caplog) -> None:
    gamma = 0.9
    episodes = [_episode("a", i, [0.0] * 9 + [1.0], True) for i in range(3)] + \
               [_episode("a", 3 + i, [0.0] * 10, False) for i in range(3)]

    def honest_q(batch: Batch) -> np.ndarray:  # the true value of a success's steps, 0 for a failure's
        step, episode = batch.obs["state"][:, 0], batch.obs["state"][:, 1]
        return np.where(episode < 3, gamma ** (9 - step), 0.0)

    check = ValueCheck(gamma, episodes=6, head=5)
    for e in episodes:
        check.observe(e)
    with caplog.at_level(logging.WARNING, logger="robot_rl.value_check"):
        honest = check.check(honest_q, lambda b: b.reward)
        assert honest["value/overestimation_alarm"] == 0.0 and not caplog.records
        assert honest["value/gap"] == pytest.approx(0.0, abs=1e-6)
        expected_best = float(np.mean(gamma ** (9 - np.arange(5))))  # a success's first 5 steps
        assert honest["value/best_return_start"] == pytest.approx(expected_best)
        assert honest["value/return_start"] == pytest.approx(expected_best / 2)  # half the episodes failed
        inflated = check.check(lambda b: np.full(len(b), 10.0), lambda b: b.reward)  # Q 10 vs returns <= 1
        assert inflated["value/overestimation_alarm"] == 1.0
        assert inflated["value/q_start"] == pytest.approx(10.0)
        assert len([r for r in caplog.records if "over-estimation" in r.message]) == 1
        check.check(lambda b: np.full(len(b), 10.0), lambda b: b.reward)  # still in alarm: warned once
        assert len([r for r in caplog.records if "over-estimation" in r.message]) == 1
    # within the margin (best + 1.0) is not an alarm: a critic may fairly expect a little more than it saw
    assert check.check(lambda b: np.full(len(b), expected_best + 0.9), lambda b: b.reward)[
        "value/overestimation_alarm"] == 0.0
    # the rewards checked are the ones given (a learned reward's labels), not the recorded ones
    assert check.check(honest_q, lambda b: 20.0 * b.reward)["value/best_return_start"] == \
        pytest.approx(20 * expected_best)


def _learner_run(tmp_path, bias: float) -> tuple[Learner, list[dict]]:
    cfg = load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                       "logger.progress=false", "learner.warmup_transitions=64", "algo.batch_size=32",
                       "learner.max_env_steps=400", "learner.utd=0.25", "learner.publish_every=10",
                       "learner.value_check_every_s=0.2", "replay.prefetch=0", "transport.kind=inproc",
                       "transport.chunk_size=16"])
    learner = Learner(cfg)
    with torch.no_grad():  # the critic and its target agree on +bias: a self-consistent over-estimate
        learner.algo.critic.output_bias.add_(bias)
        learner.algo.target_critic.output_bias.add_(bias)
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    run_with_actor_thread(learner, actor, join_s=30)
    return learner, [r for r in read_metrics(tmp_path / "metrics_learner.jsonl") if "value/q_start" in r]


def test_the_learner_warns_about_a_critic_that_over_estimates_and_not_about_a_fresh_one(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="robot_rl.value_check"):
        learner, fresh = _learner_run(tmp_path / "fresh", 0.0)
        assert fresh, "the learner logged no value check"
        assert fresh[-1]["value/episodes"] >= 1 and fresh[-1]["value/overestimation_alarm"] == 0.0
        assert not [r for r in caplog.records if "over-estimation" in r.message]
        learner, biased = _learner_run(tmp_path / "biased", 50.0)
        assert biased[-1]["value/overestimation_alarm"] == 1.0 and biased[-1]["value/q_start"] > 20.0, biased[-1]
        assert [r for r in caplog.records if "over-estimation" in r.message]


def test_an_episode_whose_chunks_came_out_of_order_is_scored_in_step_order() -> None:
    episode = _episode("a", 0, [0.0, 0.0, 0.0, 1.0], True)
    check = ValueCheck(gamma=0.5, episodes=1, head=1)
    mask = np.array([True, False, True, False])
    check.observe(episode.select(mask))  # steps 0 and 2 (a resend after a reconnect may reorder rows)...
    check.observe(episode.select(~mask))  # ...then 1 and 3, which ends it
    assert list(check.finished[0].step) == [0, 2, 1, 3]
    out = check.check(lambda b: np.zeros(len(b)), lambda b: b.reward)
    assert out["value/best_return_start"] == pytest.approx(0.125)  # step 0's return: 0.5^3 x 1, in step order
    seen_from_the_middle = ValueCheck(gamma=0.5)
    seen_from_the_middle.observe(_rows(episode, slice(2, 4)))  # no start state: not an episode to score
    assert not seen_from_the_middle.finished and not seen_from_the_middle._open


def test_the_critic_is_handed_only_the_keys_it_reads() -> None:
    episode = _episode("a", 0, [0.0, 1.0], True)
    frames = np.zeros((2, 8, 8, 3), np.uint8)  # a reward model's camera, kept in replay beside the state
    episode = Batch(**{**episode.__dict__, "obs": {**episode.obs, "images/front": frames},
                       "next_obs": {**episode.next_obs, "images/front": frames}})
    check = ValueCheck(gamma=0.9, critic_keys=("state",))
    check.observe(episode)
    seen: list[set[str]] = []
    check.check(lambda b: (seen.append(set(b.obs)), np.zeros(len(b)))[1],
                lambda b: (seen.append(set(b.obs)), b.reward)[1])
    assert seen == [{"state", "images/front"}, {"state"}]  # the rewards see the frames, the critic does not


def test_memory_stays_bounded_with_a_fleet_and_an_actor_that_stops_mid_episode() -> None:
    check = ValueCheck(gamma=0.9, episodes=4, max_open=2, stale_after=3)
    starts = [_rows(_episode(f"robot{i}", 0, [0.0, 0.0, 1.0], True), slice(0, 1)) for i in range(5)]
    for part in starts:  # five robots start an episode: two are followed
        check.observe(part)
    assert len(check._open) == 2
    for _ in range(4):  # robot0 and robot1 stopped mid-episode: dropped after 3 calls without a row
        check.observe(_episode("robot9", 7, [0.0, 1.0], True))
    assert not check._open and len(check.finished) == 4  # robot9's episode counted each time it came whole
    check.observe(_rows(_episode("robot3", 1, [0.0, 1.0], True), slice(0, 1)))
    assert list(check._open) == [("robot3", 1)]  # a new episode is followed again
