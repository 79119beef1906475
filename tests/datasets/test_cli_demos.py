"""``robot-rl data`` end to end on point_reach (obs=pixels): expert demos -> export-lerobot -> import-lerobot ->
the learner's demo buffer and ``robot-rl pretrain``'s episode loader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot_rl.cli import main
from robot_rl.config import load_config
from robot_rl.demos import generate_demos
from robot_rl.episode_store import EpisodeStore
from robot_rl.learner import Learner
from robot_rl.registry import env_specs
from robot_rl.specs import spec_hash

pytestmark = pytest.mark.usefixtures("single_thread")
ENV = ["env=point_reach", "env.obs=pixels", "env.image_size=16"]


def test_exported_then_imported_demos_fill_the_learner_demo_buffer(tmp_path: Path, capsys) -> None:
    cfg = load_config(ENV + [f"run_dir={tmp_path / 'run'}"])
    generate_demos(cfg, 3, tmp_path / "demos")
    demos = list(EpisodeStore(tmp_path / "demos").episodes(skip_bad=False))
    assert main(["data", "export-lerobot", str(tmp_path / "demos"), str(tmp_path / "lerobot"), *ENV]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    info = json.loads((tmp_path / "lerobot/meta/info.json").read_text())
    assert info["fps"] == 20 and info["robot_type"] == "point_reach"  # point_reach's control_hz
    assert exported["frames"] == sum(len(e) + 1 for e in demos)
    assert main(["data", "import-lerobot", str(tmp_path / "lerobot"), str(tmp_path / "imported"), *ENV]) == 0
    imported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert imported["spec_hash"] == spec_hash(*env_specs(cfg))
    learner_cfg = load_config(ENV + ["algo=sac", f"run_dir={tmp_path / 'learner'}", "logger.wandb=disabled",
                                     "logger.progress=false", "replay.prefetch=0", "transport.kind=inproc",
                                     f"learner.demos={tmp_path / 'imported'}"])
    learner = Learner(learner_cfg)
    try:
        assert len(learner.demo) == sum(len(e) for e in demos)  # every step of every demo, none skipped
        batch = learner.demo.sample(8, np.random.default_rng(0))
        # the default pixel route (policy.encoder=task) pretrains on these demos and keeps each frame's embedding
        assert batch.obs["embed/top"].shape[0] == 8 and np.isfinite(batch.obs["embed/top"]).all()
        assert "images/top" not in batch.obs and batch.reward.dtype == np.float32
    finally:
        learner.close()
    back = list(EpisodeStore(tmp_path / "imported").episodes(spec_hash=imported["spec_hash"], skip_bad=False))
    assert [len(e) for e in back] == [len(e) for e in demos]
    for ep, got in zip(demos, back):
        assert np.array_equal(ep.frames["state"], got.frames["state"]) and np.array_equal(ep.action, got.action)
        assert np.array_equal(ep.reward, got.reward) and got.success == ep.success


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit, match=r"robot-rl data import-lerobot: .*meta/info\.json: missing"):
        main(["data", "import-lerobot", str(tmp_path), str(tmp_path / "out"), *ENV])
    capsys.readouterr()
    # a misspelt mapping key is not a mapping key: it is refused as an unknown config key, in one line, exit 2
    assert main(["data", "import-lerobot", str(tmp_path), str(tmp_path / "out"), "missing_rewards=zero", *ENV]) == 2
    assert "unknown config key 'missing_rewards'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_on_imported_demos_then_export_the_run(tmp_path: Path, capsys) -> None:
    """``robot-rl train learner.demos=<imported LeRobot dataset>`` (about 30 s on 2 cores), then the run's own
    episodes (``run_dir/episodes/<actor>/``, spec from ``run_dir/config.yaml``) exported back to LeRobot."""
    cfg = load_config(ENV)
    generate_demos(cfg, 3, tmp_path / "demos")
    assert main(["data", "export-lerobot", str(tmp_path / "demos"), str(tmp_path / "lerobot"), *ENV]) == 0
    assert main(["data", "import-lerobot", str(tmp_path / "lerobot"), str(tmp_path / "imported"), *ENV]) == 0
    run = tmp_path / "run"
    assert main(["train", *ENV, "algo=sac", "num_demos=0", f"learner.demos={tmp_path / 'imported'}",
                 "learner.max_env_steps=300", "learner.warmup_transitions=64", "algo.batch_size=32",
                 "logger.wandb=disabled", "logger.progress=false", f"run_dir={run}"]) == 0
    assert "loaded 3 demo episodes" in (run / "logs" / "learner.log").read_text()
    capsys.readouterr()
    assert main(["data", "export-lerobot", str(run), str(tmp_path / "run_lerobot")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run_episodes = list(EpisodeStore(run / "episodes" / "actor-0").episodes(skip_bad=False))
    assert result["episodes"] == len(run_episodes) > 0
    stored = json.loads((tmp_path / "run_lerobot/meta/robot_rl.json").read_text())
    assert stored["spec_hash"] == spec_hash(*env_specs(cfg)) and "action_spec" in stored
