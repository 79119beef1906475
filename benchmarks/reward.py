"""Reward-model benchmark: quality on held-out twin episodes, inference speed, learner cost of labelling,
and (``--rl``) RL with the learned reward vs the sparse reward. Prints a table, then one JSON line.

    python benchmarks/reward.py                       # quality (pixels, 64 px) + speed, ~10 min on 2 cores
    python benchmarks/reward.py --rl --seeds 3        # + robot-rl train reward=prm vs sparse (GPU-sized job)
    python benchmarks/reward.py --rl --rl-only --seeds 3 --train-args num_demos=3 algo.offline_pretrain_updates=0 \
        learner.max_env_steps=6000 learner.eval_every_env_steps=1000 \
        --prm-args reward.success_terminal_potential=true reward.refresh_every_episodes=10   # the remedies

The real-robot setting (state policy, camera-only learned reward; the sparse arm needs no cameras):

    python benchmarks/reward.py --rl --rl-only --seeds 3 --runs-dir runs/rw --train-args num_demos=3 \
        algo.offline_pretrain_updates=0 learner.max_env_steps=6000 learner.eval_every_env_steps=1000 \
        algo.critic=simbav2 'algo.critic_hidden_dims=[128,128]' algo.simbav2_mlp_ratio=2 algo.n_step=3 \
        --prm-args env.obs=state+pixels env.image_size=32 policy.obs_keys=[state] \
        reward.views=[images/front,images/wrist] reward.success_terminal_potential=true \
        reward.phi_cap=0.9 reward.refresh_every_episodes=10   # the README's run (SimbaV2 + 3-step TD critic)

The JSON line reports ``speedup`` (median env steps to the first eval >= 80%, sparse / learned; 0 when the
learned arm never got there), ``final_success_min_prm`` / ``final_success_min_sparse`` (worst seed's last eval).
When the sparse median never got there within its budget, ``speedup`` is a lower bound (``speedup_lower_bound``
true): a run that never reached 80% counts with the last env step it was evaluated at. ``success_auc_prm`` /
``success_auc_sparse`` are each arm's mean eval success over all its evaluations, averaged over seeds (per seed in
``success_auc_seeds_*``): the area under the learning curve, less noisy than a first passage or a last evaluation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch


sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_efficiency import free_ports, read_evals  # noqa: E402


def quality(args) -> tuple[dict, object, list]:
    from robot_rl.config import load_config
    from robot_rl.reward_models.config import ProgressModelConfig, RewardTrainConfig
    from robot_rl.reward_models.data import generate_episodes
    from robot_rl.reward_models.evaluate import evaluate
    from robot_rl.reward_models.train import train_model

    env = ["env.obs=pixels", f"env.image_size={args.image_size}", "env.max_episode_steps=40",
           "env.randomization.colour_range=0.05", "env.randomization.light_range=0.2"]
    cfg = load_config(env)
    t0 = time.monotonic()
    train = generate_episodes(cfg.env, args.n_success, args.n_failure, seed=1)
    held_out = generate_episodes(cfg.env, 12, 12, seed=1001)  # other reset seeds, randomisation on
    t_data = time.monotonic() - t0
    views = tuple(args.views.split(",")) if args.views else ()
    tc = RewardTrainConfig(steps=args.steps, model=ProgressModelConfig(views=views, image_size=args.image_size))
    t0 = time.monotonic()
    model = train_model(train, tc)
    t_train = time.monotonic() - t0
    m = evaluate(model, held_out)
    m.update(data_s=t_data, train_s=t_train)
    return m, model, held_out


@torch.no_grad()
def inference_speed(model, episodes, batch: int = 256, reps: int = 5) -> dict:
    frames = {k: np.concatenate([e.frames[k] for e in episodes])[:batch] for k in model.encoder.views}
    obs = {k: torch.from_numpy(v) for k, v in frames.items()}
    n = len(next(iter(obs.values())))
    text = torch.from_numpy(next(iter(model.task_embedding.values())))[None]
    model.phi_done(obs, text)
    t0 = time.perf_counter()
    for _ in range(reps):
        f = model.encoder(obs)
        tf = model.text_features(text).expand(n, -1)
        model.delta(f[:1].expand(n, -1), f, f.roll(1, 0), tf)  # n pairs (frames already encoded once)
    pair_s = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        model.phi_done(obs, text)
    frame_s = (time.perf_counter() - t0) / reps
    # a labelled transition needs Phi of obs and next_obs: two frames
    return {"pairs_per_s": n / pair_s, "transitions_labelled_per_s": n / (2 * frame_s)}


def learner_rate(checkpoint: str | None, demo_dir: str, updates: int = 150) -> float:
    from robot_rl.config import load_config
    from robot_rl.learner import Learner

    with tempfile.TemporaryDirectory() as run:
        extra = ["reward=prm", f"reward.checkpoint={checkpoint}"] if checkpoint else []
        cfg = load_config(["env.max_episode_steps=40", f"run_dir={run}", "logger.wandb=disabled",
                           "logger.progress=false", "transport.kind=inproc", f"learner.demos={demo_dir}",
                           "algo.offline_pretrain_updates=0", *extra])
        learner = Learner(cfg)
        try:
            for _ in range(10):
                learner.algo.update(learner.sampler.next())
            t0 = time.perf_counter()
            for _ in range(updates):
                learner.algo.update(learner.sampler.next())
            return updates / (time.perf_counter() - t0)
        finally:
            learner.sampler.close()


def labelling_cost(args) -> dict:
    """SAC/RLPD updates per second on state observations with and without a state progress model labelling."""
    from robot_rl.config import load_config
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.reward_models.config import ProgressModelConfig, RewardTrainConfig
    from robot_rl.reward_models.data import generate_episodes
    from robot_rl.reward_models.train import save_checkpoint, train_model

    cfg = load_config(["env.max_episode_steps=40"])
    eps = generate_episodes(cfg.env, 20, 8, seed=3)
    tmp = Path(tempfile.mkdtemp())
    store = EpisodeStore(tmp / "demos")
    for e in eps:
        if e.success:
            store.write(e)
    model = train_model(eps, RewardTrainConfig(steps=200, model=ProgressModelConfig()))
    save_checkpoint(tmp / "prm.pt", model, [eps[0].task])
    without = learner_rate(None, str(store.directory))
    with_ = learner_rate(str(tmp / "prm.pt"), str(store.directory))
    return {"learner_updates_per_s_sparse": without, "learner_updates_per_s_prm": with_}


def steps_to(evals: list[tuple[int, float]], threshold: float) -> float:
    """Env steps at the first evaluation >= ``threshold`` (``read_evals``' pairs); inf when none got there."""
    return next((float(step) for step, rate in evals if rate >= threshold), float("inf"))


def compare_first_passage(sparse: list[float], prm: list[float], sparse_last: list[float]) -> tuple[float, bool]:
    """(speedup, is_lower_bound) from each seed's env steps to the first eval >= 80% (inf: never).

    speedup = median sparse / median learned; 0 when the learned median never got there. When the sparse median
    never got there, its true value lies beyond the budget: each sparse run that never reached 80% counts with
    ``sparse_last`` (the last env step it was evaluated at), which bounds the ratio from below."""
    prm_median = float(np.median(prm))
    if not np.isfinite(prm_median) or prm_median <= 0:
        return 0.0, False
    sparse_median = float(np.median(sparse))
    if np.isfinite(sparse_median):
        return sparse_median / prm_median, False
    censored = [s if np.isfinite(s) else last for s, last in zip(sparse, sparse_last)]
    return float(np.median(censored)) / prm_median, True


def final_success(evals: list[tuple[int, float]]) -> float:
    return float(evals[-1][1]) if evals else float("nan")


def mean_success(evals: list[tuple[int, float]]) -> float:
    """Mean eval success over all of a run's evaluations: the area under its learning curve per evaluation.
    Uses every evaluation rather than one threshold crossing or the last one, so it is the least noisy
    summary of the three (both arms are evaluated on the same schedule, so the means compare)."""
    return float(np.mean([rate for _, rate in evals])) if evals else float("nan")


def rl(args) -> dict:
    """robot-rl train with reward=prm (+ ``--prm-args``, e.g. the remedies) vs the sparse reward over seeds:
    env steps to the first eval >= 80% (``speedup`` = median sparse / median learned) and the final eval."""
    out: dict[str, list[float]] = {"prm": [], "sparse": []}
    final: dict[str, list[float]] = {"prm": [], "sparse": []}
    last: dict[str, list[float]] = {"prm": [], "sparse": []}
    auc: dict[str, list[float]] = {"prm": [], "sparse": []}
    arms = [("sparse", list(args.sparse_args)), ("prm", ["reward=prm", *args.prm_args])]
    arms = [(name, extra) for name, extra in arms if not (name == "sparse" and args.skip_sparse)
            and not (name == "prm" and args.skip_prm)]
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name, extra in arms:
            run = Path(args.runs_dir or tempfile.mkdtemp()) / f"{name}-{seed}"
            if args.reuse and (run / "eval.json").is_file():  # finished by an earlier invocation (same args)
                print(f"{name} seed {seed}: reusing the finished run {run}", flush=True)
            else:
                t0 = time.monotonic()
                # Ports of its own, so invocations for other seeds or arms can run beside this one.
                transitions_port, weights_port = free_ports(2)
                subprocess.run([sys.executable, "-m", "robot_rl.cli", "train", f"run_dir={run}", f"seed={seed}",
                                f"env.seed={seed}", "logger.wandb=disabled",
                                f"transport.transitions_port={transitions_port}",
                                f"transport.weights_port={weights_port}", *args.train_args, *extra], check=True)
                print(f"{name} seed {seed}: {time.monotonic() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}",
                      flush=True)
            evals = read_evals(run)  # (env steps, success rate) per evaluation, in order
            out[name].append(steps_to(evals, 0.8))
            final[name].append(final_success(evals))
            last[name].append(float(evals[-1][0]) if evals else 0.0)
            auc[name].append(mean_success(evals))
            print(f"{name} seed {seed}: first >= 80% at {out[name][-1]} env steps, final success "
                  f"{final[name][-1]}, mean over evaluations {auc[name][-1]:.3f} ({run})", flush=True)
    result = {"seeds": float(args.seeds)}
    for name in out:
        if out[name]:
            result[f"steps_to_80_{name}"] = float(np.median(out[name]))
            result[f"final_success_min_{name}"] = float(np.min(final[name]))
            result[f"final_success_{name}"] = [float(x) for x in final[name]]
            result[f"success_auc_{name}"] = float(np.mean(auc[name]))
            result[f"success_auc_seeds_{name}"] = [round(x, 4) for x in auc[name]]
    if out["sparse"] and out["prm"]:
        result["speedup"], lower_bound = compare_first_passage(out["sparse"], out["prm"], last["sparse"])
        result["speedup_lower_bound"] = lower_bound
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--n-success", type=int, default=30)
    p.add_argument("--n-failure", type=int, default=15)
    p.add_argument("--views", default="images/front,images/wrist", help="comma-separated; empty = all keys")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rl", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--train-args", nargs="*", default=[], help="overrides for both arms")
    p.add_argument("--prm-args", nargs="*", default=[], help="extra overrides of the learned-reward arm")
    p.add_argument("--rl-only", action="store_true", help="skip the quality/speed part (with --rl)")
    p.add_argument("--sparse-args", nargs="*", default=[], help="extra overrides of the sparse arm")
    p.add_argument("--skip-sparse", action="store_true", help="only the learned-reward arm")
    p.add_argument("--skip-prm", action="store_true", help="only the sparse arm")
    p.add_argument("--reuse", action="store_true",
                   help="with --runs-dir: read a run that already finished (eval.json) instead of training it again "
                        "(e.g. the sparse arm run by an earlier --skip-prm invocation)")
    p.add_argument("--runs-dir", default="", help="keep the RL runs here (default: temporary dirs)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result: dict = {}
    if not (args.rl and args.rl_only):
        result, model, held_out = quality(args)
        result.update(inference_speed(model, held_out))
        result.update(labelling_cost(args))
    if args.rl:
        result.update(rl(args))
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    # never reached (inf) -> null: the JSON line stays standard JSON
    print(json.dumps({k: ((round(v, 4) if np.isfinite(v) else None) if isinstance(v, float) else v)
                      for k, v in result.items()}))


if __name__ == "__main__":
    main()
