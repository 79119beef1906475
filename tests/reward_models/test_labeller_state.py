"""A resumed learner labels with the reward the interrupted one ended on: the refreshed model, the position in
the shaping schedule, the episodes kept for the next refresh, the drift probe and the hacking monitor."""
import io
from dataclasses import replace

import numpy as np
import pytest
import torch

from robot_rl.learner import Learner
from robot_rl.reward_models.labeller import RewardLabeller
from robot_rl.reward_models.labeller_state import labeller_checkpoint, restore_labeller
from robot_rl.reward_models.train import load_checkpoint
from test_labeller import _cfg
from test_remedies import _reward_cfg


def _through_a_checkpoint(state: dict) -> dict:
    """What ``Checkpointer.load_state`` hands back: saved with torch.save, loaded with ``weights_only=True``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.fixture
def refreshed(state_checkpoint, state_train_episodes, state_heldout_episodes):
    """A labeller after a refresh, 8 online episodes (successes and failures) into an annealed schedule."""
    task = state_train_episodes[0].task
    cfg = _reward_cfg(task, refresh_every_episodes=4, refresh_steps=30, scale=2.0, scale_final=0.0,
                      scale_anneal_steps=10_000, hack_window=4, probe_size=32)
    labeller = RewardLabeller(load_checkpoint(state_checkpoint), cfg, gamma=0.99)
    labeller.base_episodes = [e for e in state_train_episodes if e.success][:3]
    online = [e for e in state_heldout_episodes if e.success][:4] + [e for e in state_heldout_episodes
                                                                      if not e.success][:4]
    for i, e in enumerate(online[:4]):  # ids as one actor numbers them
        labeller.observe_online(replace(e, actor_id="actor-0", episode_id=i).to_batch())
    labeller.label(online[0].to_batch())  # fixes the probe set, scores the episodes, starts the refresh
    assert labeller.wait_refresh(120) and labeller.refreshes == 1
    for i, e in enumerate(online[4:6]):  # 2 of the 4 the next refresh waits for
        labeller.observe_online(replace(e, actor_id="actor-0", episode_id=4 + i).to_batch())
    labeller.label(online[1].to_batch())  # the monitor scores them under the refreshed model
    return cfg, labeller, online


def test_a_restored_labeller_labels_as_the_saved_one(refreshed, state_checkpoint, tmp_path):
    cfg, saved, online = refreshed
    state, write = labeller_checkpoint(saved)
    write(tmp_path / "reward_refresh")
    state = _through_a_checkpoint(state)

    resumed = RewardLabeller(load_checkpoint(state_checkpoint), cfg, gamma=0.99)  # what a restarted learner builds
    assert resumed.version != saved.version and resumed.current_scale() == 2.0
    restore_labeller(resumed, state, tmp_path / "reward_refresh")

    assert resumed.version == saved.version and resumed.refreshes == 1
    assert resumed.online_steps == saved.online_steps > 0
    assert resumed.current_scale() == pytest.approx(saved.current_scale()) and saved.current_scale() < 2.0
    for e in online:  # the same rewards, transition by transition
        np.testing.assert_allclose(resumed.rewards(e.to_batch(), record=False),
                                   saved.rewards(e.to_batch(), record=False), atol=1e-6)
    # the next refresh trains on the same online episodes, in the same order
    assert [(e.actor_id, e.episode_id, e.success) for e in resumed.online_episodes] == \
        [(e.actor_id, e.episode_id, e.success) for e in saved.online_episodes]
    for a, b in zip(resumed.online_episodes, saved.online_episodes):
        for k in b.frames:
            np.testing.assert_array_equal(a.frames[k], b.frames[k])
        np.testing.assert_array_equal(a.action, b.action)
        np.testing.assert_array_equal(a.terminated, b.terminated)
    assert resumed._since_refresh == saved._since_refresh == 2
    # drift is measured against the probe's first reading, not re-based at the restart
    for k in saved._probe:
        np.testing.assert_array_equal(resumed._probe[k], saved._probe[k])
    np.testing.assert_allclose(resumed.drift.reference, saved.drift.reference)
    assert resumed.drift.last == pytest.approx(saved.drift.last) and saved.drift.last > 0.0  # the refresh moved Phi
    assert resumed.monitor.stats() == saved.monitor.stats()
    assert resumed.monitor.episodes == saved.monitor.episodes == 6

    # the restored labeller goes on as the saved one would: 2 more episodes make the next refresh due
    for i, e in enumerate(online[6:8]):
        resumed.observe_online(replace(e, actor_id="actor-0", episode_id=6 + i).to_batch())
    resumed.label(online[0].to_batch())
    assert resumed.wait_refresh(120) and resumed.refreshes == 2 and resumed.version != saved.version
    assert resumed.monitor.episodes == 8


def test_a_checkpoint_that_does_not_match_fails_loudly(refreshed, state_checkpoint, tmp_path):
    cfg, saved, _ = refreshed
    state, write = labeller_checkpoint(saved)
    write(tmp_path / "reward_refresh")
    fresh = lambda: RewardLabeller(load_checkpoint(state_checkpoint), cfg, gamma=0.99)  # noqa: E731

    tampered = dict(state, model={k: v + 1e-3 if v.is_floating_point() else v for k, v in state["model"].items()})
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        restore_labeller(fresh(), tampered, tmp_path / "reward_refresh")
    with pytest.raises(FileNotFoundError, match="kept for refreshing"):
        restore_labeller(fresh(), state, tmp_path / "missing")
    with pytest.raises(ValueError, match="format"):
        restore_labeller(fresh(), dict(state, format="something else"), tmp_path / "reward_refresh")
    wrong_shape = dict(state, model={k: v[..., :1] if v.ndim == 2 else v for k, v in state["model"].items()})
    with pytest.raises(ValueError, match="does not fit"):
        restore_labeller(fresh(), wrong_shape, tmp_path / "reward_refresh")


def test_a_run_given_another_reward_model_keeps_it(refreshed, state_checkpoint, trained_state_model, tmp_path,
                                                   state_train_episodes, small_cfg):
    """Resuming with ``reward.checkpoint`` naming another model is a decision to change the reward: the new model
    labels (with a warning), not the checkpoint's refreshed copy of the old one."""
    from robot_rl.reward_models.train import train_model

    cfg, saved, _ = refreshed
    state, write = labeller_checkpoint(saved)
    write(tmp_path / "reward_refresh")
    other = train_model(state_train_episodes, small_cfg(steps=20, seed=5))
    other.version = "another-one"
    resumed = RewardLabeller(other, cfg, gamma=0.99)
    restore_labeller(resumed, state, tmp_path / "reward_refresh")
    assert resumed.version == "another-one" and resumed.refreshes == 0 and resumed.online_steps == 0


def test_the_schedule_advances_without_the_monitor(state_checkpoint, state_train_episodes):
    """The annealed shaping weight is driven by the online steps the labeller sees; with ``reward.monitor``
    off and no refresh they were not counted, so the weight never left ``scale``."""
    cfg = _reward_cfg(state_train_episodes[0].task, monitor=False, scale_final=0.0, scale_anneal_steps=10)
    labeller = RewardLabeller(load_checkpoint(state_checkpoint), cfg, gamma=0.99)
    labeller.observe_online(state_train_episodes[0].to_batch())
    assert labeller.online_steps == len(state_train_episodes[0]) >= 10 and labeller.current_scale() == 0.0


def test_a_resumed_learner_labels_with_the_refreshed_model(tmp_path, demo_dir, state_checkpoint,
                                                           state_heldout_episodes):
    cfg = _cfg(tmp_path, "reward=prm", f"reward.checkpoint={state_checkpoint}", f"learner.demos={demo_dir}",
               "replay.prefetch=0", "reward.refresh_every_episodes=2", "reward.refresh_steps=30",
               "reward.scale_final=0", "reward.scale_anneal_steps=100000")
    learner = Learner(cfg)
    labeller = learner.reward_labeller
    try:
        for i, episode in enumerate([e for e in state_heldout_episodes if e.success][:3]):
            labeller.observe_online(replace(episode, actor_id="actor-0", episode_id=i).to_batch())
        learner.sampler.next()  # labelling a batch starts the refresh
        assert labeller.wait_refresh(120) and labeller.refreshes == 1
        refreshed, steps, scale = labeller.version, labeller.online_steps, labeller.current_scale()
        learner.save_checkpoint()
    finally:
        learner.sampler.close()
        learner.close()

    resumed = Learner(cfg)  # same run_dir: resumes from the checkpoint
    try:
        assert resumed.reward_labeller.version == refreshed != load_checkpoint(state_checkpoint).version
        assert resumed.reward_labeller.online_steps == steps
        assert resumed.reward_labeller.current_scale() == pytest.approx(scale)
        assert len(resumed.reward_labeller.online_episodes) == 3
        batch = resumed.sampler.next()
        assert resumed.reward_labeller.stats()["reward/version"] == refreshed
        assert torch.isfinite(batch.reward).all()
    finally:
        resumed.sampler.close()
        resumed.close()
