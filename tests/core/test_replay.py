import numpy as np
import torch
import pytest

from robot_rl.replay import MixedSampler, ReplayBuffer
from robot_rl.types import Batch, Episode
from support import rollout, specs_and_hash


def test_frames_stored_once_and_samples_are_correct(pixel_env):
    obs_spec, action_spec, _ = specs_and_hash(pixel_env)
    data = rollout(pixel_env, 300)
    rb = ReplayBuffer(obs_spec, action_spec, 1000)
    for i in range(0, 300, 32):  # chunks, as the transport delivers them
        rb.add_batch(Batch.from_transitions(data[i:i + 32]))
    episodes = len({t.episode_id for t in data})
    assert len(rb) == 300 and rb.frames_written == 300 + episodes  # T + 1 frames per episode
    batch = rb.sample(256, np.random.default_rng(0))
    lookup = {(t.episode_id, t.step): t for t in data}
    for i in range(256):
        t = lookup[(int(batch.episode_id[i]), int(batch.step[i]))]
        np.testing.assert_array_equal(batch.obs["images/top"][i], t.obs["images/top"])
        np.testing.assert_array_equal(batch.next_obs["images/top"][i], t.next_obs["images/top"])
        np.testing.assert_array_equal(batch.obs["state"][i], t.obs["state"])
        assert batch.action[i].tolist() == t.action.tolist() and batch.terminated[i] == t.terminated
    assert batch.obs["images/top"].dtype == np.uint8


def test_interleaved_actors_and_eviction(pixel_env):
    obs_spec, action_spec, _ = specs_and_hash(pixel_env)
    a, b = rollout(pixel_env, 400, "a", seed=1), rollout(pixel_env, 400, "b", seed=2)
    rb = ReplayBuffer(obs_spec, action_spec, 256)
    for i in range(0, 400, 16):
        rb.add_batch(Batch.from_transitions(a[i:i + 16]))
        rb.add_batch(Batch.from_transitions(b[i:i + 16]))
    assert len(rb) == 256
    batch = rb.sample(2000, np.random.default_rng(0))
    assert rb._valid(np.arange(len(rb))).mean() > 0.9
    # every sampled pair is consistent: next_obs position == obs position + clipped action * speed
    moved = batch.next_obs["state"][:, :2] - batch.obs["state"][:, :2]
    expected = np.clip(batch.obs["state"][:, :2] + 0.1 * batch.action, 0, 1) - batch.obs["state"][:, :2]
    np.testing.assert_allclose(moved, expected, atol=1e-5)
    # eviction is oldest first: exactly the last 128 transitions of each actor remain, and no sample is older
    expected = {(t.actor_id, t.episode_id, t.step) for t in a[-128:] + b[-128:]}
    assert set(rb.iter_ids()) == expected
    sampled = {(actor, int(e), int(s)) for actor, e, s in zip(batch.actor_id, batch.episode_id, batch.step)}
    assert sampled <= expected


def test_save_load_round_trip(pixel_env, tmp_path):
    obs_spec, action_spec, _ = specs_and_hash(pixel_env)
    rb = ReplayBuffer(obs_spec, action_spec, 500)
    rb.add_batch(Batch.from_transitions(rollout(pixel_env, 120)))
    rb.save(tmp_path / "r")
    back = ReplayBuffer(obs_spec, action_spec, 500)
    back.load(tmp_path / "r")
    assert list(back.iter_ids()) == list(rb.iter_ids())
    x, y = rb.sample(64, np.random.default_rng(3)), back.sample(64, np.random.default_rng(3))
    for k in x.obs:
        np.testing.assert_array_equal(x.obs[k], y.obs[k])
        np.testing.assert_array_equal(x.next_obs[k], y.next_obs[k])
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(obs_spec, action_spec, 400).load(tmp_path / "r")


def test_mixed_sampler_ratio_and_prefetch(state_env):
    obs_spec, action_spec, sh = specs_and_hash(state_env)
    online, demo = ReplayBuffer(obs_spec, action_spec, 1000), ReplayBuffer(obs_spec, action_spec, 1000)
    online.add_batch(Batch.from_transitions(rollout(state_env, 200, "online")))
    demo.add_episode(Episode.from_transitions([t for t in rollout(state_env, 60, "demo") if t.episode_id == 0],
                                              sh))
    sampler = MixedSampler(online, demo, batch_size=64, demo_ratio=0.25, prefetch=2)
    try:
        batches = [sampler.next() for _ in range(5)]
    finally:
        sampler.close()
    demo_ids = {int(e) for e in demo.fields["episode_id"][: len(demo)]}
    for b in batches:
        assert len(b) == 64
        # demo rows come first: 16 of 64 from the demo episode (episode 0 of actor "demo")
        assert (b.step[:16].numpy() < len(demo)).all() and set(b.episode_id[:16].tolist()) <= demo_ids
        # the learner's BC term finds the demo rows through this mask (never sent on the wire)
        assert b.from_demo.dtype == torch.bool and b.from_demo[:16].all() and not b.from_demo[16:].any()
    only_demo = sampler.sample_demo()
    assert len(only_demo) == 64 and bool(only_demo.from_demo.all())
    assert set(only_demo.episode_id.tolist()) <= demo_ids


def _following_by_search(rb: ReplayBuffer, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference for ``following_slots``: search every stored transition for the one whose obs frame is
    each slot's next_obs frame."""
    nxt, found = np.zeros(len(slots), np.int64), np.zeros(len(slots), bool)
    valid = rb._valid(np.arange(len(rb)))
    for i, s in enumerate(slots):
        hits = np.flatnonzero((rb.obs_fid[:len(rb)] == rb.next_fid[s]) & valid)
        if hits.size:
            nxt[i], found[i] = hits[0], True
    return nxt, found


def test_following_slots_match_a_search_through_a_wrapped_interleaved_buffer(state_env, tmp_path):
    # O(1) lookup of the next step (sequence sampling) against a full search, after both rings wrapped, with two
    # actors interleaved in chunks and a frame ring small enough to evict frames of stored transitions; then after
    # save/load, which rebuilds the lookup from the stored frame ids.
    obs_spec, action_spec, _ = specs_and_hash(state_env)
    a, b = rollout(state_env, 700, "a", seed=1), rollout(state_env, 700, "b", seed=2)
    rb = ReplayBuffer(obs_spec, action_spec, 300, frame_capacity=330)
    for i in range(0, 700, 24):
        rb.add_batch(Batch.from_transitions(a[i:i + 24]))
        rb.add_batch(Batch.from_transitions(b[i:i + 7 if i % 48 else i + 24]))  # b drops steps: broken chains
    slots = np.arange(len(rb))[rb._valid(np.arange(len(rb)))]
    assert 0 < len(slots) < len(rb)  # some transitions lost a frame to the small ring
    rb.save(tmp_path / "r")
    back = ReplayBuffer(obs_spec, action_spec, 300, frame_capacity=330)
    back.load(tmp_path / "r")
    for buf in (rb, back):
        nxt, found = buf.following_slots(slots)
        ref_nxt, ref_found = _following_by_search(buf, slots)
        np.testing.assert_array_equal(found, ref_found)
        np.testing.assert_array_equal(nxt[found], ref_nxt[found])
        done = buf.fields["terminated"][slots] | buf.fields["truncated"][slots]
        assert found[~done].mean() > 0.5 and not found[done].any()  # chains exist, and stop at episode ends
        # a found step is the same episode's next step
        ids = buf.fields["episode_id"]
        assert (ids[nxt[found]] == ids[slots[found]]).all()
        assert (buf.fields["step"][nxt[found]] == buf.fields["step"][slots[found]] + 1).all()
