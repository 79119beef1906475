"""The `robot-rl` command through real processes: a tiny train on the Panda twin, eval, keys, help."""
import json
from pathlib import Path

from robot_rl.checkpoint import Checkpointer
from robot_rl.sim.episode_outcome import STAGES
from support import free_ports, run_cli


def test_help_lists_subcommands():
    out = run_cli("--help").stdout
    for sub in ("train", "learner", "actor", "keys", "demos", "eval"):
        assert sub in out
    assert "hydra overrides" in run_cli("learner", "--help").stdout


def test_tiny_train_produces_plot_video_checkpoint_and_evals(tmp_path):
    p1, p2 = free_ports(2)
    run_dir = tmp_path / "run"
    result = run_cli("train", "env=panda_pick_cube", "algo=sac", f"run_dir={run_dir}", "num_demos=2",
                     "learner.max_env_steps=300", "learner.warmup_transitions=100", "algo.batch_size=32",
                     "learner.utd=0.5", "learner.eval_every_env_steps=150", "learner.eval_episodes=1",
                     "eval_episodes=1", "logger.wandb=disabled", f"transport.transitions_port={p1}",
                     f"transport.weights_port={p2}", "num_actors=2", timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.yaml", "learning_curve.png", "eval.mp4", "eval.json", "metrics_learner.jsonl"):
        assert (run_dir / name).stat().st_size > 0, name
    assert Checkpointer(run_dir).latest() is not None
    assert len(list((run_dir / "demos").glob("*.npz"))) == 2
    metrics = (run_dir / "metrics_learner.jsonl").read_text()
    assert "eval/success_rate" in metrics and "eval/outcome/" in metrics  # where the evaluation episodes stopped
    for actor in ("actor-0", "actor-1"):
        assert any((run_dir / "episodes" / actor).glob("*.npz"))
    final = json.loads((run_dir / "eval.json").read_text())
    assert len(final["per_episode"]) == 1 and len(final["per_episode"][0]["start"]) == 7  # the cube pose
    assert final["per_episode"][0]["outcome"]["stage"] in STAGES and sum(final["outcomes"].values()) == 1
    ev = run_cli("eval", f"checkpoint={run_dir}", "episodes=3", f"video={tmp_path / 'v.mp4'}", "video_episodes=1",
                 f"starts={tmp_path / 'starts.png'}", f"json={tmp_path / 'ev.json'}",
                 "env.randomization.object_xy_range=0.05", timeout=180)  # starts that differ, to be mapped
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "success rate" in ev.stdout and (tmp_path / "v.mp4").stat().st_size > 0
    assert (tmp_path / "starts.png").stat().st_size > 0
    evaluated = json.loads((tmp_path / "ev.json").read_text())
    assert [r["seed"] for r in evaluated["per_episode"]] == [10_000, 10_001, 10_002]
    assert sum(evaluated["outcomes"].values()) == 3
    assert ("failures by stage: " in ev.stdout) == (evaluated["success_rate"] < 1.0)
    # The run's 2 cached demos are the reference; the randomised twin moves the cube's x and y only.
    assert evaluated["starts"]["demos"] == 2 and evaluated["starts"]["varying_dims"] == ["cube x", "cube y"]
    assert evaluated["starts_map"] == str(tmp_path / "starts.png")


def test_keys_and_demos_commands(tmp_path):
    keys = run_cli("keys", str(tmp_path / "k"), "--actors", "robot1", "robot2")
    assert keys.returncode == 0
    for rel in ("learner.key", "learner.key_secret", "actors/robot1.key_secret", "authorized/robot2.key"):
        assert (tmp_path / "k" / rel).exists()
    demos = run_cli("demos", "env=point_reach", "n=3", f"out={tmp_path / 'd'}")
    assert demos.returncode == 0 and len(list(Path(tmp_path / "d").glob("*.npz"))) == 3


def test_overrides_may_follow_options_and_typos_are_refused():
    out = run_cli("config", "env=point_reach", "--config", "", "learner.utd=3")
    assert out.returncode == 0 and "utd: 3.0" in out.stdout, out.stderr[-2000:]
    bad = run_cli("config", "--not-an-option")
    assert bad.returncode != 0 and "unrecognized arguments" in bad.stderr
