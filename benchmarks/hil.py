"""HIL sample efficiency: `robot-rl train` with the virtual operator vs without, same demos, several seeds.

For each seed and condition it runs the real CLI (learner + actor processes), reads the learner's periodic
deterministic evaluations (``metrics_learner.jsonl``) and reports the env steps at which evaluation success
first reached 90% (null when it never did within the budget), and the operator's total time
(``intervention_steps``, from ``run_dir/hil/*.jsonl``). Ends with one JSON line:
``steps_to_90_hil``, ``steps_to_90_no_hil`` (medians over seeds), ``speedup`` (``speedup_at_least`` when the
runs without the operator never got there), ``intervention_steps``.

    python benchmarks/hil.py --seeds 0 1 2 --steps 6000 --eval-every 1000 num_demos=3 algo.offline_pretrain_updates=0

That is the HIL-SERL setting: few demos, no offline warm start, interventions into the demo buffer (where the
default recipe's BC term learns from them). With the default recipe (20 demos + the offline warm start) both
conditions start at 90-100%, so there is nothing to speed up.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

from robot_rl.run_log import read_metrics


def steps_to(run_dir: Path, threshold: float) -> int | None:
    for record in read_metrics(run_dir / "metrics_learner.jsonl"):
        if record.get("eval/success_rate", -1.0) >= threshold:
            return int(record["step"])
    return None


def finished(run_dir: Path) -> bool:
    """A run that wrote its final checkpoint (the learner saves one as it exits)."""
    return (run_dir / "metrics_learner.jsonl").exists() and any((run_dir / "checkpoints").glob("ckpt-*"))


def intervention_steps(run_dir: Path) -> int:
    total = 0
    for path in (run_dir / "hil").glob("*.jsonl"):
        total += sum(json.loads(line)["intervention_steps"] for line in path.read_text().splitlines())
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=15000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", default="")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs already finished under --out (same overrides!) instead of training again")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="hil_bench_"))
    rows = []
    for seed in args.seeds:
        for hil in ("virtual", "none"):
            run_dir = root / f"{hil}-seed{seed}"
            if args.reuse and finished(run_dir):
                rows.append({"seed": seed, "hil": hil, "steps_to_90": steps_to(run_dir, args.threshold),
                             "intervention_steps": intervention_steps(run_dir)})
                print(f"seed {seed:3d}  hil={hil:8s}  reused {run_dir}", flush=True)
                continue
            cmd = [sys.executable, "-m", "robot_rl.cli", "train", f"hil={hil}", f"run_dir={run_dir}", f"seed={seed}",
                   f"env.seed={seed}", f"learner.max_env_steps={args.steps}",
                   f"learner.eval_every_env_steps={args.eval_every}", "logger.wandb=disabled", *args.overrides]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"train failed for seed {seed}, hil={hil}")
            rows.append({"seed": seed, "hil": hil, "steps_to_90": steps_to(run_dir, args.threshold),
                         "intervention_steps": intervention_steps(run_dir)})
            print(f"seed {seed:3d}  hil={hil:8s}  steps_to_{int(args.threshold * 100)}={rows[-1]['steps_to_90']}  "
                  f"intervention_steps={rows[-1]['intervention_steps']}", flush=True)

    def med(hil: str) -> float | None:
        # A run that never got there counts as "beyond the budget" (budget + 1) so medians stay honest.
        values = [r["steps_to_90"] if r["steps_to_90"] is not None else args.steps + 1 for r in rows if r["hil"] == hil]
        m = median(values)
        return None if m > args.steps else float(m)

    hil_steps, base_steps = med("virtual"), med("none")
    speedup = (base_steps / hil_steps) if hil_steps and base_steps else None
    # Without the operator never there within the budget: the speed-up is at least budget / hil steps.
    at_least = (args.steps / hil_steps) if hil_steps and base_steps is None else None
    print(json.dumps({"steps_to_90_hil": hil_steps, "steps_to_90_no_hil": base_steps, "speedup": speedup,
                      "speedup_at_least": at_least,
                      "intervention_steps": sum(r["intervention_steps"] for r in rows if r["hil"] == "virtual"),
                      "seeds": args.seeds, "budget_env_steps": args.steps, "runs": str(root)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
