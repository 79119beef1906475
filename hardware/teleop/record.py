"""Demonstrations by hand for any env: ``robot-rl demos teleop=keyboard|spacemouse|gamepad n=20 out=DIR``.

The same device layer as human-in-the-loop training (:mod:`robot_rl.hardware.teleop`): the ``hil=<device>``
preset says how the device is read and mapped (``hil.device.path``, ``keys``, ``buttons``...), and a
:class:`DeviceOperator` turns each snapshot into an action: the device's three axes drive the first three action
dimensions that are not the gripper, the ``grip`` button toggles the dimension named ``grip...``
(``env.action_names`` for ``env=gym``), any other dimension stays 0. Here the person drives every step (no
intervene button). The env is stepped at its control rate (``env.control_hz`` for ``env=gym``).

Labels, by key: ``success`` ends the episode as a success (reward ``hil.success_reward``, terminated, as in HIL),
``failure`` ends it as a failure, ``reset`` throws it away and starts again; an episode the env ends itself is
labelled by the env's own success (``env.success_key``...). Successful episodes are written to the episode
store (``Episode.meta``: ``source=teleop``, the device, the label and who gave it); failures too with
``keep_failures``. ``robot-rl train learner.demos=DIR`` then loads them into the demo buffer.

Seeing the env: the MuJoCo twins open their live window where a display exists (``hil.window``); a Gymnasium
env shows its own window with ``+env.kwargs.render_mode=human``.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robot_rl.hardware.teleop.device import OperatorNotifier
from robot_rl.hardware.teleop.operator import DeviceOperator
from robot_rl.hardware.teleop.session import open_device_and_window

log = logging.getLogger("robot_rl.teleop")

DEVICES = ("keyboard", "spacemouse", "gamepad")


def _drive_episode(env: Any, operator: DeviceOperator, hil: Any, seed: int, actor_id: str, episode_id: int,
                   stop: threading.Event, window: Any, notifier: OperatorNotifier) -> tuple[list, bool, str, str]:
    """One episode driven by the person. Returns (transitions, success, label, label source); label
    ``reset`` means thrown away, ``stopped`` means interrupted."""
    from robot_rl.actor import FixedRate
    from robot_rl.types import Transition

    obs = env.reset(seed=seed)
    operator.reset()
    neutral = np.zeros(env.action_spec.dim, np.float32)  # unused: the person always drives
    last_action: np.ndarray | None = None
    transitions: list[Transition] = []
    rate = FixedRate(env.control_hz)
    while not stop.is_set():
        cmd = operator.command(obs, neutral, last_action)
        if cmd.hold:  # device lost or paused: step nothing (the person was told why)
            time.sleep(hil.hold_poll_s)
            continue
        action = cmd.action
        result = env.step(action)
        tr = Transition(obs, action, result.reward, result.obs, result.terminated, result.truncated, actor_id,
                        episode_id, len(transitions), intervened=True)
        success, label, source = result.success, "", ""
        if "reset" in cmd.events:
            return [], False, "reset", "operator"
        if "success" in cmd.events:
            tr = replace(tr, reward=float(hil.success_reward), terminated=True, truncated=False)
            success, label, source = True, "success", "operator"
        elif "failure" in cmd.events:
            tr = replace(tr, truncated=not tr.terminated)
            success, label, source = False, "failure", "operator"
        transitions.append(tr)
        obs, last_action = result.obs, action
        if window is not None:
            window.sync(notifier.overlay)
        if tr.terminated or tr.truncated:
            if not label:
                label, source = ("success" if success else "failure"), "env"
            return transitions, success, label, source
        rate.sleep()
    return transitions, False, "stopped", ""


def record_teleop_demos(cfg: Any, n: int, out: str | Path, device: Any = None,
                        notifier: OperatorNotifier | None = None, keep_failures: bool = False,
                        stop: threading.Event | None = None) -> dict[str, int]:
    """Record ``n`` successful episodes (with ``keep_failures`` every finished one) driven through ``cfg.hil``'s
    device into the episode store ``out`` (appending; ids continue). ``device`` replaces the configured one
    (tests pass a keyboard on a pipe or pseudo-terminal). Stops early when ``stop`` is set; what was saved stays."""
    from robot_rl.actor import env_seed
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.registry import ENVS
    from robot_rl.specs import spec_hash
    from robot_rl.types import Episode

    hil = cfg.hil
    if hil.name not in DEVICES:
        raise ValueError(f"teleop demos need a device: hil={hil.name!r} is not one of {DEVICES}")
    stop = stop if stop is not None else threading.Event()
    notifier = notifier or OperatorNotifier()
    env = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
    store = EpisodeStore(out)
    sh = spec_hash(env.obs_spec, env.action_spec)
    actor_id = f"teleop-{hil.name}"
    stats = {"episodes": 0, "successes": 0, "attempts": 0, "thrown_away": 0}
    device, window = open_device_and_window(hil, env, device)
    operator = DeviceOperator(device, hil.device, env.action_spec, notifier, always_active=True)
    buttons = hil.device.buttons
    keys = ", ".join(f"{k}={v}" for k, v in dict(hil.device.keys).items())
    notifier.tell(f"{hil.name} ready to record {n} demos of {env.task!r} into {out}" + (f"; motion {keys}" if keys
                  else "") + f"; grip={buttons.get('grip', '-')}, success={buttons.get('success', '-')}, "
                  f"failure={buttons.get('failure', '-')}, reset={buttons.get('reset', '-')}, "
                  f"pause={buttons.get('pause', '-')}", alarm=False)
    try:
        while stats["episodes"] < n and not stop.is_set():
            episode_id = store.next_episode_id(actor_id)
            notifier.tell(f"episode {stats['episodes'] + 1}/{n}: drive", alarm=False)
            transitions, success, label, source = _drive_episode(
                env, operator, hil, env_seed(cfg.env.seed, actor_id, episode_id + stats["attempts"]), actor_id,
                episode_id, stop, window, notifier)
            stats["attempts"] += 1
            if label in ("reset", "stopped") or not transitions:
                stats["thrown_away"] += 1
                notifier.tell(f"episode thrown away ({label})", alarm=False)
                continue
            stats["successes"] += int(success)
            if success or keep_failures:
                store.write(Episode.from_transitions(
                    transitions, sh, success=success, task=env.task,
                    meta={"source": "teleop", "device": hil.name, "label": label, "label_source": source}))
                stats["episodes"] += 1
                notifier.tell(f"saved {stats['episodes']}/{n} ({label} by {source}, {len(transitions)} steps)",
                              alarm=False)
            else:
                notifier.tell(f"not saved: {label} by {source} ({len(transitions)} steps)", alarm=False)
    except KeyboardInterrupt:
        log.info("interrupted: %d demos saved in %s", stats["episodes"], out)
    finally:
        operator.close()  # gives the terminal back its mode
        if window is not None:
            window.close()
        env.close()
    return stats


def cmd_teleop_demos(args: Any, overrides: Sequence[str], extra: dict[str, str]) -> int:
    """``robot-rl demos teleop=DEVICE [env overrides] n=20 out=DIR [keep_failures=true]``."""
    from robot_rl.config import load_config

    teleop = extra["teleop"]
    if teleop not in DEVICES:
        raise SystemExit(f"teleop={teleop!r}: choose one of {', '.join(DEVICES)}")
    if getattr(args, "config", None):
        raise SystemExit("robot-rl demos teleop=... takes the env as overrides (env=gym env.env_id=...), "
                         "not --config")
    if not any(o.startswith(("hil=", "+hil=")) for o in overrides):
        overrides = [f"hil={teleop}", *overrides]
    cfg = load_config(overrides)
    out = extra.get("out") or str(Path(cfg.run_dir) / "demos")
    stats = record_teleop_demos(cfg, int(extra.get("n", 20)), out,
                                keep_failures=extra.get("keep_failures", "false").lower() in ("1", "true", "yes"))
    print(f"wrote {stats['episodes']} episodes ({stats['successes']} successful, {stats['thrown_away']} thrown "
          f"away) to {out}", flush=True)
    return 0
