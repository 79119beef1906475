"""BC success vs online fine-tuned success of a chunked flow policy, and full-sampler vs one-step latency.

    MUJOCO_GL=egl python benchmarks/policy_finetune.py [--seeds 0 1 2] [--online-steps 3000] [--algo dsrl]
    MUJOCO_GL=egl python benchmarks/policy_finetune.py --env panda_pick_cube_random --demos 20 --online-steps 20000
    MUJOCO_GL=egl python benchmarks/policy_finetune.py --algo adpo             # ADPO (DPPO + the ADAPG optimizer)
    MUJOCO_GL=egl python benchmarks/policy_finetune.py --sequence-critic --execute-steps 4   # chunk critic (any --algo)

Per seed, on ``--env`` (state obs; PointReach by default, the Panda pick-cube twin with ``--env
panda_pick_cube_random``): record ``--demos`` scripted-expert demos, behaviour-clone a flow policy
(chunks of 4, K=10 Euler steps) from them with ``pretrain_policy`` (what ``robot-rl pretrain`` runs), evaluate it
deterministically (``bc_success``), then fine-tune it online with the registered algorithm (DSRL by default) through
its learner-facing ``update(batch)`` on a real :class:`ReplayBuffer` (demos + the policy's own transitions, one
update per env step after ``--warmup`` steps, replanning every step) and evaluate again (``final_success``).
With ``--sequence-critic`` (every ``--algo``) the critic scores the executed chunk: the policy executes ``--execute-steps``
actions per chunk and the updates train on chunks re-assembled from the same replay (``robot_rl.sequence_replay``).
Few demos and few BC steps make the BC policy deliberately weak. This is the in-process loop, not the ZeroMQ
learner/actor (``tests/algorithms/test_chunk_pipeline.py`` covers that path).

Latency: per action chunk (batch 1, CPU, one torch thread) for the K-step sampler vs the consistency-distilled
one-step head of the same BC policy, with the deterministic success of each (``--distill`` steps).
With ``--eval-every N`` the fine-tuned policy is also evaluated every N online env steps: each seed's ``curve`` and
``steps_to_90`` (first evaluation at >= 90%), and ``steps_to_90_max`` over seeds (None unless every seed got there).
The last line is JSON: medians over seeds, ``steps_to_90_max``, ``final_success_min`` and ``per_seed``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from robot_rl.config import load_config  # noqa: E402
from robot_rl.demos import record_episode  # noqa: E402
from robot_rl.evaluate import run_episodes  # noqa: E402
from robot_rl.policies.chunking import chunk_dataset  # noqa: E402
from robot_rl.policies.cli import pretrain_policy  # noqa: E402
from robot_rl.policies.distill import distill_one_step  # noqa: E402
from robot_rl.registry import ALGORITHMS, ENVS, POLICIES  # noqa: E402
from robot_rl.replay import ReplayBuffer  # noqa: E402
from robot_rl.sequence_replay import sample_sequences  # noqa: E402
from robot_rl.specs import spec_hash  # noqa: E402
from robot_rl.types import Batch, Episode, Transition  # noqa: E402

POLICY = ["policy=flow", "policy.backbone=mlp", "policy.width=128", "policy.depth=2",
          "policy.chunk_size=4", "policy.inference_steps=10", "policy.noise_actor_hidden_dims=[128,128]",
          "policy.execute_steps=1"]  # replan every step: the fine-tuning critics score single env actions


def expert_episodes(cfg, n: int, seed: int) -> list[Episode]:
    """``n`` successful scripted-expert episodes (what ``robot-rl demos`` records)."""
    env = ENVS.make(cfg.env.name, cfg.env, seed=seed)
    expert, sh, episodes = env.expert(), spec_hash(env.obs_spec, env.action_spec), []
    for attempt in range(3 * n):
        transitions, success = record_episode(env, expert, seed * 1000 + attempt, "expert", attempt)
        if success:
            episodes.append(Episode.from_transitions(transitions, sh, success=True, task=env.task))
        if len(episodes) == n:
            return episodes
    raise RuntimeError(f"the expert succeeded in only {len(episodes)} of {3 * n} episodes")


def evaluate(cfg, policy, episodes: int, seed: int) -> float:
    env = ENVS.make(cfg.env.name, cfg.env, seed=seed)
    return float(run_episodes(env, policy, episodes, seed=50_000 + seed)["success_rate"])


def fine_tune(cfg, policy, algo, demos: list[Episode], online_steps: int, warmup: int, seed: int,
              eval_every: int = 0, eval_episodes: int = 20) -> dict[str, Any]:
    """Online fine-tuning in one process: act, store, ``update`` once per env step after the warm-up. With
    ``eval_every`` > 0 the policy is evaluated deterministically every that many env steps (``curve``) and
    ``steps_to_90`` is the first such step with success >= 0.9 (None if never)."""
    env = ENVS.make(cfg.env.name, cfg.env, seed=seed + 7)
    replay = ReplayBuffer(env.obs_spec, env.action_spec, capacity=online_steps + 5000)
    for ep in demos:  # the demos seed the replay (the learner keeps them in a separate demo buffer)
        replay.add_episode(ep)
    rng = np.random.default_rng(seed)
    obs, ep_id, t, successes = env.reset(seed=seed), 1000, 0, []
    policy.reset()
    t0 = time.perf_counter()
    curve: list[tuple[int, float]] = []
    for step in range(online_steps):
        if eval_every and step and step % eval_every == 0:
            curve.append((step, evaluate(cfg, policy, eval_episodes, seed)))
            policy.reset()  # the evaluation reset the policy's chunk queue on its own env
            print(f"  seed {seed}: eval at {step} env steps: {curve[-1][1]:.2f}", flush=True)
        if step and step % 2000 == 0:
            print(f"  seed {seed}: {step} online steps, training success (last 20 episodes) "
                  f"{np.mean(successes[-20:]) if successes else 0.0:.2f}, {time.perf_counter() - t0:.0f} s", flush=True)
        action = policy.act(obs, deterministic=False)
        r = env.step(action)
        replay.add_batch(Batch.from_transitions([Transition(obs, action, r.reward, r.obs, r.terminated, r.truncated,
                                                            "online", ep_id, t)]))
        obs, t = r.obs, t + 1
        if r.terminated or r.truncated:
            successes.append(bool(r.success))
            obs, ep_id, t = env.reset(), ep_id + 1, 0
            policy.reset()
        if step >= warmup:
            horizon = algo.sequence_horizon  # > 0: an action-sequence critic wants executed chunks
            batch = sample_sequences(replay, cfg.algo.batch_size, horizon, rng) if horizon \
                else replay.sample(cfg.algo.batch_size, rng)
            algo.update(batch.to_torch())
            policy.eval()
    return {"train_success_last20": float(np.mean(successes[-20:])) if successes else 0.0, "curve": curve}


def chunk_latency_ms(policy, obs: dict[str, np.ndarray], onestep: bool, repeats: int = 200) -> float:
    policy.use_onestep.fill_(1.0 if onestep else 0.0)
    tobs = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
    with torch.no_grad():
        for _ in range(10):
            policy.forward_act(tobs, True)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            policy.forward_act(tobs, True)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def run_seed(args, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    cfg = load_config([f"env={args.env}", *POLICY, "algo=bc", "algo.batch_size=128", f"seed={seed}",
                       *args.overrides])
    demos = expert_episodes(cfg, args.demos, seed)
    bc, _ = pretrain_policy(cfg, demos, args.bc_steps, seed=seed)
    out: dict[str, float] = {"seed": seed, "bc_success": evaluate(cfg, bc, args.eval_episodes, seed)}
    # Latency and success of the K-step sampler vs the one-step distilled head of the same BC policy.
    data, _ = chunk_dataset(demos, bc.chunk_size)
    distill_one_step(bc, data.to_torch(), args.distill, batch_size=128, seed=seed)
    obs = ENVS.make(cfg.env.name, cfg.env, seed=seed).reset(seed=seed)
    out["latency_ms_10step"] = chunk_latency_ms(bc, obs, onestep=False)
    out["latency_ms_1step"] = chunk_latency_ms(bc, obs, onestep=True)
    out["latency_ratio"] = out["latency_ms_10step"] / out["latency_ms_1step"]
    out["onestep_success"] = evaluate(cfg, bc, args.eval_episodes, seed)
    bc.use_onestep.fill_(0.0)
    # Online fine-tuning of the same BC policy.
    with tempfile.TemporaryDirectory() as tmp:  # through a checkpoint file, as `algo.pretrained=` loads it
        path = os.path.join(tmp, "bc.pt")
        torch.save({"policy": bc.state_dict()}, path)
        ft_cfg = load_config([f"env={args.env}", *POLICY, f"algo={args.algo}", "algo.batch_size=128", f"algo.pretrained={path}",
                              "algo.critic_hidden_dims=[128,128]", f"seed={seed}", *args.overrides,
                              *args.algo_overrides])
        policy = POLICIES.make(ft_cfg.policy.name, ft_cfg.policy, bc.obs_spec, bc.action_spec)
        algo = ALGORITHMS.make(ft_cfg.algo.name, ft_cfg.algo, policy, bc.obs_spec, bc.action_spec, "cpu")
    t0 = time.perf_counter()
    out.update(fine_tune(ft_cfg, policy, algo, demos, args.online_steps, args.warmup, seed, args.eval_every,
                         args.eval_episodes))
    out["finetune_wall_s"] = time.perf_counter() - t0
    out["final_success"] = evaluate(ft_cfg, policy, args.eval_episodes, seed)
    out["curve"].append((args.online_steps, out["final_success"]))
    out["steps_to_90"] = next((step for step, success in out["curve"] if success >= 0.9), None)
    out["online_steps"] = args.online_steps
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algo", default="dsrl", help="dsrl | fql | dppo | adpo")
    parser.add_argument("--sequence-critic", action="store_true", help="score the executed chunk "
                        "(algo.sequence_critic=true) and execute --execute-steps actions per chunk")
    parser.add_argument("--execute-steps", type=int, default=1, help="actions executed per chunk (max 4)")
    parser.add_argument("--env", default="point_reach", help="point_reach | panda_pick_cube_random (state obs)")
    parser.add_argument("--demos", type=int, default=3)
    parser.add_argument("--bc-steps", type=int, default=150)
    parser.add_argument("--distill", type=int, default=300)
    parser.add_argument("--online-steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--eval-episodes", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=0,
                        help="also evaluate every N online env steps (curve, steps_to_90); 0: only at the end")
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for the policy / algorithm")
    args = parser.parse_args()
    # algo.* overrides configure the fine-tuning algorithm only (the BC pretraining config is algo=bc).
    algo_overrides = [o for o in args.overrides if o.lstrip("+~").startswith("algo.")]
    args.overrides = [f"policy.execute_steps={args.execute_steps}",
                      *(o for o in args.overrides if o not in algo_overrides)]
    args.algo_overrides = [*(["algo.sequence_critic=true"] if args.sequence_critic else []), *algo_overrides]
    torch.set_num_threads(1)
    rows = [run_seed(args, s) for s in args.seeds]
    keys = ["bc_success", "final_success", "onestep_success", "latency_ms_10step", "latency_ms_1step",
            "latency_ratio", "finetune_wall_s"]
    summary = {f"{args.algo}_{k}" if k == "final_success" else k: round(statistics.median(r[k] for r in rows), 4)
               for k in keys}
    steps = [r["steps_to_90"] for r in rows]
    summary["steps_to_90_max"] = None if None in steps else max(steps)  # every seed reached 90% by then
    summary["final_success_min"] = min(r["final_success"] for r in rows)
    summary.update(env=args.env, algo=args.algo, sequence_critic=args.sequence_critic,
                   execute_steps=args.execute_steps, online_steps=args.online_steps, seeds=args.seeds, per_seed=rows)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
