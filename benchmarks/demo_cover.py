"""How well ``demo_spread``'s scripted demos cover the start states a policy is evaluated on (pick-cube twin).

Why it matters: a state policy learning from 3 demos succeeds from starts near a demo's and fails away from them,
in both reward arms (README, "Where the policies fail": 0.93 success within 0.75 start-spreads of a demo, 0.21-0.32
beyond 1.75). So the share of evaluation starts far from every demo bounds what the run can reach.

For each env seed it picks the demos from the same candidate pool ``robot-rl train demo_spread=true`` uses
(``max(num_demos * 8 + 24, 256)`` expert seeds of that env seed; ``--pool`` another size) with ``spread_order``'s k-median choice (``n=num_demos``,
what ``generate_demos`` asks for), and, as the baseline measured in the same run, its farthest-point order from the
most central candidate over the first ``num_demos * 8 + 24`` of those seeds (``n=None``: the first ``num_demos``;
the choice ``demo_spread`` made before the k-median, from the pool it drew then).
It then resets the twin at ``--starts`` evaluation seeds (those ``robot-rl eval`` uses, from 10,000) and measures
each start's distance to the nearest demo start in units of the evaluation starts' spread (per varying dimension,
as ``robot-rl eval starts=...`` reports it).

    python benchmarks/demo_cover.py [--demos 3] [--seeds 0 1 2 3 4 5 6 7 8 9] [--starts 400]

Prints a table and one JSON line: ``mean_distance`` and ``beyond_1_25`` / ``beyond_1_75`` (share of starts past
1.25 / 1.75 spreads) for both choices (medians over the env seeds), and ``ratio_vs_farthest_point`` (baseline's
share beyond 1.25 / k-median's). Geometry only: no training, a few seconds.
"""
from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from robot_rl.actor import env_seed
from robot_rl.config import load_config
from robot_rl.demos import spread_order
from robot_rl.eval_starts import nearest_demo_distances
from robot_rl.registry import ENVS


def cover(env, demo_seeds: list[int], eval_starts: np.ndarray) -> dict[str, float]:
    """Distances of ``eval_starts (S, D)`` to the nearest of the demos' starts, in the starts' spread units."""
    demos = []
    for seed in demo_seeds:
        env.reset(seed=seed)
        demos.append(env.start_features())
    nearest = nearest_demo_distances(eval_starts, np.asarray(demos))  # (S,)
    return {"mean_distance": float(nearest.mean()), "beyond_1_25": float((nearest > 1.25).mean()),
            "beyond_1_75": float((nearest > 1.75).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demos", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--starts", type=int, default=400)
    parser.add_argument("--pool", type=int, default=0, help="candidate starts (0: what generate_demos uses)")
    parser.add_argument("--env", default="panda_pick_cube_random",
                        help="env preset; the benchmark's twin randomises the cube's xy by +-0.05 m")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"k_median": [], "farthest_point": []}
    for seed in args.seeds:
        cfg = load_config([f"env={args.env}", f"env.seed={seed}"])
        env = ENVS.make(cfg.env.name, cfg.env, seed=seed)
        try:
            pool = [env_seed(seed, "expert", i) for i in range(args.pool or max(args.demos * 8 + 24, 256))]
            eval_starts = []
            for i in range(args.starts):
                env.reset(seed=10_000 + i)
                eval_starts.append(env.start_features())
            starts = np.asarray(eval_starts)
            old_pool = pool[:args.demos * 8 + 24]  # the candidates demo_spread drew from before
            chosen = {"k_median": spread_order(env, pool, n=args.demos)[:args.demos],
                      "farthest_point": spread_order(env, old_pool)[:args.demos]}
            for name, order in chosen.items():
                rows[name].append(cover(env, [pool[i] for i in order], starts))
        finally:
            env.close()
    summary = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in rows.items()}
    print(f"{args.demos} demos, {len(args.seeds)} env seeds, {args.starts} evaluation starts each (medians)")
    print(f"{'choice':<16}{'mean distance':>14}{'beyond 1.25':>13}{'beyond 1.75':>13}")
    for name, s in summary.items():
        print(f"{name:<16}{s['mean_distance']:>14.3f}{s['beyond_1_25']:>13.3f}{s['beyond_1_75']:>13.3f}")
    ratio = summary["farthest_point"]["beyond_1_25"] / max(summary["k_median"]["beyond_1_25"], 1e-9)
    print(json.dumps({"benchmark": "demo_cover", "demos": args.demos, "env_seeds": args.seeds, "starts": args.starts,
                      **{f"{k}_{name}": round(v, 4) for name, s in summary.items() for k, v in s.items()},
                      "ratio_vs_farthest_point": round(ratio, 3)}))


if __name__ == "__main__":
    main()
