"""Critic / fine-tuning recipes against each other on the Panda pick-cube twin (state obs), same budget for all.

Each (recipe, seed) is one full ``python -m robot_rl.cli train`` run (scripted demos -> learner + actor over
ZeroMQ -> deterministic evaluation every ``--eval-every`` env steps, ``--eval-episodes`` episodes), in the *plain*
setting: 20 demos in the demo buffer (50/50 batches), no offline warm start and no BC term (except WSRL, whose
definition is an offline pre-train followed by warm-up rollouts and online RL without the offline data). All
recipes share the CPU-sized RLPD budget of ``robot_rl/conf/algo/rlpd_cpu.yaml`` (2 critics, 2 critic steps per
env step, ``learner.utd=1``, batch 256) and a critic of about the same parameter count (``simbav2_nstep_redq``
splits it over 4 narrower critics):

    rlpd        today's RLPD: LayerNorm MLP critics [256, 256], MSE TD loss
    simbav2     + SimbaV2 critic (width 128, 1 block, inner width 256: about the MLP's parameter count)
    hl_gauss    + HL-Gauss value loss (61 bins on [-0.25, 1.25], sigma 0.75 bin widths)
    both        + SimbaV2 + HL-Gauss
    nstep       + 3-step TD targets (algo.n_step=3: executed replay sequences, robot_rl.sequence_replay)
    simbav2_nstep  + SimbaV2 + 3-step TD targets (with rlpd, simbav2 and nstep: the 2x2 ablation)
    simbav2_nstep_clip   + TD targets clipped to [0, 1], the range of a 0/1 success return (algo.td_target_min/max)
    simbav2_nstep_minq   + the actor maximises the ensemble min instead of the mean (algo.actor_q_reduction=min)
    simbav2_nstep_redq   + 4 critics of width 88 (same parameter budget), target min over 2 drawn at random (REDQ)
    wsrl        WSRL: 1000 conservative offline pre-train updates on the demos (TD + CQL-style penalty with
                Cal-QL's floor, actor by BC), 500 warm-up env steps, then online only
    wsrl_td     WSRL with plain TD pre-training (algo.cql_weight=0): the ablation of WSRL's conservative phase

    python benchmarks/recipes.py --seeds 0 --max-env-steps 4000 --out /tmp/recipes
    python benchmarks/recipes.py --seeds 1 2 --recipes rlpd both --out /tmp/recipes --reuse   # add seeds later

``--reuse`` skips runs whose run directory already holds a finished run (its final evaluation at or beyond
``--max-env-steps``), so seeds can be added in several sittings; ``--summarise-only`` runs nothing. Per recipe:
``steps_to_80`` / ``steps_to_90`` (first evaluation from which success stays at or above the threshold, so a
collapse after an early high does not count; ``first_to_90`` per seed is the raw first crossing; ``null`` = never
within the budget) as median and max (worst seed, a never-reached seed counts as infinity -> ``null``),
``first_to_90_max`` (worst seed's first crossing, held or not), ``final_success`` median and min, and the
critic's parameter count. The last line is JSON with ``per_recipe``, ``best_recipe`` (lowest worst-seed steps to
90%, then
to 80%, then highest median final success), ``best_steps_to_90_max`` and ``baseline_steps_to_90_max`` (rlpd).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_efficiency import free_ports, read_evals, steps_to  # noqa: E402

PLAIN = ["algo.offline_pretrain_updates=0", "algo.bc_weight=0"]
# rlpd_cpu's budget, restated for algo=wsrl (which starts from the full RLPD config).
CPU_BUDGET = ["algo.num_critics=2", "algo.target_subset_size=2", "algo.critic_updates_per_actor_update=2",
              "algo.init_temperature=0.01"]
SIMBA = ["algo.critic=simbav2", "algo.critic_hidden_dims=[128,128]", "algo.simbav2_mlp_ratio=2"]
HL_GAUSS = ["algo.value_loss=hl_gauss", "algo.value_bins=61", "algo.value_min=-0.25", "algo.value_max=1.25"]
N_STEP = ["algo.n_step=3"]
# Remedies for the policy falling back after its first 90% (each on top of SimbaV2 + 3-step TD).
CLIP_TARGETS = ["algo.td_target_min=0", "algo.td_target_max=1"]
REDQ = ["algo.num_critics=4", "algo.critic_hidden_dims=[88,88]", "algo.target_subset_size=2"]
RECIPES: dict[str, list[str]] = {
    "rlpd": PLAIN,
    "simbav2": PLAIN + SIMBA,
    "hl_gauss": PLAIN + HL_GAUSS,
    "both": PLAIN + SIMBA + HL_GAUSS,
    "nstep": PLAIN + N_STEP,
    "simbav2_nstep": PLAIN + SIMBA + N_STEP,
    "simbav2_nstep_clip": PLAIN + SIMBA + N_STEP + CLIP_TARGETS,
    "simbav2_nstep_minq": PLAIN + SIMBA + N_STEP + ["algo.actor_q_reduction=min"],
    "simbav2_nstep_redq": PLAIN + SIMBA + N_STEP + REDQ,  # REDQ after SIMBA: its widths win
    # cql_actions=2 (2 uniform + 2 policy samples per state, the paper uses 10): the penalty's extra critic passes
    # would otherwise make the pre-train ~10x slower than plain TD on a CPU.
    "wsrl": ["algo=wsrl", *CPU_BUDGET, "algo.offline_pretrain_updates=1000", "algo.warmup_env_steps=500",
             "algo.cql_actions=2"],
    # WSRL with plain TD pre-training (no conservative penalty): the ablation of WSRL's conservative phase 1.
    "wsrl_td": ["algo=wsrl", *CPU_BUDGET, "algo.offline_pretrain_updates=1000", "algo.warmup_env_steps=500",
                "algo.cql_weight=0"],
}
BASELINE = "rlpd"


def critic_params(overrides: list[str]) -> int:
    """Parameter count of the recipe's critic ensemble (built from the composed config, no env stepping)."""
    import torch

    from robot_rl.algorithms.critics import build_critic
    from robot_rl.algorithms.value_heads import make_value_head
    from robot_rl.config import load_config
    from robot_rl.registry import env_specs

    cfg = load_config(overrides)
    obs_spec, action_spec = env_specs(cfg)
    a = cfg.algo
    head = make_value_head(a.value_loss, a.value_bins, a.value_min, a.value_max, a.value_sigma)
    in_dim = sum(int(torch.tensor(s.shape).prod()) for s in obs_spec.fields.values()) + action_spec.dim
    critic = build_critic(a.critic, in_dim, a.critic_hidden_dims, a.num_critics, a.critic_layer_norm,
                          head.num_outputs, a.simbav2_mlp_ratio)
    return sum(p.numel() for p in critic.parameters())


def run_one(recipe: str, seed: int, args: argparse.Namespace, out: Path) -> dict | None:
    run_dir = out / f"{recipe}-seed{seed}"
    evals = read_evals(run_dir)
    finished = bool(evals) and evals[-1][0] >= args.max_env_steps
    if args.summarise_only and not finished:
        return None
    if (args.reuse or args.summarise_only) and finished:
        print(f"[{recipe} seed {seed}] reused {run_dir}", file=sys.stderr, flush=True)
        rc, wall = 0, None
    else:
        if run_dir.exists():  # a partial or stale run: start clean (the learner would otherwise resume it)
            import shutil
            shutil.rmtree(run_dir)
        transitions_port, weights_port = free_ports(2)
        overrides = [
            "env.obs=state", f"seed={seed}", f"env.seed={seed}", f"num_demos={args.num_demos}", f"run_dir={run_dir}",
            f"learner.max_env_steps={args.max_env_steps}", f"learner.eval_every_env_steps={args.eval_every}",
            f"learner.eval_episodes={args.eval_episodes}", "eval_episodes=0",
            f"transport.transitions_port={transitions_port}", f"transport.weights_port={weights_port}",
            "logger.wandb=disabled", "logger.progress=false", *RECIPES[recipe], *args.override,
        ]
        cmd = [sys.executable, "-m", "robot_rl.cli", "train", *overrides]
        print(f"[{recipe} seed {seed}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(out / f"{recipe}-seed{seed}.log", "wb") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                                 env=dict(os.environ, PYTHONUNBUFFERED="1"))
        wall = round(time.monotonic() - t0, 1)
        evals = read_evals(run_dir)
    result = {"recipe": recipe, "seed": seed, "returncode": rc, "steps_to_80": steps_held(evals, 0.8),
              "steps_to_90": steps_held(evals, 0.9), "first_to_90": steps_to(evals, 0.9),
              "final_success": evals[-1][1] if evals else None,
              "wall_s": wall, "evals": [[s, r] for s, r in evals]}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def steps_held(evals: list[tuple[int, float]], threshold: float) -> int | None:
    """First evaluation from which every later evaluation stays at or above ``threshold`` (None: never). A recipe
    that starts high and then collapses (WSRL after dropping the demos) does not count as having reached it."""
    held = None
    for step, rate in evals:
        if rate >= threshold - 1e-9:
            held = step if held is None else held
        else:
            held = None
    return held


def worst(values: list) -> float | None:
    """Max over seeds with never = infinity (-> None)."""
    m = max(math.inf if v is None else v for v in values)
    return None if math.isinf(m) else m


def median_inf(values: list) -> float | None:
    m = statistics.median(math.inf if v is None else v for v in values)
    return None if math.isinf(m) else m


def summarise(recipe: str, runs: list[dict], params: int) -> dict:
    finals = [r["final_success"] for r in runs if r["final_success"] is not None]
    return {
        "seeds": [r["seed"] for r in runs], "critic_params": params,
        "steps_to_80_median": median_inf([r["steps_to_80"] for r in runs]),
        "steps_to_80_max": worst([r["steps_to_80"] for r in runs]),
        "steps_to_90_median": median_inf([r["steps_to_90"] for r in runs]),
        "steps_to_90_max": worst([r["steps_to_90"] for r in runs]),
        "first_to_90_max": worst([r["first_to_90"] for r in runs]),
        "final_success_median": statistics.median(finals) if finals else None,
        "final_success_min": min(finals) if finals else None,
        "per_seed": [{k: r[k] for k in ("seed", "returncode", "steps_to_80", "steps_to_90", "first_to_90",
                                        "final_success",
                                        "wall_s", "evals")}
                     for r in runs],
    }


def rank_key(row: dict) -> tuple:
    inf = math.inf
    return (row["steps_to_90_max"] if row["steps_to_90_max"] is not None else inf,
            row["steps_to_80_max"] if row["steps_to_80_max"] is not None else inf,
            -(row["final_success_median"] or 0.0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-env-steps", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--num-demos", type=int, default=20)
    parser.add_argument("--override", nargs="*", default=[], help="extra config overrides applied to every recipe "
                        "(after the recipe's own), e.g. learner.utd=4 for an ablation of the shared budget")
    parser.add_argument("--out", default="", help="directory for the run dirs (default: a fresh temp dir)")
    parser.add_argument("--reuse", action="store_true", help="skip (recipe, seed) runs that already finished")
    parser.add_argument("--summarise-only", action="store_true", help="run nothing: summarise the finished runs "
                        "under --out (unfinished or missing (recipe, seed) pairs are left out and not listed)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="robot_rl_recipes_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"run dirs under {out}", file=sys.stderr, flush=True)
    per_recipe = {}
    for recipe in args.recipes:
        runs = [r for r in (run_one(recipe, seed, args, out) for seed in args.seeds) if r is not None]
        if not runs:
            continue
        per_recipe[recipe] = summarise(recipe, runs, critic_params([*RECIPES[recipe], *args.override]))
    print(f"{'recipe':10s} {'to80 med/max':>14s} {'to90 med/max':>14s} {'final med/min':>14s} {'params':>8s}",
          file=sys.stderr)
    for name, row in per_recipe.items():
        print(f"{name:10s} {str(row['steps_to_80_median']):>6s}/{str(row['steps_to_80_max']):<7s} "
              f"{str(row['steps_to_90_median']):>6s}/{str(row['steps_to_90_max']):<7s} "
              f"{str(row['final_success_median']):>6s}/{str(row['final_success_min']):<7s} {row['critic_params']:8d}",
              file=sys.stderr)
    best = min(per_recipe, key=lambda name: rank_key(per_recipe[name]))
    summary = {
        "best_recipe": best, "best_steps_to_90_max": per_recipe[best]["steps_to_90_max"],
        "baseline_steps_to_90_max": per_recipe[BASELINE]["steps_to_90_max"] if BASELINE in per_recipe else None,
        "env": "panda_pick_cube_random", "obs": "state", "max_env_steps": args.max_env_steps,
        "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "num_demos": args.num_demos,
        "seeds": sorted({s for row in per_recipe.values() for s in row["seeds"]}), "override": args.override,
        "recipes": {name: RECIPES[name] for name in args.recipes}, "per_recipe": per_recipe,
    }
    print(json.dumps(summary), flush=True)
    return 0 if all(r["returncode"] == 0 for row in per_recipe.values() for r in row["per_seed"]
                    if "returncode" in r) else 1


if __name__ == "__main__":
    raise SystemExit(main())
