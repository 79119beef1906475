"""Sample efficiency of the real ``robot-rl train`` pipeline on the Panda pick-cube twin, over seeds.

Each seed is one full ``python -m robot_rl.cli train`` run (scripted demos -> learner + actor processes over
ZeroMQ -> periodic deterministic evaluation), with ``seed=S env.seed=S`` and its own run directory and ports.
The learner's ``eval/success_rate`` records (``run_dir/metrics_learner.jsonl``, ``step`` = online env steps)
give, per seed: ``steps_to_80`` / ``steps_to_90`` (first evaluation at or above the threshold, ``null`` if
never), ``final_success`` (the last evaluation) and ``wall_s`` (the whole train command, demos and final
evaluation included).

    python benchmarks/sample_efficiency.py                      # state obs, 3 seeds, 15k env steps
    python benchmarks/sample_efficiency.py --obs pixels         # 2 cameras at 64 px + proprio, 50k env steps
    python benchmarks/sample_efficiency.py --seeds 0 1 2 3 4 --out /tmp/se -- algo=rlpd   # full RLPD

Everything after ``--`` is passed to ``robot-rl train`` as extra overrides (the defaults come from
``robot_rl/conf/train.yaml``). Ends with one JSON line: ``steps_to_80``, ``steps_to_90``, ``final_success``,
``wall_s`` (medians over seeds; a threshold never reached counts as infinity, so the median is ``null`` when
most seeds never reach it) and ``per_seed``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from robot_rl.run_log import read_metrics


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback right now (so concurrent runs never share a learner)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def read_evals(run_dir: Path) -> list[tuple[int, float]]:
    """(env steps, eval success rate) records of a run, in order."""
    return [(int(r["step"]), float(r["eval/success_rate"]))
            for r in read_metrics(run_dir / "metrics_learner.jsonl") if "eval/success_rate" in r]


def steps_to(evals: list[tuple[int, float]], threshold: float) -> int | None:
    return next((step for step, rate in evals if rate >= threshold - 1e-9), None)


def run_seed(seed: int, args: argparse.Namespace, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"{args.obs}-seed{seed}"
    transitions_port, weights_port = free_ports(2)
    overrides = [
        *([f"env={args.env}"] if args.env else []), f"env.obs={args.obs}", f"seed={seed}", f"env.seed={seed}",
        f"num_demos={args.num_demos}", f"run_dir={run_dir}",
        f"learner.max_env_steps={args.max_env_steps}", f"learner.eval_every_env_steps={args.eval_every}",
        f"transport.transitions_port={transitions_port}", f"transport.weights_port={weights_port}",
        "logger.wandb=disabled", "logger.progress=false",
    ]
    if args.obs == "pixels":
        overrides.append(f"env.image_size={args.image_size}")
    cmd = [sys.executable, "-m", "robot_rl.cli", "train", *overrides, *extra]
    print(f"[seed {seed}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    with open(out / f"{args.obs}-seed{seed}.log", "wb") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall = time.monotonic() - t0
    evals = read_evals(run_dir)
    result = {
        "seed": seed, "returncode": rc,
        "steps_to_80": steps_to(evals, 0.8), "steps_to_90": steps_to(evals, 0.9),
        "final_success": evals[-1][1] if evals else None, "wall_s": round(wall, 1),
        "evals": [[step, rate] for step, rate in evals], "run_dir": str(run_dir),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "evals"}), flush=True)
    print(f"[seed {seed}] eval success vs env steps: {result['evals']}", file=sys.stderr, flush=True)
    return result


def median_or_none(values: list, never_is_inf: bool = False) -> float | None:
    vals = [math.inf if v is None else v for v in values] if never_is_inf else [v for v in values if v is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    return None if math.isinf(m) else m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--obs", choices=("state", "pixels"), default="state")
    parser.add_argument("--env", default="", help="env config (default: train.yaml's, the Panda pick-cube twin "
                        "with a randomized cube start)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-env-steps", type=int, default=None, help="default 15000 (state), 50000 (pixels)")
    parser.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations "
                        "(default: max-env-steps / 6, at least 100)")
    parser.add_argument("--num-demos", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default="", help="directory for the run dirs (default: a fresh temp dir)")
    parser.add_argument("extra", nargs="*", help="extra robot-rl train overrides (after --)")
    args = parser.parse_args()
    if args.max_env_steps is None:
        args.max_env_steps = 15_000 if args.obs == "state" else 50_000
    if args.eval_every is None:
        args.eval_every = max(100, args.max_env_steps // 6)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="robot_rl_sample_eff_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"run dirs under {out}", file=sys.stderr, flush=True)
    per_seed = [run_seed(seed, args, out, list(args.extra)) for seed in args.seeds]
    summary = {
        "steps_to_80": median_or_none([r["steps_to_80"] for r in per_seed], never_is_inf=True),
        "steps_to_90": median_or_none([r["steps_to_90"] for r in per_seed], never_is_inf=True),
        "final_success": median_or_none([r["final_success"] for r in per_seed]),
        "wall_s": median_or_none([r["wall_s"] for r in per_seed]),
        "obs": args.obs, "env": args.env or "default", "max_env_steps": args.max_env_steps, "eval_every": args.eval_every,
        "num_demos": args.num_demos, "extra_overrides": list(args.extra),
        "per_seed": per_seed,
    }
    print(json.dumps(summary), flush=True)
    return 0 if all(r["returncode"] == 0 for r in per_seed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
