"""The learner trains on learned rewards: batches labelled off its thread, version recorded."""
import json

import numpy as np
import pytest

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.learner import Learner
from robot_rl.reward_models.labelled_sampler import LabelledSampler
from robot_rl.reward_models.labeller import RewardLabeller
from robot_rl.reward_models.train import load_checkpoint
from support import run_with_actor_thread


def _cfg(tmp_path, *extra):
    return load_config(["env.max_episode_steps=40", f"run_dir={tmp_path / 'run'}", "logger.wandb=disabled",
                        "logger.progress=false", "algo.batch_size=32", "learner.warmup_transitions=64",
                        "transport.kind=inproc", "transport.chunk_size=16",
                        "dashboard.feed=false", *extra])  # no zmq feed: these tests do not close the learner


def test_learner_samples_potential_shaped_rewards(tmp_path, demo_dir, state_checkpoint):
    cfg = _cfg(tmp_path, "reward=prm", f"reward.checkpoint={state_checkpoint}", f"learner.demos={demo_dir}",
               "replay.prefetch=1", "algo.gamma=0.97")
    learner = Learner(cfg)
    try:
        assert isinstance(learner.sampler, LabelledSampler)
        batch = learner.sampler.next()  # labelled on the prefetch thread
        obs = {k: v.cpu().numpy() for k, v in batch.obs.items()}
        nxt = {k: v.cpu().numpy() for k, v in batch.next_obs.items()}
        phi, _ = learner.reward_labeller.potentials(obs)
        phi_next, _ = learner.reward_labeller.potentials(nxt)
        term = batch.terminated.cpu().numpy()
        env_reward = term.astype(np.float64)  # successful demos: reward 1 exactly on the terminating step
        expected = env_reward + 0.97 * np.where(term, 0.0, phi_next) - phi
        np.testing.assert_allclose(batch.reward.cpu().numpy(), expected, atol=1e-5)
        assert learner.reward_labeller.stats()["reward/labelled"] >= 32
        assert learner.reward_labeller.version == load_checkpoint(state_checkpoint).version
    finally:
        learner.sampler.close()  # the transport was never started (no run()), so nothing else to close


def test_offline_pretraining_batches_are_labelled_too(tmp_path, demo_dir, state_checkpoint):
    """``algo.offline_pretrain_updates`` samples the demo buffer alone: those batches must carry the learned
    reward as well, or pre-training fits the recorded rewards and the online phase then switches to shaped ones."""
    cfg = _cfg(tmp_path, "reward=prm", f"reward.checkpoint={state_checkpoint}", f"learner.demos={demo_dir}",
               "replay.prefetch=0", "algo.gamma=0.97")
    learner = Learner(cfg)
    try:
        batch = learner.sampler.sample_demo()  # what Learner._pretrain_offline feeds algo.pretrain_offline
        assert bool(batch.from_demo.all())
        obs = {k: v.cpu().numpy() for k, v in batch.obs.items()}
        nxt = {k: v.cpu().numpy() for k, v in batch.next_obs.items()}
        phi, _ = learner.reward_labeller.potentials(obs)
        phi_next, _ = learner.reward_labeller.potentials(nxt)
        term = batch.terminated.cpu().numpy()
        expected = term.astype(np.float64) + 0.97 * np.where(term, 0.0, phi_next) - phi
        np.testing.assert_allclose(batch.reward.cpu().numpy(), expected, atol=1e-5)
        assert not np.allclose(batch.reward.cpu().numpy(), term.astype(np.float32))  # not the recorded reward
    finally:
        learner.sampler.close()


def test_closing_the_learner_stops_a_reward_refresh_in_progress(tmp_path, demo_dir, state_checkpoint,
                                                                state_heldout_episodes):
    """A learner that exited while a refresh trained on its daemon thread aborted at interpreter exit
    (code -6), and the run lost its final evaluation: ``Learner.close`` stops and joins the refresh."""
    cfg = _cfg(tmp_path, "reward=prm", f"reward.checkpoint={state_checkpoint}", f"learner.demos={demo_dir}",
               "replay.prefetch=0", "reward.refresh_every_episodes=2", "reward.refresh_steps=1000000")
    learner = Learner(cfg)
    labeller = learner.reward_labeller
    try:
        for episode in [e for e in state_heldout_episodes if e.success][:2]:
            labeller.observe_online(episode.to_batch())
        learner.sampler.next()  # labelling this batch starts the (endless) refresh
        assert labeller.refreshing
    finally:
        learner.sampler.close()
        learner.close()
    assert not labeller.refreshing and labeller.refreshes == 0


def test_reward_options_and_model_swap(state_checkpoint, state_heldout_episodes, state_cfg):
    model = load_checkpoint(state_checkpoint)
    fail = next(e for e in state_heldout_episodes if not e.success).to_batch()
    succ = next(e for e in state_heldout_episodes if e.success).to_batch()
    for base, shaping in (("done", "none"), ("zero", "naive_delta"), ("env", "potential")):
        rc = load_config(["reward=prm", f"reward.base={base}", f"reward.shaping={shaping}"]).reward
        lab = RewardLabeller(model, rc, gamma=0.99)
        r_succ, r_fail = lab.rewards(succ), lab.rewards(fail)
        assert r_succ.dtype == np.float32 and np.isfinite(r_succ).all()
        if base == "done":  # success read off the done head: fires on the success step only
            assert r_succ[-1] == 1.0 and r_succ[:-3].sum() == 0 and r_fail.sum() == 0
        if shaping == "naive_delta":  # telescopes to Phi(s_T) - Phi(s_0) (high for a success)
            assert r_succ.sum() > 0.7
    lab = RewardLabeller(model, load_config(["reward=prm"]).reward, gamma=0.99)
    # labels looked at but not trained on (the learner's critic check) stay out of the base/shaping means
    unrecorded = lab.rewards(succ, record=False)
    assert "reward/shaping_mean" not in lab.stats()
    np.testing.assert_array_equal(lab.rewards(succ), unrecorded)
    assert lab.stats()["reward/shaped_mean"] == pytest.approx(float(unrecorded.astype(np.float64).mean()))
    old = lab.version
    assert lab.load(state_checkpoint) == old  # same weights, same version
    with pytest.raises(ValueError, match="shaping"):
        RewardLabeller(model, load_config(["reward=prm", "reward.shaping=delta"]).reward, gamma=0.99)
    with pytest.raises(ValueError, match="observation spec"):
        from robot_rl.registry import env_specs
        RewardLabeller(model, load_config(["reward=prm"]).reward, 0.99,
                       obs_spec=env_specs(load_config(["env.obs=pixels", "env.image_size=16"]))[0])


def test_inproc_loop_trains_with_a_reward_model_trained_from_the_demos(tmp_path, demo_dir):
    """``reward=prm`` without a checkpoint: the learner trains one on its demos, caches it, then every
    sampled batch is labelled while actor and learner run (in-process transport)."""
    cfg = _cfg(tmp_path, "reward=prm", "reward.train_steps=40", f"learner.demos={demo_dir}",
               "algo.offline_pretrain_updates=0", "learner.max_env_steps=128", "learner.utd=0.25", "learner.publish_every=10", "replay.prefetch=2")
    learner = Learner(cfg)
    assert (tmp_path / "run" / "reward_prm.pt").exists()
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    learned, result = run_with_actor_thread(learner, actor, join_s=60)
    assert learned["env_steps"] >= 128 and learned["updates"] >= 0.25 * 128
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics_learner.jsonl").read_text().splitlines()]
    versions = {r["reward/version"] for r in records if "reward/version" in r}
    assert versions == {learner.reward_labeller.version}
    assert learner.reward_labeller.labelled >= learned["updates"] * 32


def test_dropping_the_offline_data_reaches_the_labelled_sampler(tmp_path, demo_dir, state_checkpoint):
    """WSRL drops the demo buffer after its warm-up: the labelled sampler must then draw online rows only (it
    used to keep sampling its own reference to the old demo buffer)."""
    cfg = _cfg(tmp_path, "reward=prm", f"reward.checkpoint={state_checkpoint}", f"learner.demos={demo_dir}",
               "replay.prefetch=0")
    learner = Learner(cfg)
    try:
        assert len(learner.sampler.demo) > 0
        learner.drop_offline_data()
        assert learner.sampler.demo is learner.demo and len(learner.sampler.demo) == 0
    finally:
        learner.sampler.close()
