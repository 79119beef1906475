"""Shared twin episodes and one small trained progress model (state observations: fast on 2 CPU cores)."""
from __future__ import annotations

import pytest
import torch

from robot_rl.config import load_config
from robot_rl.reward_models.config import ProgressModelConfig, RewardTrainConfig
from robot_rl.reward_models.data import generate_episodes

STATE_ENV = ["env.max_episode_steps=40"]  # panda_pick_cube, cube start randomised +-5 cm


@pytest.fixture(autouse=True)
def _one_torch_thread(single_thread):
    """Every reward-model test runs on one torch thread (the root conftest's ``single_thread``)."""


@pytest.fixture(scope="session")
def state_cfg():
    return load_config(STATE_ENV)


@pytest.fixture(scope="session")
def state_train_episodes(state_cfg):
    return generate_episodes(state_cfg.env, 16, 9, seed=11)


@pytest.fixture(scope="session")
def state_heldout_episodes(state_cfg):
    """Other reset seeds than training (randomisation on), successes and every failure kind."""
    return generate_episodes(state_cfg.env, 8, 6, seed=12)


def small_train_config(**kw) -> RewardTrainConfig:
    base = dict(steps=150, episodes_per_batch=6, frames_per_episode=6, lr=2e-3,
                model=ProgressModelConfig(feature_dim=64, hidden_dim=96))
    base.update(kw)
    return RewardTrainConfig(**base)


@pytest.fixture(scope="session")
def small_cfg():
    """Factory of small training configs (fast on CPU)."""
    return small_train_config


@pytest.fixture(scope="session")
def trained_state_model(state_train_episodes):
    from robot_rl.reward_models.train import train_model

    torch.set_num_threads(1)
    return train_model(state_train_episodes, small_train_config())


@pytest.fixture(scope="session")
def state_checkpoint(trained_state_model, state_train_episodes, tmp_path_factory):
    from robot_rl.reward_models.train import save_checkpoint

    path = tmp_path_factory.mktemp("rm") / "prm.pt"
    save_checkpoint(path, trained_state_model, sorted({e.task for e in state_train_episodes}))
    return path


@pytest.fixture
def demo_dir(tmp_path, state_train_episodes):
    """The successful training episodes as a learner's demo directory."""
    from robot_rl.episode_store import EpisodeStore

    store = EpisodeStore(tmp_path / "demos")
    for e in state_train_episodes:
        if e.success:
            store.write(e)
    return store.directory
