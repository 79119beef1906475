"""Why does the learned reward's benefit fade? Read a finished ``robot-rl train reward=prm`` run and print, over
training (online episodes in arrival order, in windows): success rate, the learned progress at the end of
successful and failed episodes (the hacking signal), base vs potential-shaping reward per transition, the
last-step reward of successes (the success reward after shaping), the learner's logged Q-values and
evaluations, and what the learner's critic check (``robot_rl.value_check``) says of the final critic. One JSON
line at the end.

    python benchmarks/reward_diagnose.py RUN_DIR [--window 20]

Uses the run's latest checkpoint (its online replay holds every online transition), its reward model
(``reward.checkpoint`` or ``RUN_DIR/reward_prm.pt``) and its reward config, with the shaping weight the run ended
on (``reward.scale_final`` where a schedule anneals it). Offline analysis: the run itself is not touched.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from robot_rl.run_log import read_metrics
from robot_rl.types import Batch


def load_replay(ckpt: Path, name: str = "replay_online"
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(fields (N,), obs per key (N, ...), next_obs per key (N, ...)) from a saved replay buffer."""
    d = ckpt / name
    fields = {p.stem[len("field_"):]: np.load(p) for p in d.glob("field_*.npy")}
    obs_fid, next_fid = np.load(d / "obs_fid.npy"), np.load(d / "next_fid.npy")
    meta = json.loads((d / "meta.json").read_text())
    cap = meta["frame_capacity"]
    frames = {p.stem[len("frame_"):].replace("__", "/"): np.load(p) for p in d.glob("frame_*.npy")}
    obs = {k: v[obs_fid % cap] for k, v in frames.items()}
    nxt = {k: v[next_fid % cap] for k, v in frames.items()}
    return fields, obs, nxt


def replay_batch(fields, obs, nxt) -> Batch:
    """The rows :func:`load_replay` read, as one numpy :class:`Batch`."""
    return Batch(obs=obs, next_obs=nxt, action=fields["action"],
                 reward=fields["reward"], terminated=fields["terminated"].astype(bool),
                 truncated=fields["truncated"].astype(bool), intervened=fields["intervened"].astype(bool),
                 policy_action=fields["policy_action"], episode_id=fields["episode_id"], step=fields["step"])


def load_algo(cfg, ckpt: Path):
    """The checkpoint's algorithm (critic included), on the CPU."""
    from robot_rl.checkpoint import Checkpointer
    from robot_rl.registry import env_specs
    from robot_rl.registry import ALGORITHMS, make_policy

    obs_spec, action_spec = env_specs(cfg)
    policy = make_policy(cfg, obs_spec, action_spec)  # on policy.obs_keys: what the policy and critic read
    algo = ALGORITHMS.make(cfg.algo.name, cfg.algo, policy, policy.obs_spec, action_spec, torch.device("cpu"))
    algo.load_state_dict(Checkpointer.load_state(ckpt)["algo"])
    return algo


def critic_keys(algo, obs) -> tuple[str, ...]:
    """The replay obs keys the checkpoint's critic reads (its spec's, or frame embeddings): not a reward's frames."""
    return tuple(k for k in obs if k in algo.obs_spec.fields or k.startswith("embed/"))


def value_check_verdict(cfg, algo, batch: Batch, rewards) -> dict:
    """What the learner's critic check (:mod:`robot_rl.value_check`) says of the checkpoint's critic (``algo``,
    :func:`load_algo`) on the last ``learner.value_check_episodes`` online episodes of ``batch`` (the online
    replay, :func:`replay_batch`); ``rewards(batch)`` = the rewards trained on."""
    from robot_rl.value_check import ValueCheck

    episodes = max(1, int(cfg.learner.value_check_episodes))
    ends = np.flatnonzero(batch.terminated | batch.truncated)
    tail = np.arange(len(batch)) > (ends[-episodes - 1] if len(ends) > episodes else -1)  # the last episodes' rows
    check = ValueCheck(cfg.algo.gamma, episodes, margin=cfg.learner.value_check_margin,
                       critic_keys=critic_keys(algo, batch.obs))
    check.observe(batch.select(tail))
    return check.check(algo.q_values, rewards)


def critic_vs_returns(algo, batch: Batch, shaped, starts, ends, gamma: float, last: int) -> dict:
    """Mean Q(s, a) of the checkpoint's critic (``algo``, :func:`load_algo`; ``algo.q_values``, the ensemble mean)
    against the discounted return to go of ``shaped`` (``discounted_returns``), over the first transitions of the
    last ``last`` online episodes of ``batch`` (the online replay, :func:`replay_batch`), split by success."""
    from robot_rl.value_check import discounted_returns

    keys = critic_keys(algo, batch.obs)
    out: dict[str, list[float]] = {"q_success": [], "mc_success": [], "q_failure": [], "mc_failure": []}
    for s, e in list(zip(starts, ends))[-last:]:
        idx = np.arange(s, min(s + 10, e + 1))  # the first 10 steps of the episode
        q = algo.q_values(batch.select(idx).with_obs_keys(keys))  # (n,)
        mc = discounted_returns(shaped[s:e + 1], gamma)[idx - s]  # (n,)
        tag = "success" if batch.terminated[e] and batch.reward[e] > 0 else "failure"
        for key in (tag, "all"):  # "all": the start-state value the critic should predict, E[return]
            out.setdefault(f"q_{key}", []).append(float(q.mean()))
            out.setdefault(f"mc_{key}", []).append(float(mc.mean()))
    return {k: round(float(np.mean(v)), 4) for k, v in out.items() if v}


def learner_curves(run_dir: Path) -> dict:
    """Evaluations and ``q_mean`` per 1k env steps from the learner's metrics."""
    records = read_metrics(run_dir / "metrics_learner.jsonl")
    q_by_k: dict[int, list[float]] = {}
    for r in records:
        if "q_mean" in r:
            q_by_k.setdefault(r["step"] // 1000, []).append(r["q_mean"])
    return {"evals": [(r["step"], r["eval/success_rate"]) for r in records if "eval/success_rate" in r],
            "q_mean_by_1k": {str(k): round(float(np.mean(v)), 4) for k, v in sorted(q_by_k.items())}}


def sparse_run(run_dir: Path, cfg, ckpt: Path, window: int) -> None:
    """A run without a learned reward: success per window of online episodes and Q vs the recorded return."""
    fields, obs, nxt = load_replay(ckpt)
    term, base = fields["terminated"].astype(bool), fields["reward"].astype(np.float64)
    ends = np.flatnonzero(term | fields["truncated"].astype(bool))
    starts = np.r_[0, ends[:-1] + 1]
    success = [bool(term[e] and base[e] > 0) for e in ends]
    windows = [round(float(np.mean(success[i:i + window])), 3) for i in range(0, len(success), window)]
    algo, batch = load_algo(cfg, ckpt), replay_batch(fields, obs, nxt)
    q_gap = critic_vs_returns(algo, batch, base, starts, ends, cfg.algo.gamma, last=window)
    print(f"{len(ends)} online episodes; success per window of {window}: {windows}")
    print("critic vs Monte-Carlo (last episodes; truncated failures add gamma^k V(s_T) that MC lacks):", q_gap)
    verdict = value_check_verdict(cfg, algo, batch, lambda b: b.reward)
    print("the learner's critic check on the final critic:", {k: round(v, 3) for k, v in verdict.items()})
    print(json.dumps({"episodes": len(ends), "success_windows": windows, **q_gap, **verdict,
                      **learner_curves(run_dir)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--window", type=int, default=20, help="episodes per row")
    args = p.parse_args()
    from robot_rl.checkpoint import Checkpointer
    from robot_rl.config import load_resolved
    from robot_rl.reward_models.labeller import RewardLabeller
    from robot_rl.reward_models.train import load_checkpoint

    cfg = load_resolved(args.run_dir / "config_learner.yaml")
    ckpt = Checkpointer(args.run_dir / "checkpoints").latest() or Checkpointer(args.run_dir).latest()
    if cfg.reward.name == "none":  # the sparse arm: the critic against the recorded reward's returns only
        sparse_run(args.run_dir, cfg, ckpt, args.window)
        return
    model_path = Path(cfg.reward.checkpoint) if cfg.reward.checkpoint else args.run_dir / "reward_prm.pt"
    labeller = RewardLabeller(load_checkpoint(model_path), cfg.reward, cfg.algo.gamma)
    fields, obs, nxt = load_replay(ckpt)
    n = len(fields["reward"])
    # The learner labels every sampled batch with the shaping weight of the moment, so the final critic was
    # trained on the schedule's last weight (reward.scale_final): label the whole run with it, as the learner did.
    labeller.online_steps = n
    # The success transitions the learner does see: the demos' last steps, base vs learned reward.
    dfields, dobs, dnxt = load_replay(ckpt, "replay_demo")
    dterm = dfields["terminated"].astype(bool) & (dfields["reward"] > 0)
    dviews = labeller.model.encoder.views
    dshaped = labeller.rewards(replay_batch(dfields, dobs, dnxt).with_obs_keys(dviews))
    demo_phi_pre = labeller.potentials({k: dobs[k][dterm] for k in dviews})[0]
    demo = {"demo_successes": int(dterm.sum()), "demo_last_base": float(dfields["reward"][dterm].mean()),
            "demo_last_learned": float(dshaped[dterm].mean()), "demo_phi_before_success": float(demo_phi_pre.mean()),
            "demo_learned_return": float(dshaped.sum() / max(dterm.sum(), 1)),
            "success_terminal_potential": bool(getattr(cfg.reward, "success_terminal_potential", False))}
    print("demo successes (the only success transitions when online episodes never succeed):", demo)
    views = labeller.model.encoder.views
    with torch.no_grad():
        phi_next, done_next = (np.concatenate(x) for x in zip(*[
            labeller.potentials({k: nxt[k][i:i + 2048] for k in views}) for i in range(0, n, 2048)]))
    term = fields["terminated"].astype(bool)
    batch = replay_batch(fields, obs, nxt)
    shaped = labeller.rewards(batch.with_obs_keys(views))
    base = fields["reward"].astype(np.float64)
    ends = np.flatnonzero(term | fields["truncated"].astype(bool))
    starts = np.r_[0, ends[:-1] + 1]
    rows = []
    episodes = []
    for s, e in zip(starts, ends):
        success = bool(term[e] and base[e] > 0)
        episodes.append(dict(start=int(s), success=success, final_phi=float(phi_next[e]),
                             max_done=float(done_next[s:e + 1].max()), last_reward=float(shaped[e]),
                             shaped_return=float(shaped[s:e + 1].sum()), length=int(e - s + 1)))
    print(f"{len(episodes)} online episodes, {n} transitions; reward model {model_path} "
          f"(scale {labeller.current_scale():g}, gamma {cfg.algo.gamma}, shaping {cfg.reward.shaping})")
    header = ("episodes", "env_step", "success", "phiT_succ", "phiT_fail", "hacked", "base/step", "F/step",
              "|F|/step", "r_last_succ", "ret_succ", "ret_fail")
    print("  ".join(f"{h:>10}" for h in header))
    for i in range(0, len(episodes), args.window):
        w = episodes[i:i + args.window]
        lo, hi = w[0]["start"], w[-1]["start"] + w[-1]["length"]
        succ = [x for x in w if x["success"]]
        fail = [x for x in w if not x["success"]]
        f = shaped[lo:hi] - base[lo:hi]
        row = dict(episodes=f"{i}-{i + len(w) - 1}", env_step=hi, success=np.mean([x["success"] for x in w]),
                   phiT_succ=np.mean([x["final_phi"] for x in succ]) if succ else np.nan,
                   phiT_fail=np.mean([x["final_phi"] for x in fail]) if fail else np.nan,
                   hacked=np.mean([x["final_phi"] >= 0.8 and not x["success"] for x in w]),
                   base=base[lo:hi].mean(), F=f.mean(), absF=np.abs(f).mean(),
                   r_last_succ=np.mean([x["last_reward"] for x in succ]) if succ else np.nan,
                   ret_succ=np.mean([x["shaped_return"] for x in succ]) if succ else np.nan,
                   ret_fail=np.mean([x["shaped_return"] for x in fail]) if fail else np.nan)
        rows.append(row)
        print("  ".join(f"{v:>10}" if isinstance(v, str) else f"{v:>10.3f}" for v in row.values()))
    algo = load_algo(cfg, ckpt)
    q_gap = critic_vs_returns(algo, batch, shaped, starts, ends, cfg.algo.gamma, last=args.window)
    print("critic vs Monte-Carlo (last episodes; truncated failures add gamma^k V(s_T) that MC lacks):", q_gap)
    verdict = value_check_verdict(cfg, algo, batch, labeller.rewards)
    print("the learner's critic check on the final critic:", {k: round(v, 3) for k, v in verdict.items()})
    curves = learner_curves(args.run_dir)
    print("eval success by env step:", curves["evals"])
    print("q_mean by 1k env steps:", {f"{k}k": v for k, v in curves["q_mean_by_1k"].items()})
    print(json.dumps({"episodes": len(episodes), **demo, **q_gap, **verdict, **curves,
                      "windows": [{k: (v if isinstance(v, str) else round(float(v), 4)) for k, v in r.items()}
                                  for r in rows]}))


if __name__ == "__main__":
    main()
