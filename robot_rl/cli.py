"""``robot-rl``: one command, subcommands, hydra overrides.

    robot-rl train   [overrides]            learner + actor processes over ZeroMQ on this machine
    robot-rl learner [overrides]            the learner half (GPU box)
    robot-rl actor   [overrides]            the actor half (robot PC / sim host)
    robot-rl keys DIR [--actors A B ...]    CurveZMQ keys for actor<->learner links across machines
    robot-rl demos   [overrides] n=20 out=DIR      scripted-expert demonstrations into an episode store
    robot-rl demos   teleop=keyboard|spacemouse|gamepad [overrides] n=20 out=DIR   demonstrations by hand
    robot-rl eval    [overrides] checkpoint=PATH episodes=20 video=PATH starts=map.png json=out.json
    robot-rl config  [overrides]            print the resolved config
    robot-rl reward  train|eval [overrides] learned process reward models
    robot-rl pretrain policy=diffusion|flow|vla [overrides] out=PATH    behaviour cloning of chunked policies
    robot-rl export-mcu checkpoint=RUN_DIR out=DIR    int8 C99 policy for a Cortex-M microcontroller
    robot-rl data    import-lerobot|export-lerobot|import-bag SRC OUT    LeRobotDataset / rosbag2 conversion
    robot-rl dashboard RUN_DIR              the operator's live web page of a run

Overrides use hydra syntax (``learner.utd=2 env=point_reach transport.host=10.0.0.5``); ``--config FILE``
starts from a resolved config file written by an earlier run (``run_dir/config.yaml``). A bad override or
path prints one or two lines and exits with status 2; ``--debug`` (or ``HYDRA_FULL_ERROR=1``) shows the
traceback instead.
"""
from __future__ import annotations

import argparse
import json
import importlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from robot_rl.config_errors import UsageError

log = logging.getLogger("robot_rl.cli")

# Modules that add subcommands of their own (``reward``, ``pretrain``, ``export-mcu``, ...): see build_parser.
FEATURE_COMMANDS: tuple[str, ...] = ("robot_rl.hardware.mcu.cli", "robot_rl.reward_models.cli",
                                     "robot_rl.policies.cli", "robot_rl.datasets.cli",
                                     "robot_rl.dashboard.cli")

# The example overrides each subcommand's help shows (tests/test_cli_usage.py resolves every one of them).
OVERRIDE_EXAMPLES: dict[str, str] = {
    "train": "env=point_reach learner.utd=2 num_actors=2",
    "learner": "env=panda_pick_cube transport.bind=0.0.0.0 run_dir=runs/exp1",
    "actor": "transport.host=10.0.0.5 actor.actor_id=robot1 actor.realtime=true",
    "demos": "env=point_reach n=20 out=demos",
    "eval": "checkpoint=runs/exp1 episodes=20 video=eval.mp4 starts=starts.png json=eval.json",
    "config": "env=point_reach learner.utd=2",
}


def split_extra(overrides: Sequence[str], keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Pull subcommand-specific ``key=value`` arguments (e.g. ``n=20``) out of the hydra overrides; feature
    subcommands (``reward``, ``pretrain``, ``export-mcu``) use it too. Returns (hydra overrides, extras)."""
    extra, rest = {}, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key in keys:
            extra[key] = value
        else:
            rest.append(item)
    return rest, extra


def _config(args: argparse.Namespace, overrides: Sequence[str]):
    from robot_rl.config import load_config, load_resolved

    if args.config:
        return load_resolved(args.config, overrides)
    return load_config(overrides)


def _stop_on_signals() -> threading.Event:
    """Event set by SIGTERM/SIGINT, and (in a child of ``robot-rl train``) when that parent exits."""
    from robot_rl.lifetime import stop_with_parent, why_signal

    stop = threading.Event()

    def handler(signum, frame):  # noqa: ARG001
        log.info("%s: stopping cleanly", why_signal(signum))
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stop_with_parent(stop)
    return stop


def _ignore_stop_signals() -> None:
    """Everything is saved: a late SIGTERM (``robot-rl train`` stopping a process that already finished) must not
    turn a clean exit into a kill. Python restores the default action of its own handlers during interpreter
    teardown (which can take seconds with torch or MuJoCo Warp loaded), but leaves an ignored signal ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop_when_learner_finishes(transport, stop: threading.Event, actor_id: str) -> None:
    """The learner announces the end of its budget (``progress["draining"]``): stop stepping, so the last
    chunks reach it and are committed before this actor exits."""
    def watch() -> None:
        while not stop.wait(0.1):
            progress = transport.learner_progress()
            if progress and progress.get("draining"):
                log.info("actor %s: the learner reached its budget: stopping", actor_id)
                stop.set()

    threading.Thread(target=watch, name="learner-finished", daemon=True).start()


def _wait_committed(transport, timeout_s: float) -> bool:
    """After the learner's budget: wait (while it is connected) until it committed every chunk we hold, so
    nothing is left in ``spill/``. True when nothing is pending."""
    import time

    deadline = time.monotonic() + timeout_s
    clear_since = None
    while time.monotonic() < deadline and transport.connected:
        transport.flush()
        stats = transport.stats()
        if stats["pending_chunks"] == 0 and stats["queue_depth"] == 0:
            clear_since = clear_since or time.monotonic()
            if time.monotonic() - clear_since > 0.3:  # not just between dequeuing and chunking
                return True
        else:
            clear_since = None
        time.sleep(0.05)
    return transport.stats()["pending_chunks"] == 0


def cmd_learner(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.learner import Learner

    cfg = _config(args, overrides)
    # Handlers first: a SIGTERM while the learner loads demos and builds its model (seconds) must stop it
    # cleanly too, not kill it (the run() below returns at once when stop is already set).
    stop = _stop_on_signals()
    learner = Learner(cfg)
    threading.Thread(target=lambda: (stop.wait(), learner.stop()), daemon=True).start()
    try:
        result = learner.run()
    finally:
        learner.close()
    _ignore_stop_signals()
    log.info("learner finished: %s", result)
    return 0


def cmd_actor(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.actor import Actor, batched_backend, env_seed, envs_per_actor, make_envs
    from robot_rl.config import config_hash, save_resolved
    from robot_rl.specs import spec_hash
    from robot_rl.transport.zmq_actor import ZmqActorClient

    import torch

    torch.set_num_threads(1)  # small batched inference; leave the cores to the sim and the learner
    cfg = _config(args, overrides)
    stop = _stop_on_signals()  # before the envs are built (seconds with cameras): an early SIGTERM stops cleanly
    backend = batched_backend(cfg)
    if backend:
        from robot_rl.sim.batched import make_batched_env

        if cfg.hil.name != "none":
            raise SystemExit("hil needs the per-env actor loop: drop actor.batched_backend")
        batched = make_batched_env(cfg.env, envs_per_actor(cfg), seed=env_seed(cfg.env.seed, cfg.actor.actor_id, 0),
                                   backend=backend)
        envs = [batched]
    else:
        envs = make_envs(cfg, cfg.actor.actor_id)
    obs_spec, action_spec = envs[0].obs_spec, envs[0].action_spec
    run_dir = Path(cfg.run_dir)
    save_resolved(cfg, run_dir / f"config_{cfg.actor.actor_id}.yaml")
    spill = run_dir / "spill" / cfg.actor.actor_id
    transport = ZmqActorClient(cfg.transport, cfg.actor.actor_id, obs_spec, action_spec,
                               spec_hash(obs_spec, action_spec), config_hash(cfg), spill_dir=spill,
                               actor_key_name=args.key_name)
    _stop_when_learner_finishes(transport, stop, cfg.actor.actor_id)
    if backend:
        from robot_rl.batched_actor import BatchedActor

        actor = BatchedActor(cfg, transport, envs[0])
    else:
        actor = Actor(cfg, transport, envs=envs)
    try:
        result = actor.run(stop=stop)
        progress = transport.learner_progress() or {}
        if progress.get("draining") and not _wait_committed(transport, timeout_s=30.0):
            log.warning("actor %s: the learner did not commit every chunk; the rest stays in %s", cfg.actor.actor_id,
                        spill)
    finally:
        transport.close(drain_s=5.0)
        for env in envs:
            env.close()
    _ignore_stop_signals()
    log.info("actor %s finished: %s", cfg.actor.actor_id, {k: round(v, 3) for k, v in result.items()})
    return 0


def cmd_keys(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.transport.keys import make_keys

    root = make_keys(args.directory, tuple(args.actors))
    print(f"CurveZMQ keys in {root}:\n"
          f"  learner machine: {root}/learner.key_secret + {root}/authorized/  (transport.keys_dir={root})\n"
          f"  each robot PC:   {root}/learner.key + {root}/actors/<name>.key_secret "
          f"(robot-rl actor transport.keys_dir=DIR --key-name <name>)")
    return 0


def cmd_config(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from robot_rl.config import to_dict

    print(OmegaConf.to_yaml(OmegaConf.create(to_dict(_config(args, overrides)))))
    return 0


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.train import train

    return train(_config(args, overrides))


def cmd_demos(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.demos import generate_demos

    overrides, extra = split_extra(overrides, DEMOS_ARGS)
    if extra.get("teleop"):
        from robot_rl.hardware.teleop.record import cmd_teleop_demos

        return cmd_teleop_demos(args, overrides, extra)
    cfg = _config(args, overrides)
    out = extra.get("out") or str(Path(cfg.run_dir) / "demos")
    stats = generate_demos(cfg, _int_arg(extra, "n", 20), out)
    print(f"wrote {stats['episodes']} episodes ({stats['successes']} successful) to {out}")
    return 0


def _int_arg(extra: dict[str, str], key: str, default: int) -> int:
    try:
        return int(extra.get(key, default))
    except ValueError:
        raise UsageError(f"{key}={extra[key]}: {key} must be an integer") from None


DEMOS_ARGS = ("n", "out", "teleop", "keep_failures")
"""``robot-rl demos``' own ``key=value`` arguments (the rest are config overrides)."""
EVAL_ARGS = ("checkpoint", "episodes", "video", "video_episodes", "starts", "json")
"""``robot-rl eval``'s own ``key=value`` arguments (the rest are config overrides)."""


def cmd_eval(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.evaluate import describe_failures, evaluate_checkpoint

    overrides, extra = split_extra(overrides, EVAL_ARGS)
    if "checkpoint" not in extra:
        raise UsageError("robot-rl eval needs checkpoint=PATH (a run_dir or a checkpoints/ckpt-* directory)")
    result = evaluate_checkpoint(extra["checkpoint"], _int_arg(extra, "episodes", 20), extra.get("video"),
                                 list(overrides), video_episodes=_int_arg(extra, "video_episodes", 3),
                                 starts_map=extra.get("starts"))
    print(f"success rate {result['success_rate']:.3f} over {result['episodes']} episodes "
          f"(mean return {result['mean_return']:.3f})" + (f"; video {result['video']}" if result.get("video")
                                                           else ""))
    failures = describe_failures(result)
    if failures:
        print(failures)
    nearest = result.get("starts", {}).get("nearest_demo_distance")
    if nearest and nearest["failure_median"] is not None:
        print(f"start distance to the nearest demo start (median, in start-spread units): failures "
              f"{nearest['failure_median']:.2f}, successes "
              + (f"{nearest['success_median']:.2f}" if nearest["success_median"] is not None else "-")
              + (f"; map {result['starts_map']}" if result.get("starts_map") else ""))
    elif result.get("starts_map"):
        print(f"start map {result['starts_map']}")
    if "json" in extra:
        Path(extra["json"]).parent.mkdir(parents=True, exist_ok=True)
        Path(extra["json"]).write_text(json.dumps(result, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-rl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks for configuration and usage errors (also HYDRA_FULL_ERROR=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"train": "whole loop on this machine: learner + actor processes over ZeroMQ",
             "learner": "run the learner (binds transport.bind:transport.transitions_port)",
             "actor": "run one actor (connects to transport.host)",
             "demos": "record demonstrations: n=20 out=DIR (scripted expert), or by hand with "
                      "teleop=keyboard|spacemouse|gamepad",
             "eval": "evaluate a checkpoint: checkpoint=PATH episodes=20 video=out.mp4 video_episodes=3 "
                     "starts=map.png (where it fails, against the demo starts) json=out.json",
             "config": "print the resolved config"}
    for name, help_text in helps.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("overrides", nargs="*", help=f"hydra overrides, e.g. {OVERRIDE_EXAMPLES[name]}")
        p.add_argument("--config", help="start from a resolved config file (run_dir/config.yaml)")
        if name == "actor":
            p.add_argument("--key-name", default="actor", help="which actors/<name>.key_secret to use")
    keys = sub.add_parser("keys", help="make CurveZMQ keys", description=cmd_keys.__doc__)
    keys.add_argument("directory")
    keys.add_argument("--actors", nargs="+", default=["actor"], help="one keypair per actor machine")
    for module_name in FEATURE_COMMANDS:
        # Each feature package owns its subcommands: ``register(sub)`` adds parsers whose defaults carry
        # ``func(args, overrides) -> int``. Those modules import torch/mujoco lazily, inside ``func``.
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from robot_rl.run_log import setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("HYDRA_FULL_ERROR") == "1"
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless: render offscreen (before mujoco is imported)
    setup_logging()
    parser = build_parser()
    try:
        return _dispatch(parser, argv)
    except UsageError as exc:
        if debug:
            raise
        print(f"robot-rl: error: {exc}\n(--debug shows the traceback)", file=sys.stderr)
        return 2


def _dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    # Overrides may come before and after options (``actor a=1 --key-name r b=2``): argparse leaves the
    # later ones unparsed, so take back anything shaped like ``key=value``.
    args, rest = parser.parse_known_args(argv)
    stray = [r for r in rest if "=" not in r or r.startswith("-")]
    if stray or (rest and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    if hasattr(args, "func"):
        return args.func(args, getattr(args, "overrides", []))
    handlers = {"train": cmd_train, "learner": cmd_learner, "actor": cmd_actor, "keys": cmd_keys,
                "demos": cmd_demos, "eval": cmd_eval, "config": cmd_config}
    return handlers[args.command](args, getattr(args, "overrides", []))


if __name__ == "__main__":
    sys.exit(main())
