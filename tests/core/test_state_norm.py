"""Running state normalisation (robot_rl/state_norm.py) and the learner refining it with online states."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_rl.actor import Actor
from robot_rl.config import load_config
from robot_rl.demos import generate_demos
from robot_rl.learner import Learner
from robot_rl.policies.encoders import ObservationEncoder
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.state_norm import RunningStateNormalizer
from support import run_with_actor_thread


def test_running_moments_equal_the_moments_of_everything_seen_until_the_cap() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal([1.0, -2.0, 0.0], [0.1, 3.0, 1e-3], size=(500, 3))
    norm = RunningStateNormalizer(3, until=400)
    for chunk in np.array_split(data[:300], 7):  # uneven chunks, as the IO thread gets them
        norm.observe(chunk)
    mean, std = norm.statistics()
    np.testing.assert_allclose(mean, data[:300].mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(std, data[:300].std(0, ddof=1), rtol=1e-9)
    norm.observe(data[300:])  # crosses the cap: only the first 100 of these count, then it is frozen
    assert norm.count == 400 and norm.frozen
    np.testing.assert_allclose(norm.statistics()[0], data[:400].mean(0), rtol=1e-9, atol=1e-12)
    norm.observe(data[:10] + 100.0)
    np.testing.assert_allclose(norm.statistics()[0], data[:400].mean(0), rtol=1e-9, atol=1e-12)


def test_a_nan_state_is_refused_and_leaves_the_statistics_untouched() -> None:
    norm = RunningStateNormalizer(2, until=100)
    norm.observe(np.ones((4, 2)))
    bad = np.ones((3, 2))
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        norm.observe(bad)
    assert norm.count == 4


def test_apply_writes_the_encoders_buffers_once_per_change_and_a_checkpoint_round_trips() -> None:
    spec = ObsSpec({"state": ArraySpec((2,), "float32")})
    encoder, target = ObservationEncoder(spec), ObservationEncoder(spec)
    norm = RunningStateNormalizer(2, until=1000)
    assert not norm.apply([encoder])  # nothing counted yet: the encoder keeps identity statistics
    norm.observe(np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]]))
    assert norm.apply([encoder, target])
    for enc in (encoder, target):
        torch.testing.assert_close(enc.state_mean, torch.tensor([2.0, 10.0]))
        torch.testing.assert_close(enc.state_std, torch.tensor([2.0, 0.01]))  # floored: a dimension that never moved
    assert not norm.apply([encoder])  # unchanged since: nothing to write
    restored = RunningStateNormalizer(2, until=1000)
    restored.load_state_dict(norm.state_dict())
    assert restored.count == 3
    np.testing.assert_allclose(restored.statistics()[1], norm.statistics()[1])
    with pytest.raises(ValueError, match="shape"):
        RunningStateNormalizer(3, until=10).load_state_dict(norm.state_dict())


def _all_states(replay) -> np.ndarray:
    """Every stored transition's ``obs["state"]`` ``(N, S)``, in insertion order (not a sample)."""
    slots = replay.obs_fid[: len(replay)] % replay.frame_capacity
    return replay.frames["state"][slots]


def _cfg(tmp_path, *extra: str):
    return load_config(["env=point_reach", "algo=sac", f"run_dir={tmp_path}", "logger.wandb=disabled",
                        "logger.progress=false", "learner.warmup_transitions=64", "algo.batch_size=32",
                        "learner.max_env_steps=300", "learner.utd=0.25", "learner.publish_every=10",
                        "learner.value_check_episodes=0", "replay.prefetch=0", "transport.kind=inproc",
                        "transport.chunk_size=16", *extra])


def test_the_learner_widens_the_demos_statistics_with_online_states_and_the_actor_gets_them(tmp_path) -> None:
    demos = tmp_path / "demos"
    generate_demos(_cfg(tmp_path / "gen"), 2, demos)
    cfg = _cfg(tmp_path / "run", f"learner.demos={demos}", "learner.normalize_state_online_until=100000")
    learner = Learner(cfg)
    demo_states = _all_states(learner.demo)
    assert learner.state_norm.count == len(learner.demo)  # fitted on the demos first, as without the switch
    torch.testing.assert_close(learner.policy.encoder.state_mean, torch.as_tensor(demo_states.mean(0)))
    actor = Actor(cfg, learner.transport.connect(cfg.transport, "actor-0"))
    run_with_actor_thread(learner, actor, join_s=30)
    online = _all_states(learner.online)
    assert learner.state_norm.count == len(learner.demo) + len(learner.online) >= len(learner.demo) + 300
    everything = np.concatenate([demo_states, online])
    mean, std = learner.state_norm.statistics()
    np.testing.assert_allclose(mean, everything.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, everything.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    # the encoder got them (as of the last publish): wider than the demos' own spread
    assert (learner.policy.encoder.state_std > torch.as_tensor(demo_states.std(0)).clamp(min=1e-2) + 1e-3).any()
    # the actor acts with the statistics the weights were trained with (they travel with the weights)
    torch.testing.assert_close(actor.policy.encoder.state_mean, learner.policy.encoder.state_mean)
    # a resumed run continues from the checkpointed moments instead of refitting on the demos
    resumed = Learner(_cfg(tmp_path / "run", f"learner.demos={demos}", "learner.normalize_state_online_until=100000",
                           "learner.max_env_steps=400"))
    assert resumed.state_norm.count == len(resumed.demo) + len(resumed.online) > len(resumed.demo)
    kept = np.concatenate([_all_states(resumed.demo), _all_states(resumed.online)])
    np.testing.assert_allclose(resumed.state_norm.statistics()[0], kept.mean(0), rtol=1e-5, atol=1e-6)


def test_without_the_switch_the_demos_statistics_stay_fixed(tmp_path) -> None:
    demos = tmp_path / "demos"
    generate_demos(_cfg(tmp_path / "gen"), 2, demos)
    learner = Learner(_cfg(tmp_path / "run", f"learner.demos={demos}"))
    assert learner.state_norm is None
    before = learner.policy.encoder.state_mean.clone()
    actor = Actor(learner.cfg, learner.transport.connect(learner.cfg.transport, "actor-0"))
    run_with_actor_thread(learner, actor, join_s=30)
    torch.testing.assert_close(learner.policy.encoder.state_mean, before)


def test_sac_with_a_trainable_camera_encoder_gets_both_of_its_encoders_normalised() -> None:
    from robot_rl.registry import ALGORITHMS, POLICIES
    from robot_rl.state_norm import state_encoders

    spec = ObsSpec({"state": ArraySpec((3,), "float32"), "images/front": ArraySpec((16, 16, 3), "uint8")})
    cfg = load_config(["env=point_reach", "algo=sac", "policy.encoder=drq", "policy.conv_layers=1",
                       "policy.conv_channels=4"])
    actions = ActionSpec((2,), (-1.0, -1.0), (1.0, 1.0))
    policy = POLICIES.make("gaussian", cfg.policy, spec, actions)
    algo = ALGORITHMS.make("sac", cfg.algo, policy, spec, actions, "cpu")
    encoders = state_encoders(policy, algo)
    assert len(encoders) == 2 and encoders[1] is algo.target_encoder  # the target copy reads state too
    norm = RunningStateNormalizer(3, until=10)
    norm.observe(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]]))
    norm.apply(encoders)
    torch.testing.assert_close(algo.target_encoder.state_mean, torch.tensor([2.0, 2.0, 4.0]))
    state = ObsSpec({"state": ArraySpec((3,), "float32")})
    state_only = POLICIES.make("gaussian", cfg.policy, state, actions)
    assert state_encoders(state_only, ALGORITHMS.make("sac", cfg.algo, state_only, state, actions, "cpu")) == \
        [state_only.encoder]  # no parameters: SAC reuses the one encoder
