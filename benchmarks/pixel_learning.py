"""The real-robot observation learns pick-cube on a CPU: 2 cameras + proprioception, no cube pose.

Per seed, one full ``python -m robot_rl.cli train env.obs=pixels`` run on ``panda_pick_cube`` with the cube start
randomised (train.yaml's default task), 20 scripted demos, the default (fast) encoder route
``policy.encoder=task`` unless overridden after ``--``: learner + actor processes over ZeroMQ, periodic
deterministic evaluations (``learner.eval_episodes`` episodes each). Reported per seed: env steps to the first
evaluation >= 80% (``null`` if never), final success, wall-clock of the whole command (demos, encoder
pretraining, training, final evaluation), the learner's own updates/s and its time spent embedding frames, and
the learning-curve PNG (copied to ``<out>/pixel_learning_seed<S>.png``).

Same run, same config, same threads: learner updates/s of the new route (updates on frame embeddings) and of
today's ``drq`` route (every update re-encodes every image with the end-to-end conv encoder), both timed on
replay-shaped random batches; ``ratio`` = new / drq.

    python benchmarks/pixel_learning.py                          # 3 seeds, 20k env steps each
    python benchmarks/pixel_learning.py --seeds 0 --out /tmp/pl  # one seed
    python benchmarks/pixel_learning.py --reuse --out /tmp/pl    # summarise finished run dirs, run the rest
    python benchmarks/pixel_learning.py -- policy.encoder=frozen policy.backbone.weights=/data/resnet18.pt

Ends with one JSON line: ``steps_to_80_max`` (worst seed; never reaching 80% is reported as ``null`` and the
target is then unmet), ``final_success_min``, ``wall_s_max``, ``updates_per_s``, ``updates_per_s_drq``,
``per_seed``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from sample_efficiency import free_ports, read_evals, steps_to  # noqa: E402
from robot_rl.run_log import read_metrics  # noqa: E402

TARGETS = {"steps_to_80_max": 20_000, "final_success_min": 0.8, "wall_s_max": 1800.0, "speedup_vs_drq": 20.0}


def learner_stats(run_dir: Path) -> dict[str, float | None]:
    """Last logged learner updates/s and embedding totals from ``metrics_learner.jsonl``."""
    last: dict = next((r for r in reversed(read_metrics(run_dir / "metrics_learner.jsonl"))
                       if "updates_per_s" in r), {})
    return {"learner_updates_per_s": last.get("updates_per_s"), "embed_ms_per_frame": last.get("embed_ms_per_frame")}


def run_seed(seed: int, args: argparse.Namespace, out: Path, extra: list[str]) -> dict:
    run_dir = out / f"seed{seed}"
    done = run_dir / "eval.json"
    wall_file = run_dir / "bench_wall_s.txt"
    if args.reuse and done.exists() and wall_file.exists():
        wall, rc = float(wall_file.read_text()), 0
        print(f"[seed {seed}] reusing {run_dir}", file=sys.stderr, flush=True)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        transitions_port, weights_port = free_ports(2)
        overrides = [
            "env.obs=pixels", f"env.image_size={args.image_size}", f"seed={seed}", f"env.seed={seed}",
            f"num_demos={args.num_demos}", f"run_dir={run_dir}", f"learner.max_env_steps={args.max_env_steps}",
            f"learner.eval_every_env_steps={args.eval_every}", f"learner.eval_episodes={args.eval_episodes}",
            f"eval_episodes={args.eval_episodes}", f"transport.transitions_port={transitions_port}",
            f"transport.weights_port={weights_port}", "logger.wandb=disabled", "logger.progress=false",
        ]
        cmd = [sys.executable, "-m", "robot_rl.cli", "train", *overrides, *extra]
        print(f"[seed {seed}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        with open(out / f"seed{seed}.log", "wb") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wall = time.monotonic() - t0
        if rc == 0:
            wall_file.write_text(f"{wall:.1f}")
    evals = read_evals(run_dir)
    png = run_dir / "learning_curve.png"
    if png.exists():
        shutil.copyfile(png, out / f"pixel_learning_seed{seed}.png")
    result = {"seed": seed, "returncode": rc, "steps_to_80": steps_to(evals, 0.8),
              "final_success": evals[-1][1] if evals else None, "wall_s": round(wall, 1),
              **learner_stats(run_dir), "evals": [[s, r] for s, r in evals],
              "curve_png": str(out / f"pixel_learning_seed{seed}.png") if png.exists() else None}
    print(json.dumps({k: v for k, v in result.items() if k != "evals"}), flush=True)
    print(f"[seed {seed}] eval success vs env steps: {result['evals']}", file=sys.stderr, flush=True)
    return result


def time_updates(encoder: str, updates: int, image_size: int, extra: list[str]) -> float:
    """Learner updates/s (``algo.update`` on replay-shaped random batches) of one encoder route, train.yaml's
    algorithm config; frozen routes get embedding batches, ``drq`` image batches."""
    import torch

    from robot_rl.config import load_config
    from robot_rl.registry import env_specs
    from robot_rl.registry import ALGORITHMS, POLICIES
    from robot_rl.types import Batch

    overrides = [o for o in extra if not o.startswith("policy.encoder=")]
    cfg = load_config(["env.obs=pixels", f"env.image_size={image_size}", *overrides, f"policy.encoder={encoder}"])
    obs_spec, action_spec = env_specs(cfg)
    policy = POLICIES.make(cfg.policy.name, cfg.policy, obs_spec, action_spec)
    algo = ALGORITHMS.make(cfg.algo.name, cfg.algo, policy, obs_spec, action_spec, "cpu")
    spec = policy.encoder.replay_spec(obs_spec)
    n = algo.batch_size_per_update
    rng = np.random.default_rng(0)

    def random_obs() -> dict[str, np.ndarray]:
        return {k: rng.integers(0, 256, (n, *s.shape), dtype=np.uint8) if s.dtype == "uint8"
                else rng.standard_normal((n, *s.shape), dtype=np.float32) for k, s in spec.fields.items()}

    batches = [Batch.from_arrays({
        **{f"obs/{k}": v for k, v in random_obs().items()}, **{f"next_obs/{k}": v for k, v in random_obs().items()},
        "action": rng.uniform(-1, 1, (n, action_spec.dim)).astype(np.float32),
        "policy_action": np.zeros((n, action_spec.dim), np.float32),
        "reward": (rng.random(n) < 0.05).astype(np.float32), "terminated": rng.random(n) < 0.05,
        "truncated": np.zeros(n, bool), "intervened": np.zeros(n, bool),
        "episode_id": np.zeros(n, np.int64), "step": np.zeros(n, np.int64)}) for _ in range(2)]
    for b in batches:
        b.from_demo = np.arange(n) < n // 2
    torch_batches = [b.to_torch("cpu") for b in batches]
    algo.update(torch_batches[0])  # warm-up: first-call allocations, oneDNN primitives
    start = time.perf_counter()
    for i in range(updates):
        algo.update(torch_batches[i % 2])
    return updates / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-env-steps", type=int, default=20_000)
    parser.add_argument("--eval-every", type=int, default=2_000)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--num-demos", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--speed-updates", type=int, default=200, help="timed updates of the new route")
    parser.add_argument("--drq-updates", type=int, default=3, help="timed updates of the drq route (~1/s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the updates/s comparison "
                        "(both routes alike; 1 is fastest for these small networks on a busy 2-core machine)")
    parser.add_argument("--skip-runs", action="store_true", help="only the updates/s comparison")
    parser.add_argument("--reuse", action="store_true", help="summarise finished seed run dirs under --out")
    parser.add_argument("--out", default="", help="directory for the run dirs (default: a fresh temp dir)")
    parser.add_argument("extra", nargs="*", help="extra robot-rl train overrides (after --)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="robot_rl_pixel_learning_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"run dirs under {out}", file=sys.stderr, flush=True)
    extra = list(args.extra)
    import torch

    torch.set_num_threads(args.threads)
    encoder = next((o.split("=", 1)[1] for o in extra if o.startswith("policy.encoder=")), "task")
    ups = time_updates(encoder, args.speed_updates, args.image_size, extra)
    ups_drq = time_updates("drq", args.drq_updates, args.image_size, extra)
    print(f"learner updates/s: {encoder} {ups:.1f}, drq {ups_drq:.2f}, ratio {ups / ups_drq:.1f}x",
          file=sys.stderr, flush=True)
    per_seed = [] if args.skip_runs else [run_seed(seed, args, out, extra) for seed in args.seeds]
    steps = [r["steps_to_80"] for r in per_seed]
    finals = [r["final_success"] for r in per_seed]
    summary = {
        "steps_to_80_max": None if not steps or any(s is None for s in steps) else max(steps),
        "final_success_min": None if not finals or any(f is None for f in finals) else min(finals),
        "wall_s_max": max((r["wall_s"] for r in per_seed), default=None),
        "updates_per_s": round(ups, 2), "updates_per_s_drq": round(ups_drq, 3),
        "speedup_vs_drq": round(ups / ups_drq, 1), "threads": args.threads, "encoder": encoder, "seeds": args.seeds,
        "max_env_steps": args.max_env_steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
        "num_demos": args.num_demos, "image_size": args.image_size, "extra_overrides": extra,
        "targets": TARGETS, "per_seed": per_seed,
    }
    print(json.dumps(summary), flush=True)
    return 0 if all(r["returncode"] == 0 for r in per_seed) else 1


if __name__ == "__main__":
    raise SystemExit(main())
