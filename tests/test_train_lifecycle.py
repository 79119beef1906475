"""``robot-rl train`` through real processes: its children stop with it however it is stopped, a run killed before
its first checkpoint resumes from the episodes on disk, and a clean finish leaves nothing pending in spill/."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robot_rl.checkpoint import Checkpointer
from robot_rl.episode_store import EpisodeStore
from robot_rl.replay import ReplayBuffer
from robot_rl.sim.point_reach import PointReach, PointReachConfig
from support import free_ports

COMMON = ["env=point_reach", "algo=sac", "num_demos=0", "logger.wandb=disabled", "algo.batch_size=32",
          "learner.warmup_transitions=64", "learner.utd=0.5", "replay.prefetch=0", "env.control_hz=200",
          "transport.heartbeat_interval_s=0.2", "transport.peer_timeout_s=2", "transport.resend_after_s=1"]


def _start_train(run_dir: Path, *overrides: str, log: Path) -> subprocess.Popen:
    p1, p2 = free_ports(2)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "train", *COMMON, f"run_dir={run_dir}",
                             f"transport.transitions_port={p1}", f"transport.weights_port={p2}", *overrides],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _children(parent: int) -> list[int]:
    """Processes started by ``robot-rl train`` ``parent`` (they carry its pid in ROBOT_RL_PARENT_PID)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"ROBOT_RL_PARENT_PID={parent}\0".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's wait is missing


def _wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _episodes(run_dir: Path) -> int:
    store = run_dir / "episodes" / "actor-0"
    return len(EpisodeStore(store)) if store.exists() else 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the children")
@pytest.mark.parametrize("how", ["SIGKILL of the process group", "SIGTERM", "SIGINT"])
def test_children_stop_with_train(tmp_path, how):
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    train = _start_train(run_dir, "learner.max_env_steps=0", "learner.checkpoint_every_s=1000", log=log)
    try:
        _wait_for(lambda: len(_children(train.pid)) == 2 and _episodes(run_dir) >= 2, 120, "learner and actor")
        children = _children(train.pid)
        if how in ("SIGTERM", "SIGINT"):
            train.send_signal(getattr(signal, how))
            assert train.wait(timeout=90) == 130  # interrupted, after stopping its children
            assert "resume with `robot-rl train run_dir=" in " ".join(log.read_text().split())
        else:
            os.killpg(train.pid, signal.SIGKILL)  # only train is in this group: the children have their own
            train.wait()
        _wait_for(lambda: not any(_alive(pid) for pid in children), 60, "the learner and the actor to exit")
    finally:
        for pid in _children(train.pid):
            os.kill(pid, signal.SIGKILL)
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGKILL)
    learner_log = (run_dir / "logs" / "learner.log").read_text()
    actor_log = (run_dir / "logs" / "actor-0.log").read_text()
    if how != "SIGKILL of the process group":  # train stopped them itself, with SIGTERM
        assert "SIGTERM: stopping cleanly" in learner_log and "SIGTERM: stopping cleanly" in actor_log
    else:  # each says why it stopped
        assert f"robot-rl train (pid {train.pid}) has exited" in " ".join(learner_log.split())
        assert f"robot-rl train (pid {train.pid}) has exited" in " ".join(actor_log.split())
    assert Checkpointer(run_dir).latest() is not None  # the learner checkpointed on its way out


def _stored_ids(run_dir: Path) -> list[tuple[str, int, int]]:
    ids = []
    for ep in EpisodeStore(run_dir / "episodes" / "actor-0").episodes():
        ids += [(ep.actor_id, ep.episode_id, s) for s in range(len(ep))]
    return ids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the children")
def test_killed_before_first_checkpoint_resumes_from_episodes_and_finishes_clean(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    # Every chunk is spilled when made, so the restarted actor resends chunks of episodes already on disk:
    # the resumed learner must keep those transitions once.
    crash = ["learner.checkpoint_every_s=1000", "transport.spill_all_chunks=true"]
    train = _start_train(run_dir, "learner.max_env_steps=0", *crash, log=log)
    try:
        _wait_for(lambda: len(_children(train.pid)) == 2 and _episodes(run_dir) >= 4, 120, "stored episodes")
        victims = [*_children(train.pid), train.pid]  # children first: train's death would SIGTERM them
        for pid in victims:  # a power cut: nobody gets to checkpoint
            os.kill(pid, signal.SIGKILL)
        train.wait()
        _wait_for(lambda: not any(_alive(pid) for pid in victims), 30, "everything to die")
    finally:
        for pid in _children(train.pid):
            os.kill(pid, signal.SIGKILL)
    assert Checkpointer(run_dir).latest() is None
    before = _stored_ids(run_dir)
    n_episodes = _episodes(run_dir)

    budget = len(before) + 150
    resumed = _start_train(run_dir, f"learner.max_env_steps={budget}", "eval_episodes=1", *crash, log=log)
    assert resumed.wait(timeout=240) == 0, log.read_text()[-3000:]
    said = " ".join(log.read_text().split())
    assert f"no checkpoint yet, so the learner rebuilds replay from the {n_episodes} episodes" in said
    assert f"rebuilt replay from {n_episodes} episodes ({len(before)} transitions)" in \
        " ".join((run_dir / "logs" / "learner.log").read_text().split())

    env = PointReach(PointReachConfig())
    replay = ReplayBuffer(env.obs_spec, env.action_spec, 200_000)
    replay.load(Checkpointer(run_dir).latest() / "replay_online")
    ids = list(replay.iter_ids())
    assert len(ids) == len(set(ids)), "a transition was ingested twice"
    assert set(before) <= set(ids), "episodes of the killed session are missing from replay"
    # A clean finish: the learner committed the actor's last chunks before it exited.
    # (A temporary the SIGKILL cut short mid-write may stay: it is no chunk, and a run removes it once it is old.)
    assert not list((run_dir / "spill").rglob("*.chunk")), "chunks left in spill/"
    stored = set(_stored_ids(run_dir))
    assert stored <= set(ids), "stored transitions never reached replay"
    # Replay may also hold the sent part of the one episode the SIGKILL cut short (never stored; resent from spill/)
    assert len({episode for _, episode, _ in set(ids) - stored}) <= 1
    assert (run_dir / "learning_curve.png").exists() and (run_dir / "eval.mp4").exists()
