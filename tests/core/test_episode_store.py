import numpy as np
import pytest

from robot_rl.episode_store import EpisodeStore
from robot_rl.types import Episode
from support import rollout


def _episodes(env, actor="a"):
    data = rollout(env, 150, actor)
    ids = sorted({t.episode_id for t in data})
    return [Episode.from_transitions([t for t in data if t.episode_id == e], "spec", task="reach") for e in ids]


def test_write_read_round_trip_and_append_only(pixel_env, tmp_path):
    store = EpisodeStore(tmp_path)
    eps = _episodes(pixel_env)
    for ep in eps:
        store.write(ep)
    assert len(store) == len(eps) and store.next_episode_id("a") == len(eps)
    back = list(store.episodes(spec_hash="spec"))
    for a, b in zip(eps, back):
        np.testing.assert_array_equal(a.frames["images/top"], b.frames["images/top"])
        np.testing.assert_array_equal(a.action, b.action)
        assert b.task == "reach" and b.actor_id == "a"
    with pytest.raises(FileExistsError):
        store.write(eps[0])
    with pytest.raises(ValueError, match="spec"):
        EpisodeStore.read(store.paths()[0], spec_hash="other")


def test_corrupt_file_is_skipped_not_deleted_and_no_torn_writes(pixel_env, tmp_path, monkeypatch):
    store = EpisodeStore(tmp_path)
    eps = _episodes(pixel_env)
    store.write(eps[0])
    bad = tmp_path / "a-00000099.npz"
    bad.write_bytes(b"not a zip file")
    assert len(list(store.episodes())) == 1 and bad.exists()
    # a crash in the middle of a write leaves no partial .npz behind
    import robot_rl.storage as storage

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", boom)
    with pytest.raises(OSError):
        store.write(eps[1])
    assert not store.path_for("a", eps[1].episode_id).exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_opening_a_store_leaves_another_writers_temporary_alone(tmp_path):
    """Readers open stores while actors write: only temporaries old enough to be crash leftovers are removed."""
    import os
    import time

    from robot_rl.storage import STALE_TEMPORARY_AGE_S

    in_flight = tmp_path / ".a-00000003.npz.abc123.tmp"
    crashed = tmp_path / ".a-00000001.npz.def456.tmp"
    for p in (in_flight, crashed):
        p.write_bytes(b"partial")
    old = time.time() - STALE_TEMPORARY_AGE_S - 1
    os.utime(crashed, (old, old))
    EpisodeStore(tmp_path)
    assert in_flight.exists() and not crashed.exists()
