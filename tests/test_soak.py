"""``benchmarks/soak.py`` end to end: actors on the twin and a learner under kill -9, a partition, a lossy and
slow link and a full spill disk; replay must hold every stored transition exactly once.

Both are ``slow``: five processes start (imports, MuJoCo, torch) before the first fault, and the run ends with
a settle phase and two checkpoints, so even the one-minute variant takes about two minutes on 2 shared cores.
Network faults need root or user namespaces plus ``ip`` and ``nft``; without them the soak runs its process
and disk faults on loopback and says ``"network_faults": false``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def _soak(tmp_path: Path, *args: str, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, str(SOAK), "--out", str(tmp_path / "soak"), *args],
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(lines[-1])
    assert proc.returncode == 0, result
    return result


def _check(result: dict) -> None:
    assert result["produced"] > 0 and result["in_replay"] + result["waiting_in_spill"] == result["produced"]
    assert result["lost"] == 0 and result["duplicated"] == 0, result
    assert result["unexpected_exits"] == [], result  # no control loop (or learner) died on its own
    assert result["restarts_survived"] == result["restarts"] >= 3, result
    taken = result["weights_after_learner_restart"]
    assert len(taken) == 2 and all(t["weights_version_taken"] is not None for t in taken), taken


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_one_minute(tmp_path: Path) -> None:
    """The CI-sized variant: 2 actors on the point-reach twin for one minute, faults compressed."""
    result = _soak(tmp_path, "--minutes", "1", "--actors", "2", "--env", "point_reach", "--actor-kill-every", "20",
                   "--partition", "10", "--checkpoint-every", "10", timeout=540)
    _check(result)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_four_actors_three_minutes(tmp_path: Path) -> None:
    result = _soak(tmp_path, "--minutes", "3", timeout=840)
    _check(result)
    if result["network_faults"]:
        assert result["spill_full_errors"] > 0  # actor 3 met the full disk and said so
