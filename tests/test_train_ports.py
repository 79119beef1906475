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
