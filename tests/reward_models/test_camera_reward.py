"""The real-robot reward: a state policy trained on a learned reward that reads only the cameras.

``env.obs=state+pixels`` makes the twin emit both; ``policy.obs_keys=[state]`` keeps the cameras out of the
policy and critic; the transition (replay, episode files) carries them for the labeller, which encodes each
frame once per model version (a cache keyed by the frame's bytes).
"""
import threading

import numpy as np
import pytest

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.episode_store import EpisodeStore
from robot_rl.learner import Learner
from robot_rl.registry import env_specs
from robot_rl.registry import ENVS
from robot_rl.reward_models.config import ProgressModelConfig
from robot_rl.reward_models.data import generate_episodes
from robot_rl.reward_models.labelled_sampler import LabelledSampler
from robot_rl.reward_models.labeller import RewardLabeller
from robot_rl.reward_models.train import train_model
from robot_rl.specs import SpecError

BOTH = ["env.obs=state+pixels", "env.image_size=16", "env.max_episode_steps=40"]
CAMERAS = ["images/front", "images/wrist"]


def test_twin_emits_state_and_cameras_together():
    both = load_config(BOTH).env
    state_only = load_config(["env.max_episode_steps=40"]).env
    pixels = load_config(["env.obs=pixels", "env.image_size=16", "env.max_episode_steps=40"]).env
    envs = [ENVS.make(c.name, c, seed=5) for c in (both, state_only, pixels)]
    try:
        assert envs[0].obs_spec.keys() == ["images/front", "images/wrist", "state"]
        assert envs[0].obs_spec.fields["state"] == envs[1].obs_spec.fields["state"]  # with the cube pose
        assert envs[0].obs_spec.fields["images/front"] == envs[2].obs_spec.fields["images/front"]
        obs = [e.reset(seed=9) for e in envs]
        rng = np.random.default_rng(0)
        for _ in range(5):
            action = rng.uniform(-1, 1, 4).astype(np.float32)
            obs = [e.step(action).obs for e in envs]
        np.testing.assert_array_equal(obs[0]["state"], obs[1]["state"])  # same physics, same state
        for cam in CAMERAS:
            np.testing.assert_array_equal(obs[0][cam], obs[2][cam])  # and the same pictures
        envs[0].obs_spec.check(obs[0])
    finally:
        for e in envs:
            e.close()


def test_policy_obs_keys_select_from_the_env_spec():
    spec = env_specs(load_config(BOTH))[0]
    assert spec.select(["state"]).keys() == ["state"]
    assert spec.select([]) is spec
    with pytest.raises(SpecError, match="images/top"):
        spec.select(["state", "images/top"])


@pytest.fixture(scope="module")
def camera_episodes():
    return generate_episodes(load_config(BOTH).env, 4, 2, seed=31)


@pytest.fixture(scope="module")
def camera_model(camera_episodes, small_cfg):
    # ``small_cfg`` (this package's conftest) rather than ``from conftest import``: in the whole suite the
    # module ``conftest`` may be another package's.
    model = train_model(camera_episodes, small_cfg(
        steps=30, model=ProgressModelConfig(views=tuple(CAMERAS), image_size=16, feature_dim=32, hidden_dim=32)))
    model.tasks = [camera_episodes[0].task]  # what a checkpoint records
    return model


def test_labeller_encodes_each_frame_once_per_model_version(camera_model, camera_episodes):
    """Cached labels equal a fresh forward pass; a repeated batch is served from the cache; a new model
    version starts a new cache."""
    labeller = RewardLabeller(camera_model, load_config(["reward=prm"]).reward, gamma=0.99)
    batch = camera_episodes[0].to_batch()
    phi, done = labeller.cached_potentials(batch)
    both = {k: np.concatenate([batch.obs[k], batch.next_obs[k]]) for k in CAMERAS}
    fresh_phi, fresh_done = labeller.potentials(both)
    np.testing.assert_allclose(phi, fresh_phi, atol=1e-6)
    np.testing.assert_allclose(done, fresh_done, atol=1e-6)
    n = len(batch)
    # next_obs of step t is obs of step t + 1: only T + 1 distinct frames were encoded
    assert labeller.encoded_frames == n + 1 == len(labeller._cache) and labeller.cache_hits == 0
    first = labeller.rewards(batch)
    assert labeller.cache_hits == 2 * n and labeller.encoded_frames == n + 1  # the whole batch again: all hits
    np.testing.assert_array_equal(labeller.rewards(batch), first)
    other = camera_episodes[1].to_batch()  # same episode/step ids would be told apart by the pixels
    assert not np.allclose(labeller.cached_potentials(other)[0][:5], phi[:5])
    labeller._set_model(camera_model)  # what load()/refresh do with a new model
    assert labeller._cache == {}


def _run_args(tmp_path, store: EpisodeStore) -> list[str]:
    """A 64-env-step in-process run on a camera reward trained (20 steps) from the demos in ``store``."""
    return [f"run_dir={tmp_path / 'run'}", "logger.wandb=disabled", "logger.progress=false", "algo.batch_size=32",
            "learner.warmup_transitions=64", "transport.kind=inproc", "transport.chunk_size=16",
            "dashboard.feed=false", "reward=prm", "reward.train_steps=20",
            "reward.views=[images/front,images/wrist]", f"learner.demos={store.directory}",
            "algo.offline_pretrain_updates=0", "learner.max_env_steps=64", "learner.utd=0.25", "replay.prefetch=1"]


def _run_with_an_actor(learner: Learner, cfg) -> tuple[dict, Actor]:
    """``learner.run()`` with one in-process actor on its own thread; returns the run's result and the actor."""
    connection = learner.transport.connect(cfg.transport, "actor-0")
    stop, made = threading.Event(), {}

    def act() -> None:  # the actor's env renders: its EGL context must live on the thread that steps it
        made["actor"] = Actor(cfg, connection)
        try:
            made["actor"].run(stop=stop)
        finally:
            for env in made["actor"].envs:  # and be released there
                env.close()

    thread = threading.Thread(target=act)
    thread.start()
    try:
        learned = learner.run()
    finally:
        stop.set()
        thread.join(60)
        learner.close()
    return learned, made["actor"]


def test_state_policy_trains_on_a_camera_only_reward(tmp_path, camera_episodes):
    store = EpisodeStore(tmp_path / "demos")
    for e in camera_episodes:
        if e.success:
            store.write(e)
    cfg = load_config([*BOTH, *_run_args(tmp_path, store), "policy.obs_keys=[state]"])
    learner = Learner(cfg)
    assert learner.policy.obs_spec.keys() == ["state"] and not learner.policy.encoder.has_images
    assert learner.reward_labeller.model.encoder.views == CAMERAS  # no privileged state in the reward
    assert set(learner.online.obs_spec.keys()) == {"state", *CAMERAS}  # replay carries the cameras
    assert isinstance(learner.sampler, LabelledSampler)
    learned, actor = _run_with_an_actor(learner, cfg)
    assert actor.policy.obs_spec.keys() == ["state"]
    assert learned["env_steps"] >= 64 and learned["updates"] >= 0.25 * 64
    batch = learner.sampler.sample_numpy()
    assert set(batch.obs) == {"state"} == set(batch.next_obs)  # cameras dropped once labelled
    assert not np.allclose(batch.reward, batch.terminated.astype(np.float32))  # shaped, not the recorded
    assert learner.reward_labeller.cache_hits > 0


def test_pixel_policy_with_the_task_encoder_trains_on_a_camera_reward(tmp_path):
    """The CPU pixel route (``policy.encoder=task``: replay holds frame embeddings) with a learned reward: replay
    keeps the reward model's camera frames beside their embeddings, the labeller reads the frames and the
    algorithm gets only what the policy reads (embeddings + proprioception)."""
    pixels = ["env.obs=pixels", "env.image_size=16", "env.max_episode_steps=40"]
    store = EpisodeStore(tmp_path / "demos")
    for e in generate_episodes(load_config(pixels).env, 3, 0, seed=31):
        store.write(e)
    cfg = load_config([*pixels, *_run_args(tmp_path, store), "policy.encoder=task",
                       "policy.task_encoder.pretrain_steps=20", "policy.task_encoder.channels=8",
                       "policy.task_encoder.keypoints=8"])
    learner = Learner(cfg)
    embeds = {"embed/front", "embed/wrist"}
    assert embeds | set(CAMERAS) <= set(learner.online.obs_spec.keys())  # frames kept beside the embeddings
    assert learner.reward_frames == tuple(CAMERAS) and len(learner.demo) > 0
    learned, _ = _run_with_an_actor(learner, cfg)
    assert learned["env_steps"] >= 64 and learned["updates"] >= 0.25 * 64
    batch = learner.sampler.sample_numpy()
    assert embeds <= set(batch.obs) and not set(CAMERAS) & set(batch.obs)  # frames dropped once labelled
    assert not np.allclose(batch.reward, batch.terminated.astype(np.float32))  # shaped, not the recorded
    assert learner.reward_labeller.encoded_frames > 0
    # the critic check scored finished episodes: the critic on embeddings, their returns on the learned reward
    checked = learner.value_check.last
    assert checked["value/episodes"] >= 1 and np.isfinite(checked["value/q_start"]), checked


def test_keep_keys_must_be_in_replay(camera_model, tmp_path):
    from robot_rl.replay import MixedSampler, ReplayBuffer

    obs_spec, action_spec = env_specs(load_config(BOTH))
    buf = ReplayBuffer(obs_spec, action_spec, 64)
    labeller = RewardLabeller(camera_model, load_config(["reward=prm"]).reward, 0.99, obs_spec)
    with pytest.raises(ValueError, match="keep_keys"):
        labeller.wrap(MixedSampler(buf, None, 8, 0.5, "cpu", 0), keep_keys=["proprio"])
