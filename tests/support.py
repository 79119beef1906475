"""Test helpers shared across the suite (imported as ``from support import ...``).

They live outside ``conftest.py`` on purpose: several packages under ``tests/`` have their own conftest.py,
and with pytest's default import mode they would all be the module ``conftest``, so ``from conftest import``
could pick up the wrong one.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")

from robot_rl.sim.point_reach import PointReach  # noqa: E402
from robot_rl.specs import spec_hash  # noqa: E402
from robot_rl.types import Transition  # noqa: E402


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def rollout(env: PointReach, n: int, actor_id: str = "a0", seed: int = 0, first_episode: int = 0) -> list[Transition]:
    """n transitions from random actions, episodes numbered from first_episode."""
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    out, ep, t = [], first_episode, 0
    for _ in range(n):
        a = rng.uniform(-1, 1, 2).astype(np.float32)
        r = env.step(a)
        out.append(Transition(obs, a, r.reward, r.obs, r.terminated, r.truncated, actor_id, ep, t))
        obs, t = r.obs, t + 1
        if r.terminated or r.truncated:
            obs, ep, t = env.reset(), ep + 1, 0
    return out


def batch_from_obs(obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray], action, reward):
    """A learner Batch of n rows from numpy observation dicts ``(n, ...)``, a torch ``action`` ``(n, A)`` (also the
    policy's proposal) and ``reward`` ``(n,)``: no terminations, one episode, step 0."""
    import torch

    from robot_rl.types import Batch

    n = len(action)
    zeros = torch.zeros(n, dtype=torch.bool)
    return Batch({k: torch.as_tensor(v) for k, v in obs.items()}, action, reward,
                 {k: torch.as_tensor(v) for k, v in next_obs.items()}, zeros, zeros, zeros, action,
                 torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))


def specs_and_hash(env: PointReach):
    return env.obs_spec, env.action_spec, spec_hash(env.obs_spec, env.action_spec)


def run_cli(*args: str, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **popen)


def spawn_cli(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "robot_rl.cli", *args], stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def run_with_actor_thread(learner, actor, join_s: float = 30.0) -> tuple[dict, dict]:
    """Run ``learner.run()`` here while ``actor.run()`` steps on a thread (in-process transport); stop the actor
    and close the learner afterwards. Returns (learner result, actor result)."""
    import threading

    stop, result = threading.Event(), {}
    thread = threading.Thread(target=lambda: result.update(actor.run(stop=stop)))
    thread.start()
    try:
        learned = learner.run()
    finally:
        stop.set()
        thread.join(join_s)
        learner.close()
    return learned, result


def spilled_ids(spill_root: Path, obs_spec, action_spec) -> set[tuple[str, int, int]]:
    """(actor_id, episode_id, step) of every transition in the chunks waiting in ``spill_root/<actor>/``."""
    from robot_rl.specs import spec_hash
    from robot_rl.transport import wire
    from robot_rl.transport.pending import read_frames

    ids = set()
    for path in sorted(Path(spill_root).glob("*/*.chunk")):
        frames = read_frames(path)
        _, header = wire.unpack_header(frames[0])
        chunk = wire.decode_chunk(header, frames[1:], obs_spec, action_spec, spec_hash(obs_spec, action_spec))
        ids.update((chunk.actor_id, int(e), int(s)) for e, s in zip(chunk.batch.episode_id, chunk.batch.step))
    return ids
