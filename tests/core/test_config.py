import dataclasses

import pytest

from robot_rl.config import config_hash, load_config, load_resolved, save_resolved


def test_defaults_compose_and_are_typed():
    cfg = load_config(["env=point_reach", "algo=sac", "learner.utd=2", "transport.chunk_size=8"])
    assert cfg.learner.utd == 2.0 and cfg.transport.chunk_size == 8
    assert type(cfg.algo).__name__ == "SACConfig" and cfg.env.name == "point_reach"


def test_config_is_read_only():
    cfg = load_config(["env=point_reach"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.learner.utd = 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def test_unknown_keys_and_wrong_types_fail_loudly():
    with pytest.raises(Exception, match="learner.not_a_field|not_a_field"):
        load_config(["learner.not_a_field=1"])
    with pytest.raises(Exception, match="utd"):
        load_config(["learner.utd=fast"])
    with pytest.raises(Exception):
        load_config(["env=no_such_env"])


def test_resolved_config_round_trip_and_hash(tmp_path):
    cfg = load_config(["env=point_reach", "algo=rlpd", "learner.utd=0.5"])
    save_resolved(cfg, tmp_path / "c.yaml")
    back = load_resolved(tmp_path / "c.yaml", ["actor.actor_id=robot7"])
    assert back.learner.utd == 0.5 and back.actor.actor_id == "robot7" and back.algo.name == "rlpd"
    assert config_hash(back) == config_hash(cfg)
    # the env seed may differ between machines; the env itself may not
    assert config_hash(load_config(["env=point_reach", "env.seed=9"])) == config_hash(load_config(["env=point_reach"]))
    assert config_hash(load_config(["env=point_reach", "env.max_episode_steps=7"])) != \
        config_hash(load_config(["env=point_reach"]))


def test_free_form_dicts_survive_the_resolved_config_round_trip(tmp_path):
    """`+env.kwargs.X` and `env.key_map` (accepted on the command line) load again from the saved file, as
    the learner, the actors (`--config`) and `robot-rl eval` do; dataclass nodes still refuse unknown keys."""
    cfg = load_config(["env=gym", "env.env_id=Pendulum-v1", "+env.kwargs.g=9.81",
                       "+env.key_map={pixels/front: front}", "env.action_names=[torque]"])
    save_resolved(cfg, tmp_path / "config.yaml")
    again = load_resolved(tmp_path / "config.yaml", ["env.kwargs.render_mode=rgb_array"])
    assert again.env.kwargs == {"g": 9.81, "render_mode": "rgb_array"}
    assert again.env.key_map == {"pixels/front": "front"} and again.env.action_names == ("torque",)
    assert config_hash(load_resolved(tmp_path / "config.yaml")) == config_hash(cfg)
    with pytest.raises(Exception, match="bogus"):
        load_resolved(tmp_path / "config.yaml", ["env.bogus=1"])
