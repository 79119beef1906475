"""``robot-rl pretrain``: behaviour-clone a policy (diffusion, flow, ...) from demonstration episodes.

    robot-rl pretrain policy=diffusion env=panda_pick_cube demos=DIR steps=3000 out=policy.pt \\
        distill=1000 eval=20 [hydra overrides]

``demos`` is an episode store (``robot-rl demos``); without it, ``num_demos`` scripted-expert demos are recorded
into ``run_dir/demos`` first. Chunked policies learn from action chunks cut from the episodes. ``distill=N`` then
trains the one-step head for N steps (consistency distillation) and switches acting to it. ``eval=M`` runs M
deterministic episodes. The output file holds ``{"policy": state_dict, "policy_config": ...}``; fine-tune it with
``robot-rl train policy=diffusion algo=dsrl algo.pretrained=policy.pt``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("robot_rl.pretrain")

PRETRAIN_ARGS = ("demos", "steps", "out", "distill", "eval")


def pretrain_policy(cfg: Any, episodes: list, steps: int, distill_steps: int = 0, seed: int = 0,
                    device: str = "cpu") -> tuple[Any, dict[str, float]]:
    """BC (EMA) on chunks of ``episodes``; returns the EMA policy (eval mode) and training metrics."""
    import torch

    from robot_rl.algorithms.bc import BC, BCConfig
    from robot_rl.policies.chunking import chunk_dataset
    from robot_rl.registry import make_policy

    torch.manual_seed(seed)
    policy = make_policy(cfg, *_specs(cfg))  # the env's specs; the policy reads policy.obs_keys of them
    algo_cfg = cfg.algo if isinstance(cfg.algo, BCConfig) else BCConfig()
    bc = BC(algo_cfg, policy, policy.obs_spec, policy.action_spec, device)
    data, tasks = chunk_dataset(episodes, getattr(policy, "chunk_size", 1))
    if hasattr(policy, "set_tasks"):
        policy.set_tasks(tasks)
    if hasattr(policy, "fit_state_normalization") and "state" in data.obs:
        policy.fit_state_normalization(torch.as_tensor(data.obs["state"]))  # standardise with the demos' stats
    if getattr(policy, "chunk_size", 1) == 1 and not hasattr(policy, "chunk_targets"):
        data.action = data.action[:, 0]  # per-step policies (Gaussian) imitate single actions
    tdata = data.to_torch(device)
    gen = torch.Generator().manual_seed(seed)
    metrics: dict[str, float] = {}
    for step in range(steps):
        rows = torch.randint(0, len(tdata), (min(algo_cfg.batch_size, len(tdata)),), generator=gen)
        metrics = bc.update(tdata.index(rows.to(device)))
        if step % 500 == 0 or step == steps - 1:
            log.info("pretrain step %d/%d: %s", step + 1, steps, {k: round(v, 4) for k, v in metrics.items()})
    policy = bc.ema_policy()
    policy.eval()
    if distill_steps:
        from robot_rl.policies.distill import distill_one_step

        metrics.update(distill_one_step(policy, tdata, distill_steps, batch_size=algo_cfg.batch_size, seed=seed,
                                        log=lambda s, m: log.info("distill step %d: %s", s, m)))
    metrics["samples"] = float(len(tdata))
    return policy, metrics


def _specs(cfg: Any):
    from robot_rl.registry import env_specs

    return env_specs(cfg)


def cmd_pretrain(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    import torch

    from robot_rl.config import load_config, load_resolved, save_resolved, to_dict
    from robot_rl.demos import generate_demos
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.evaluate import run_episodes
    from robot_rl.registry import ENVS
    from robot_rl.specs import spec_hash

    from robot_rl.cli import split_extra

    rest, extra = split_extra(overrides, PRETRAIN_ARGS)
    if not any(o.startswith("algo=") for o in rest):
        rest.append("algo=bc")
    cfg = load_resolved(args.config, rest) if args.config else load_config(rest)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir / "config_pretrain.yaml")
    demos = extra.get("demos") or str(run_dir / "demos")
    if not extra.get("demos"):
        stats = generate_demos(cfg, cfg.num_demos, demos)
        log.info("recorded %s expert demos into %s", stats, demos)
    obs_spec, action_spec = _specs(cfg)
    episodes = list(EpisodeStore(demos).episodes(spec_hash=spec_hash(obs_spec, action_spec)))
    if not episodes:
        raise SystemExit(f"no episodes for this env's spec in {demos}")
    torch.manual_seed(cfg.seed)
    policy, metrics = pretrain_policy(cfg, episodes, int(extra.get("steps", 3000)), int(extra.get("distill", 0)),
                                      seed=cfg.seed)
    out = Path(extra.get("out") or run_dir / "policy.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"policy": policy.state_dict(), "policy_config": to_dict(cfg.policy)}, out)
    result = {"policy": cfg.policy.name, "episodes": len(episodes), "out": str(out),
              **{k: round(v, 5) for k, v in metrics.items()}}
    episodes_eval = int(extra.get("eval", 0))
    if episodes_eval:
        env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed + 4242)
        try:
            result["success_rate"] = run_episodes(env, policy, episodes_eval, seed=20_000)["success_rate"]
        finally:
            env.close()
    print(json.dumps(result))
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("pretrain", help="behaviour-clone a policy from demos: demos=DIR steps=N out=PATH",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="hydra overrides plus demos=, steps=, out=, distill=, eval=")
    p.add_argument("--config", help="start from a resolved config file")
    p.set_defaults(func=cmd_pretrain)
