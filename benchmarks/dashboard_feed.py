"""What the dashboard costs the learner: SAC updates/s with the feed publishing to a live dashboard vs without.

    python benchmarks/dashboard_feed.py [--seconds 4] [--repeats 3] [--image-size 64]

A real learner (PointReach with camera images, SAC, in-process replay filled through ``Learner._ingest``) runs
updates in timed windows. Baseline: no feed. With feed: a :class:`robot_rl.dashboard.feed.DashboardFeed` thread
publishes status and both actors' frames at the default rates to a real ``robot-rl dashboard`` server process
(which JPEG-encodes them), while chunks keep arriving through ``_ingest`` (the feed copies each newest frame).
The server runs during both phases, so the ratio isolates the feed. Rounds alternate baseline / feed. Prints a
table and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _learner(run_dir: Path, image_size: int):
    import torch

    from robot_rl.config import load_config
    from robot_rl.learner import Learner

    torch.set_num_threads(1)
    common = ["env=point_reach", "env.obs=pixels", f"env.image_size={image_size}", "policy.encoder=drq", "algo=sac",
              "algo.batch_size=64",
              "transport.kind=inproc", "replay.prefetch=0", "logger.wandb=disabled", f"run_dir={run_dir}"]
    # The learner is built without a feed; the feed's phases attach one built from the same config with it on.
    return load_config([*common, "dashboard.feed=true"]), Learner(load_config([*common, "dashboard.feed=false"]))


def _chunks(learner, n_chunks: int):
    """Real chunks of 32 transitions from the env, two actors."""
    from robot_rl.sim.point_reach import PointReach
    from robot_rl.transport.wire import Chunk
    from robot_rl.types import Batch, Transition

    env = PointReach(learner.cfg.env, seed=0)
    rng = np.random.default_rng(0)
    obs, out, seq = env.reset(seed=0), [], 0
    for i in range(n_chunks):
        items = []
        for t in range(32):
            a = rng.uniform(-1, 1, 2).astype(np.float32)
            r = env.step(a)
            actor = f"actor-{i % 2}"
            items.append(Transition(obs, a, r.reward, r.obs, r.terminated, r.truncated, actor, 0, t))
            obs = env.reset() if r.terminated or r.truncated else r.obs
        out.append(Chunk(items[0].actor_id, "bench", seq, Batch.from_transitions(items)))
        seq += 1
    return out


def _window(learner, chunks, seconds: float) -> float:
    """Updates/s over ``seconds``, ingesting one chunk every 8 updates (as actors would keep streaming)."""
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        learner.algo.update(learner.sampler.next())
        n += 1
        if n % 8 == 0:
            learner._ingest(chunks[i % len(chunks)])
            i += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from robot_rl.dashboard.feed import DashboardFeed

    run_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    enabled, learner = _learner(run_dir, args.image_size)
    chunks = _chunks(learner, 64)
    for chunk in chunks:
        learner._ingest(chunk)
    learner.updates = 1  # the feed reads counters; the value does not matter here
    server = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", "dashboard", str(run_dir), "--port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base, feed_on = [], []
    try:
        time.sleep(3.0)  # server imports
        _window(learner, chunks, 1.0)  # warm-up
        for _ in range(args.repeats):
            base.append(_window(learner, chunks, args.seconds))
            feed = DashboardFeed(enabled, learner)
            learner.dashboard_feed = feed  # _ingest hands it the newest frames
            feed.start()
            time.sleep(1.5)  # the server follows the new feed.json within a second
            feed_on.append(_window(learner, chunks, args.seconds))
            learner.dashboard_feed = None
            feed.close()
        # The feed's own CPU cost, timed directly (robust to a loaded machine, unlike the windows above).
        feed = DashboardFeed(enabled, learner)
        t0 = time.perf_counter()
        for i in range(2000):
            feed.observe(chunks[i % len(chunks)])
        observe_us = (time.perf_counter() - t0) / 2000 * 1e6
        t0 = time.perf_counter()
        for _ in range(500):
            feed._send([feed._snapshot(1.0).encode()])
        status_us = (time.perf_counter() - t0) / 500 * 1e6
        from robot_rl.dashboard.protocol import encode_frame

        image = chunks[0].batch.obs["images/top"][-1]
        t0 = time.perf_counter()
        for _ in range(500):
            feed._send(encode_frame("actor-0", "top", image, 0))
        frame_us = (time.perf_counter() - t0) / 500 * 1e6
        feed.close()
    finally:
        server.terminate()
        server.wait(20)
        learner.close()
    b, f = statistics.median(base), statistics.median(feed_on)
    d = enabled.dashboard
    per_s_us = status_us * d.status_hz + frame_us * d.frame_hz * 2  # two actors, one camera each
    print(f"feed costs: observe {observe_us:.1f} us per 32-transition chunk (transport thread); status "
          f"{status_us:.1f} us, frame {frame_us:.1f} us per send (feed thread): {per_s_us / 1e4:.4f} % of a core "
          f"at {d.status_hz} status/s + {d.frame_hz} frames/s x 2 actors")
    print(f"{'phase':<28}{'updates/s (median)':>20}{'runs':>40}")
    print(f"{'no feed (baseline)':<28}{b:>20.1f}{str([round(x, 1) for x in base]):>40}")
    print(f"{'feed -> live dashboard':<28}{f:>20.1f}{str([round(x, 1) for x in feed_on]):>40}")
    print(f"ratio feed / baseline: {f / b:.3f}")
    print(json.dumps({"benchmark": "dashboard_feed", "image_size": args.image_size, "updates_per_s_baseline": b,
                      "updates_per_s_feed": f, "ratio": f / b, "repeats": args.repeats, "seconds": args.seconds,
                      "observe_us_per_chunk": observe_us, "status_us": status_us, "frame_us": frame_us,
                      "feed_core_fraction": per_s_us / 1e6}))


if __name__ == "__main__":
    main()
