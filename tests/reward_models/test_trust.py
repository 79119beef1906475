"""Trust tools: calibration with a known answer, the reward-hacking alarm (fires on a hackable reward, silent
on a good one), probe drift, and the labeller's alarms() the dashboard reads."""
from dataclasses import replace

import numpy as np
import pytest

from robot_rl.config import load_config
from robot_rl.reward_models.labeller import RewardLabeller
from robot_rl.reward_models.trust import (HackingMonitor, ProbeDrift, expected_calibration_error,
                                          reliability_diagram)


def test_ece_known_answers():
    rng = np.random.default_rng(0)
    # Calibrated: labels drawn with exactly the stated probabilities, 10 bins, one value per bin.
    probs = np.repeat(np.arange(10) / 10 + 0.05, 1000)
    labels = np.concatenate([np.arange(1000) < int(p * 1000) for p in np.arange(10) / 10 + 0.05])
    rng.shuffle(labels[:1000])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)
    # Over-confident: says 0.9 where half succeed -> ECE 0.4; two bins each 0.2 off -> 0.2.
    assert expected_calibration_error(np.full(100, 0.9), np.arange(100) < 50) == pytest.approx(0.4)
    p2 = np.r_[np.full(50, 0.2), np.full(50, 0.8)]
    y2 = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    assert expected_calibration_error(p2, y2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(np.array([1.5]), np.array([True]))


def test_reliability_diagram_png(tmp_path):
    path = reliability_diagram(np.linspace(0, 1, 200), np.linspace(0, 1, 200) > 0.5, tmp_path / "rel.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def _clock_progress(episode):
    """A deliberately hackable reward: progress = elapsed time, so every episode, failed or not, ends 'done'."""
    return np.arange(len(episode) + 1) / len(episode)


def test_hacking_alarm_fires_on_clock_reward_and_not_on_trained_model(state_heldout_episodes, trained_state_model,
                                                                      state_cfg):
    episodes = state_heldout_episodes * 3  # 42 episodes: enough for the running window
    hackable = HackingMonitor(window=10)
    for e in episodes:
        hackable.observe(_clock_progress(e), e.success)
    assert hackable.hack_rate() > 0.3 and hackable.rate_alarm
    assert any("hacking rate" in a for a in hackable.alarms())
    assert any("success label is False" in a for a in hackable.alarms())

    labeller = RewardLabeller(trained_state_model, state_cfg_reward(episodes[0].task), gamma=0.99)
    good = HackingMonitor(window=10)
    for e in episodes:
        good.observe(labeller.potentials(e.frames)[0], e.success)
    assert good.alarms() == [] and good.hack_rate() == 0.0
    s = good.stats()
    assert s["reward/final_progress_success"] > s["reward/final_progress_failure"] + 0.3


def test_trend_alarm_progress_rises_while_success_does_not():
    m = HackingMonitor(window=10, hack_progress=0.95)
    for i in range(10):  # progress at the end creeps from 0.1 to 0.9, nothing succeeds
        m.observe(np.array([0.0, 0.1 + 0.08 * i]), success=False)
    assert m.trend_alarm and any("rising" in a for a in m.alarms())
    quiet = HackingMonitor(window=10, hack_progress=0.95)
    for i in range(10):  # the same rise, but it comes with successes: learning, not hacking
        quiet.observe(np.array([0.0, 0.1 + 0.08 * i]), success=i >= 5)
    assert not quiet.trend_alarm and quiet.alarms() == []


def state_cfg_reward(task: str, **kw):
    cfg = load_config(["reward=prm", *[f"reward.{k}={v}" for k, v in kw.items()]])
    return replace(cfg.reward, task=task)


def _as_online(episode, success_label: bool):
    """The episode as the learner ingests it; ``success_label=False`` relabels a success as a failure
    (the operator said no): the last step truncated with reward 0."""
    batch = episode.to_batch()
    if not success_label:
        batch = replace(batch, reward=np.zeros_like(batch.reward), terminated=np.zeros_like(batch.terminated),
                        truncated=np.r_[np.zeros(len(batch) - 1, bool), True])
    return batch


def test_labeller_alarms_end_to_end(trained_state_model, state_heldout_episodes):
    """Through the learner's hooks: observe_online on the transport side, scoring on the labelling side."""
    cfg = state_cfg_reward(state_heldout_episodes[0].task, hack_window=6)
    labeller = RewardLabeller(trained_state_model, cfg, gamma=0.99)
    for e in state_heldout_episodes:
        labeller.observe_online(_as_online(e, e.success))
    labeller.label(state_heldout_episodes[0].to_batch())  # scoring happens when a batch is labelled
    stats = labeller.stats()
    assert stats["reward/monitored_episodes"] == len(state_heldout_episodes)
    assert labeller.alarms() == [] and stats["reward/hack_rate"] == 0.0
    assert np.isfinite(stats["reward/base_mean"]) and "reward/shaping_mean" in stats
    # Successes the operator rejects: the model still calls them done -> the monitor must say so.
    succ = [e for e in state_heldout_episodes if e.success]
    for e in succ * 2:
        labeller.observe_online(_as_online(e, False))
    labeller.label(succ[0].to_batch())
    alarms = labeller.alarms()
    assert sum("success label is False" in a for a in alarms) == 2 * len(succ)
    assert any("hacking rate" in a for a in alarms)
    assert labeller.stats()["reward/alarm"] == 1.0


def test_probe_drift():
    d = ProbeDrift(max_drift=0.1)
    assert d.update(np.array([0.1, 0.5, 0.9])) == 0.0 and not d.drifted
    assert d.update(np.array([0.4, 0.8, 0.6])) == pytest.approx(0.3) and d.drifted
