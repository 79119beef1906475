import numpy as np
import pytest

from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec, SpecError, spec_hash
from robot_rl.types import Batch, Episode
from support import rollout


def test_spec_hash_is_stable_and_order_independent():
    a = ObsSpec({"state": ArraySpec((3,), "float32"), "images/front": ArraySpec((8, 8, 3), "uint8")})
    b = ObsSpec({"images/front": ArraySpec((8, 8, 3), "uint8"), "state": ArraySpec((3,), "float32")})
    act = ActionSpec((2,), -1, 1)
    assert spec_hash(a, act) == spec_hash(b, act)
    # A literal: the hash must not change across Python versions or machines.
    assert spec_hash(a, act) == spec_hash(ObsSpec.from_dict(a.to_dict()), ActionSpec.from_dict(act.to_dict()))
    assert spec_hash(a, act) != spec_hash(a, ActionSpec((2,), -2, 1))


def test_obs_spec_fails_loudly():
    spec = ObsSpec({"state": ArraySpec((3,), "float32")})
    spec.check({"state": np.zeros(3, np.float32)})
    with pytest.raises(SpecError, match="missing keys"):
        spec.check({})
    with pytest.raises(SpecError, match="dtype"):
        spec.check({"state": np.zeros(3, np.float64)})
    with pytest.raises(SpecError, match="shape"):
        spec.check({"state": np.zeros(4, np.float32)})
    with pytest.raises(SpecError, match="NaN"):
        spec.check({"state": np.array([0, np.nan, 0], np.float32)})
    with pytest.raises(SpecError, match="images must be uint8"):
        ObsSpec({"images/x": ArraySpec((8, 8, 3), "float32")})


def test_action_spec_bounds():
    spec = ActionSpec((2,), (-1, -2), (1, 2), ("a", "b"))
    spec.check(np.array([0.5, -1.5], np.float32))
    with pytest.raises(SpecError, match="outside bounds"):
        spec.check(np.array([1.5, 0], np.float32))
    np.testing.assert_array_equal(spec.clip(np.array([5, -5], np.float32)), [1, -2])


def test_batch_and_episode_round_trip(pixel_env):
    trs = rollout(pixel_env, 60)
    first_ep = [t for t in trs if t.episode_id == 0]
    ep = Episode.from_transitions(first_ep, "h")
    assert ep.frames["images/top"].shape[0] == len(first_ep) + 1  # each frame once
    back = list(ep.transitions())
    for a, b in zip(first_ep, back):
        np.testing.assert_array_equal(a.obs["images/top"], b.obs["images/top"])
        np.testing.assert_array_equal(a.next_obs["state"], b.next_obs["state"])
        assert (a.action == b.action).all() and a.step == b.step and a.terminated == b.terminated
    batch = Batch.from_transitions(trs)
    batch.check(pixel_env.obs_spec, pixel_env.action_spec)
    assert len(batch) == 60 and batch.obs["images/top"].dtype == np.uint8
    bad = Batch.from_transitions(trs)
    bad.reward[3] = np.nan
    with pytest.raises(SpecError, match="reward"):
        bad.check(pixel_env.obs_spec, pixel_env.action_spec)


def test_batch_select_takes_a_mask_or_positions_in_order(pixel_env):
    trs = rollout(pixel_env, 6)
    for i, t in enumerate(trs):
        t.actor_id = f"a{i}"
    batch = Batch.from_transitions(trs)
    masked = batch.select(np.array([True, False, True, False, False, True]))
    assert list(masked.step) == [trs[i].step for i in (0, 2, 5)] and masked.actor_id == ("a0", "a2", "a5")
    taken = batch.select(np.array([5, 0, 2]))  # integer positions: that order
    assert taken.actor_id == ("a5", "a0", "a2")
    np.testing.assert_array_equal(taken.obs["images/top"], batch.obs["images/top"][[5, 0, 2]])
    np.testing.assert_array_equal(taken.action, batch.action[[5, 0, 2]])
    assert len(batch.select(np.zeros(6, bool))) == 0 and batch.select(np.zeros(6, bool)).actor_id == ()


def test_batch_with_obs_keys_narrows_obs_and_next_obs_without_copying() -> None:
    rng = np.random.default_rng(0)
    obs = {"state": rng.normal(size=(3, 2)).astype(np.float32), "images/front": np.zeros((3, 4, 4, 3), np.uint8)}
    nxt = {k: v + 1 for k, v in obs.items()}
    batch = Batch(obs=obs, next_obs=nxt, action=np.zeros((3, 1), np.float32), reward=np.arange(3.0, dtype=np.float32),
                  terminated=np.zeros(3, bool), truncated=np.zeros(3, bool), intervened=np.zeros(3, bool),
                  policy_action=np.zeros((3, 1), np.float32), episode_id=np.zeros(3, np.int64),
                  step=np.arange(3, dtype=np.int64))
    narrow = batch.with_obs_keys(["state"])
    assert list(narrow.obs) == ["state"] and list(narrow.next_obs) == ["state"]
    assert narrow.obs["state"] is obs["state"] and narrow.next_obs["state"] is nxt["state"]  # views, not copies
    assert narrow.reward is batch.reward and len(narrow) == 3
    with pytest.raises(KeyError):
        batch.with_obs_keys(["images/wrist"])
