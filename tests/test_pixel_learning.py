"""The real-robot observation (2 cameras + proprioception, no cube pose) learns pick-cube through real learner and
actor processes: ``robot-rl train env.obs=pixels`` with the default ``policy.encoder=task``."""
from __future__ import annotations

import json

import pytest

from support import free_ports, run_cli


@pytest.mark.slow  # 3-5 min on 2 busy cores: demos, encoder pretraining, 1k pixel env steps, 3 evaluations
@pytest.mark.timeout(1200)
def test_pixel_run_through_processes_raises_eval_success_above_its_start(tmp_path) -> None:
    p1, p2 = free_ports(2)
    run_dir = tmp_path / "run"
    # A near-untrained actor at env step 0 (1 offline update), then online RLPD + BC on embedded frames.
    result = run_cli("train", "env.obs=pixels", "env.image_size=48", f"run_dir={run_dir}", "num_demos=10",
                     "policy.task_encoder.pretrain_steps=300", "algo.offline_pretrain_updates=1",
                     "learner.max_env_steps=1000", "learner.eval_every_env_steps=500", "learner.eval_episodes=5",
                     "eval_episodes=2", "logger.wandb=disabled", "logger.progress=false",
                     f"transport.transitions_port={p1}", f"transport.weights_port={p2}", timeout=1100)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (run_dir / "metrics_learner.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/success_rate"]) for r in records if "eval/success_rate" in r]
    assert evals[0][0] == 0 and len(evals) >= 3, evals
    assert max(rate for _, rate in evals[1:]) > evals[0][1], evals
    ingest = [r for r in records if "embed_ms_per_frame" in r]
    assert ingest and ingest[-1]["replay_online"] >= 1000  # online frames arrived and were embedded once each
