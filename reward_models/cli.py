"""``robot-rl reward train | eval``: train a reward model from episodes and measure whether to trust it.

    robot-rl reward train [env overrides] out=reward.pt [data=DIR] [n_success=40 n_failure=20 seed=1]
                          [rm.steps=1500 rm.kind=prm rm.model.image_size=64 ...]
    robot-rl reward eval  [env overrides] checkpoint=reward.pt [data=DIR] [n_success=10 n_failure=10 seed=2]
                          [plot=progress.png] [reliability=reliability.png] [json=metrics.json]

Without ``data=DIR`` (an episode store holding successes and failures) episodes are generated from the
twin (``env`` overrides, e.g. ``env.obs=pixels env.image_size=64``): scripted-expert successes and
random / no-grasp / drop failures, reset seeds derived from ``seed`` (eval defaults to a different seed than
train, so its episodes are held out). ``rm.*`` overrides the typed :class:`RewardTrainConfig`.
``train`` also evaluates on held-out episodes (``eval_seed``) and writes the plot next to the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("robot_rl.reward_models")

_TRAIN_KEYS = ("out", "data", "n_success", "n_failure", "seed", "eval_seed", "n_eval_success", "n_eval_failure",
               "plot", "json", "save_data")
_EVAL_KEYS = ("checkpoint", "data", "n_success", "n_failure", "seed", "plot", "json", "task", "reliability")


def _split(overrides: Sequence[str], keys: Sequence[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """hydra overrides, our ``key=value`` extras, and ``rm.*`` reward-train overrides."""
    from robot_rl.cli import split_extra

    rest, extra = split_extra(overrides, keys)
    rm = [item[3:] for item in rest if item.startswith("rm.") and "=" in item]
    return [item for item in rest if not (item.startswith("rm.") and "=" in item)], extra, rm


def _train_config(rm_overrides: Sequence[str]) -> Any:
    from omegaconf import OmegaConf

    from robot_rl.config import _freeze
    from robot_rl.reward_models.config import RewardTrainConfig

    merged = OmegaConf.merge(OmegaConf.structured(RewardTrainConfig), OmegaConf.from_dotlist(list(rm_overrides)))
    return _freeze(OmegaConf.to_object(merged))


def _episodes(cfg: Any, extra: dict[str, str], n_success: int, n_failure: int, seed: int) -> list:
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.reward_models.data import generate_episodes

    if extra.get("data"):
        episodes = list(EpisodeStore(extra["data"]).episodes())
        if not episodes:
            raise SystemExit(f"no episodes in {extra['data']}")
        return episodes
    episodes = generate_episodes(cfg.env, n_success, n_failure, seed)
    if extra.get("save_data"):
        store = EpisodeStore(extra["save_data"])
        base = store.next_episode_id("reward-data")
        from dataclasses import replace
        for i, e in enumerate(episodes):
            store.write(replace(e, episode_id=base + i))
    return episodes


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    import torch

    from robot_rl.config import load_config
    from robot_rl.reward_models.evaluate import evaluate, plot_progress
    from robot_rl.reward_models.train import save_checkpoint, train_model

    rest, extra, rm = _split(overrides, _TRAIN_KEYS)
    cfg = load_config(rest)
    train_cfg = _train_config(rm)
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    out = Path(extra.get("out", "reward.pt"))
    seed = int(extra.get("seed", 1))
    episodes = _episodes(cfg, extra, int(extra.get("n_success", 40)), int(extra.get("n_failure", 20)), seed)
    log.info("training a %s reward model on %d episodes (%d successful), %d steps", train_cfg.kind,
             len(episodes), sum(e.success for e in episodes), train_cfg.steps)
    model = train_model(episodes, train_cfg, on_log=lambda step, s: log.info(
        "step %d  %s", step, "  ".join(f"{k}={v:.4g}" for k, v in s.items())), log_every=max(train_cfg.steps // 10, 1))
    held_out = _episodes(cfg, {}, int(extra.get("n_eval_success", 10)), int(extra.get("n_eval_failure", 10)),
                         int(extra.get("eval_seed", seed + 1000)))
    metrics = evaluate(model, held_out)
    version = save_checkpoint(out, model, sorted({e.task for e in episodes}), train_cfg, metrics)
    plot = plot_progress(model, held_out, extra.get("plot") or out.with_suffix(".png"))
    _print_metrics(f"held-out metrics ({len(held_out)} episodes)", metrics)
    result = {"checkpoint": str(out), "version": version, "plot": str(plot), **metrics}
    if extra.get("json"):
        Path(extra["json"]).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


def cmd_eval(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.config import load_config
    from robot_rl.reward_models.evaluate import calibration_data, evaluate, plot_progress
    from robot_rl.reward_models.train import load_checkpoint
    from robot_rl.reward_models.trust import reliability_diagram

    rest, extra, _ = _split(overrides, _EVAL_KEYS)
    if "checkpoint" not in extra:
        raise SystemExit("robot-rl reward eval needs checkpoint=PATH (from robot-rl reward train)")
    cfg = load_config(rest)
    model = load_checkpoint(extra["checkpoint"])
    episodes = _episodes(cfg, extra, int(extra.get("n_success", 10)), int(extra.get("n_failure", 10)),
                         int(extra.get("seed", 2)))
    if extra.get("task"):
        from dataclasses import replace
        episodes = [replace(e, task=extra["task"]) for e in episodes]
    metrics = evaluate(model, episodes)
    plot = plot_progress(model, episodes, extra.get("plot") or Path(extra["checkpoint"]).with_suffix(".eval.png"))
    probs, labels = calibration_data(model, episodes)
    reliability = reliability_diagram(probs, labels, extra.get("reliability") or
                                      Path(extra["checkpoint"]).with_suffix(".reliability.png"),
                                      title="P(done) vs success labels")
    _print_metrics(f"{extra['checkpoint']} (version {model.version}) on {len(episodes)} episodes", metrics)
    result = {"checkpoint": extra["checkpoint"], "version": model.version, "plot": str(plot),
              "reliability_plot": str(reliability), **metrics}
    if extra.get("json"):
        Path(extra["json"]).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


def register(subparsers: Any) -> None:
    """Add ``robot-rl reward {train,eval}``."""
    reward = subparsers.add_parser("reward", help="train / evaluate learned reward models",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = reward.add_subparsers(dest="reward_command", required=True)
    for name, fn, help_text in (("train", cmd_train, "train a progress reward model (or rm.kind=classifier)"),
                                ("eval", cmd_eval, "metrics + plot of a reward model on held-out episodes")):
        p = sub.add_parser(name, help=help_text, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("overrides", nargs="*", help="env overrides, key=value extras and rm.* train overrides")
        p.set_defaults(func=fn)
