"""``benchmarks/reward.py --rl``'s verdict from first passages: the speed-up, and a lower bound when the sparse
median never reached 80% within its budget (before, that case printed ``null``, the same as a learned arm that
never got there)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

INF = math.inf


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "reward.py"
    spec = importlib.util.spec_from_file_location("reward_benchmark_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_medians_reached_give_the_plain_ratio(bench):
    speedup, lower = bench.compare_first_passage([10_000, INF, 3_000], [9_001, 3_001, 4_000], [12_000] * 3)
    assert (speedup, lower) == (pytest.approx(10_000 / 4_000), False)


def test_learned_median_never_reached_is_zero_whatever_the_sparse_arm_did(bench):
    assert bench.compare_first_passage([INF, INF, 6_000], [INF, INF, 4_000], [12_000] * 3) == (0.0, False)


def test_sparse_median_never_reached_gives_a_lower_bound_from_the_budget(bench):
    # sparse never / never / 6,007 within ~12k -> its median is beyond 12,000; learned median 5,000 -> >= 2.4x
    speedup, lower = bench.compare_first_passage([INF, INF, 6_007], [5_000, 4_000, INF], [12_001, 12_000, 12_004])
    assert lower is True
    assert speedup == pytest.approx(12_000 / 5_000)  # sorted censored sparse: 6,007 / 12,000 / 12,001


def test_the_last_evaluation_is_read_not_the_last_record(bench, tmp_path):
    records = [{"step": 1_000, "eval/success_rate": 0.1}, {"step": 1_500, "loss": 0.3},
               {"step": 12_003, "eval/success_rate": 0.6}, {"step": 12_010, "loss": 0.2}]
    (tmp_path / "metrics_learner.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    evals = bench.read_evals(tmp_path)
    assert evals[-1][0] == 12_003  # the step a sparse run that never got there is counted at
    assert bench.steps_to(evals, 0.8) == INF
    assert bench.final_success(evals) == 0.6
    assert bench.steps_to(evals + [(13_000, 0.8)], 0.8) == 13_000  # >= the threshold counts
    assert bench.mean_success(evals) == pytest.approx(0.35)  # every evaluation counts once, not the losses
    assert math.isnan(bench.mean_success([]))
