"""The learned-reward remedies (config switches): success-gated terminal potential, Phi cap, shaping schedule."""
from dataclasses import replace

import numpy as np
import pytest

from robot_rl.config import load_config
from robot_rl.reward_models.labeller import RewardLabeller
from robot_rl.reward_models.shaping import potential_shaping


def _reward_cfg(task, **kw):
    return replace(load_config(["reward=prm"]).reward, task=task, **kw)


def test_success_gated_terminal_keeps_the_success_reward_and_stays_invariant():
    rng = np.random.default_rng(0)
    gamma = 0.9
    for _ in range(5):  # any two successful trajectories: discounted shaping sums differ only by Phi(s_0)
        phi = rng.uniform(0, 1, 7)  # Phi(s_0..s_6); s_6 is the success terminal
        r = np.r_[np.zeros(5), 1.0]
        term = np.r_[np.zeros(5, bool), True]
        shaped = potential_shaping(r, phi[:-1], phi[1:], term, gamma, terminal_potential=(r > 0).astype(float))
        disc = gamma ** np.arange(6)
        # sum_t gamma^t F_t telescopes to gamma^T * Phi(terminal) - Phi(s_0) with Phi(success terminal) = 1
        assert (disc * (shaped - r)).sum() == pytest.approx(gamma ** 6 * 1.0 - phi[0], abs=1e-5)
        assert shaped[-1] == pytest.approx(1.0 + gamma - phi[-2], abs=1e-6)
    # without the gate the success step keeps only 1 - Phi(s_{T-1}): ~0 when the model rates s_{T-1} ~1
    plain = potential_shaping(np.array([1.0]), np.array([0.95]), np.array([0.99]), np.array([True]), 0.99)
    assert plain[0] == pytest.approx(0.05, abs=1e-6)


def test_labeller_remedies(trained_state_model, state_train_episodes):
    demo = next(e for e in state_train_episodes if e.success)
    batch = demo.to_batch()
    task = demo.task
    plain = RewardLabeller(trained_state_model, _reward_cfg(task), gamma=0.99)
    gated = RewardLabeller(trained_state_model, _reward_cfg(task, success_terminal_potential=True), gamma=0.99)
    r_plain, r_gated = plain.rewards(batch), gated.rewards(batch)
    last = len(batch) - 1
    phi_pre = plain.potentials({k: batch.obs[k][last:] for k in trained_state_model.encoder.views})[0][0]
    assert r_plain[last] == pytest.approx(1.0 - phi_pre, abs=1e-4)
    assert r_gated[last] == pytest.approx(1.0 + 0.99 - phi_pre, abs=1e-4)
    np.testing.assert_allclose(r_plain[:last], r_gated[:last])  # only success terminals change

    capped = RewardLabeller(trained_state_model, _reward_cfg(task, phi_cap=0.3), gamma=0.99)
    phi, done = capped.potentials(batch.obs)
    below = (done < 0.5) & (phi > 0.3)
    assert below.any()  # the demo has unfinished states the model rates above the cap
    assert not np.allclose(capped.rewards(batch), r_plain)

    annealed = RewardLabeller(trained_state_model, _reward_cfg(task, scale_final=0.0, scale_anneal_steps=100),
                              gamma=0.99)
    assert annealed.current_scale() == 1.0
    annealed.observe_online(batch)  # len(batch) online steps
    assert annealed.current_scale() == pytest.approx(max(0.0, 1.0 - len(batch) / 100))
    for _ in range(10):
        annealed.observe_online(batch)
    assert annealed.current_scale() == 0.0
    np.testing.assert_allclose(annealed.rewards(batch), batch.reward)  # plain base reward at the end


def _refreshing_labeller(model, train_episodes, every: int, steps: int) -> RewardLabeller:
    """A labeller that refreshes every ``every`` online episodes (``steps`` each), its base episodes 3 demos."""
    cfg = _reward_cfg(train_episodes[0].task, refresh_every_episodes=every, refresh_steps=steps)
    labeller = RewardLabeller(model, cfg, gamma=0.99)
    labeller.base_episodes = [e for e in train_episodes if e.success][:3]
    return labeller


def test_refresh_on_online_episodes_labelled_by_success(trained_state_model, state_train_episodes,
                                                        state_heldout_episodes):
    labeller = _refreshing_labeller(trained_state_model, state_train_episodes, every=4, steps=30)
    online = [e for e in state_heldout_episodes if e.success][:2] + \
        [e for e in state_heldout_episodes if not e.success][:2]
    assert any(e.success for e in online) and any(not e.success for e in online)
    before = labeller.version
    for e in online:
        labeller.observe_online(e.to_batch())
    assert len(labeller.online_episodes) == 4
    assert [e.success for e in labeller.online_episodes] == [e.success for e in online]
    labeller.label(online[0].to_batch())  # the labelling thread starts the refresh on its own thread
    assert labeller.wait_refresh(120)
    assert labeller.refreshes == 1 and labeller.version != before
    assert labeller.stats()["reward/refreshes"] == 1
    phi_final = [labeller.potentials({k: v[-1:] for k, v in e.frames.items()})[0][0] for e in online if e.success]
    assert min(phi_final) > 0.5  # the refreshed model still calls the online successes finished


def test_labelling_goes_on_with_the_current_model_while_a_refresh_trains(trained_state_model, state_train_episodes,
                                                                         state_heldout_episodes):
    """A refresh inline on the labelling thread stalled every learner update for its whole duration."""
    labeller = _refreshing_labeller(trained_state_model, state_train_episodes, every=2, steps=600)
    online = [e for e in state_heldout_episodes if e.success][:2]
    for e in online:
        labeller.observe_online(e.to_batch())
    before, batch = labeller.version, online[0].to_batch()
    expected = labeller.rewards(batch)  # the current model's labels
    labeller.label(batch)  # starts the refresh
    try:
        assert labeller.refreshing
        relabelled = labeller.label(batch)  # served at once, by the model in use, while the refresh trains
        assert labeller.refreshing and labeller.version == before and labeller.refreshes == 0
        np.testing.assert_allclose(relabelled.reward, expected)
    finally:
        assert labeller.wait_refresh(300)
    assert labeller.refreshes == 1 and labeller.version != before


def test_close_stops_a_refresh_in_progress_and_keeps_the_current_model(trained_state_model, state_train_episodes,
                                                                       state_heldout_episodes):
    """The learner closes its labeller at exit: a refresh that would train for minutes stops within a step,
    is discarded (the model labelling stays), and no new refresh starts afterwards."""
    labeller = _refreshing_labeller(trained_state_model, state_train_episodes, every=2, steps=1_000_000)
    online = [e for e in state_heldout_episodes if e.success][:2]
    for e in online:
        labeller.observe_online(e.to_batch())
    before, batch = labeller.version, online[0].to_batch()
    labeller.label(batch)  # starts the (endless) refresh
    try:
        assert labeller.refreshing
    finally:  # never leave an endless refresh training for the rest of the session
        assert labeller.close(timeout_s=60)
    assert not labeller.refreshing and labeller.refreshes == 0 and labeller.version == before
    for e in online:  # due again, but a closed labeller starts no refresh
        labeller.observe_online(e.to_batch())
    labeller.label(batch)
    assert not labeller.refreshing
