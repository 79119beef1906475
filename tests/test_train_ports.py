"""`robot-rl train` on busy default ports picks free ones instead of colliding with another run."""
import socket

from support import free_ports, run_cli


def test_train_moves_off_busy_ports(tmp_path):
    p1, p2 = free_ports(2)
    holders = []
    for port in (p1, p2):  # someone else's run holds the configured ports
        s = socket.socket()
        s.bind(("127.0.0.1", port))
        s.listen()
        holders.append(s)
    try:
        result = run_cli("train", "env=point_reach", "algo=sac", f"run_dir={tmp_path / 'run'}", "num_demos=0",
                         "learner.max_env_steps=200", "learner.warmup_transitions=50", "algo.batch_size=16",
                         "learner.utd=0.2", "eval_episodes=1", "logger.wandb=disabled",
                         f"transport.transitions_port={p1}", f"transport.weights_port={p2}", timeout=200)
    finally:
        for s in holders:
            s.close()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "are busy" in result.stderr
    assert (tmp_path / "run" / "eval.json").exists()


def test_train_with_batched_actors_streams_every_env(tmp_path):
    """``actor.batched_backend=cpu``: each actor process steps its envs as one batched env (one policy call per
    step) through the real transport; every env's episodes reach the actor's store and the learner."""
    import json

    import numpy as np

    run = tmp_path / "run"
    result = run_cli("train", "env=point_reach", "algo=sac", f"run_dir={run}", "num_demos=0", "num_actors=2",
                     "actor.num_envs=3", "actor.batched_backend=cpu", "actor.random_steps=100",
                     "learner.max_env_steps=300", "learner.warmup_transitions=50", "algo.batch_size=16",
                     "learner.utd=0.2", "eval_episodes=1", "logger.wandb=disabled", timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    for actor in ("actor-0", "actor-1"):
        episodes = sorted((run / "episodes" / actor).glob("*.npz"))
        assert episodes, f"{actor} stored no episode"
        seeds = {tuple(np.load(e)["frames/state"][0][:2].round(5)) for e in episodes}
        assert len(seeds) > 1  # different envs / episodes start in different places
    records = [json.loads(line) for line in (run / "metrics_learner.jsonl").read_text().splitlines()]
    assert max(r.get("env_steps", 0) for r in records) >= 300
