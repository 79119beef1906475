"""``robot-rl reward train`` / ``robot-rl reward eval`` end to end (tiny budget: checks the plumbing)."""
import json
from pathlib import Path

from robot_rl.cli import main


def test_reward_train_then_eval(tmp_path, capsys):
    out = tmp_path / "rm.pt"
    rc = main(["reward", "train", "env.max_episode_steps=30", f"out={out}", "n_success=4", "n_failure=3",
               "n_eval_success=3", "n_eval_failure=3", "rm.steps=15", "rm.episodes_per_batch=4",
               "rm.model.feature_dim=32", "rm.model.hidden_dim=32", "rm.threads=1", f"save_data={tmp_path / 'data'}"])
    assert rc == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.exists() and (tmp_path / "rm.png").exists() and len(list((tmp_path / "data").glob("*.npz"))) == 7
    for key in ("voc", "vroc", "order_accuracy", "success_auroc", "mismatched_text_delta", "done_precision",
                "done_recall", "version"):
        assert key in trained
    rc = main(["reward", "eval", "env.max_episode_steps=30", f"checkpoint={out}", f"data={tmp_path / 'data'}",
               f"plot={tmp_path / 'eval.png'}", f"json={tmp_path / 'eval.json'}"])
    assert rc == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["version"] == trained["version"] and evaluated["episodes"] == 7.0
    assert (tmp_path / "eval.png").stat().st_size > 10_000
    # trust: calibration against the success labels, with its reliability diagram next to the checkpoint
    assert 0.0 <= evaluated["success_ece"] <= 1.0 and 0.0 <= evaluated["progress_ece"] <= 1.0
    assert Path(evaluated["reliability_plot"]) == out.with_suffix(".reliability.png")
    assert Path(evaluated["reliability_plot"]).read_bytes()[:4] == b"\x89PNG"
