"""The actor's human-in-the-loop session: operator(s), graded protocol, labels, per-episode record.

The actor calls four hooks (``robot_rl/actor.py``):

- :meth:`HilSession.reset` starts env ``j``'s episode as the protocol says (fresh, a failure state, a demo);
- :meth:`HilSession.arbitrate` gets the policy's actions and returns what is executed (the operator's
  where they drive, marked intervened; the policy's proposal stays in ``policy_action``), or ``None`` when
  the robot must be held (device lost or silent, operator paused: the operator has been told);
- :meth:`HilSession.label` applies the operator's success/failure/reset presses to the step just taken:
  success -> ``reward = success_reward`` and ``terminated``; failure/reset -> ``truncated``;
- :meth:`HilSession.episode_meta` returns the episode's label and intervention figures for ``Episode.meta``
  and appends them to ``<run_dir>/hil/<actor_id>.jsonl`` (the per-episode intervention-rate log).

Labels land in ``Episode.success`` and ``Episode.meta["label"]`` (``success``/``failure``/``""``), with
``meta["label_source"]`` (``operator``, ``virtual_operator`` or ``env``): what the success classifier
trains on.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robot_rl.hardware.teleop.device import OperatorNotifier
from robot_rl.hardware.teleop.operator import DeviceOperator, make_device
from robot_rl.hardware.teleop.protocol import DEMO_REPLAY, GradedProtocol
from robot_rl.hardware.teleop.virtual import VirtualOperator
from robot_rl.types import Transition

log = logging.getLogger("robot_rl.teleop")


def open_device_and_window(hil: Any, env: Any, device: Any = None) -> tuple[Any, Any]:
    """The started teleop device of a ``hil`` config (``device`` when given) and the twin's live window (or
    None). A keyboard on the terminal with a window open reads the window's keys too, through one pipe."""
    key_fd = None
    if device is None and hil.name == "keyboard" and hil.device.path in ("", "stdin"):
        from robot_rl.hardware.teleop.window import display_available

        if hil.window != "off" and display_available() and hasattr(env, "model"):
            read_fd, key_fd = os.pipe()  # window keys -> the keyboard parser
            from robot_rl.hardware.teleop.keyboard import Keyboard

            device = Keyboard("", fd=read_fd, keys=dict(hil.device.keys), buttons=dict(hil.device.buttons),
                              key_timeout_s=hil.device.key_timeout_s)
    device = (device if device is not None else make_device(hil)).start()
    from robot_rl.hardware.teleop.window import open_window

    return device, open_window(hil.window, env, key_fd)


class _EpisodeRecord:
    def __init__(self) -> None:
        self.steps = 0
        self.intervention_steps = 0
        self.takeovers = 0
        self.label = ""
        self.label_source = ""
        self.events: list[str] = []
        self.active = False
        self.held_s = 0.0


class HilSession:
    def __init__(self, cfg: Any, envs: Sequence[Any], action_spec: Any, spec_hash: str, actor_id: str,
                 rng: np.random.Generator, notifier: OperatorNotifier | None = None, device: Any = None) -> None:
        hil = cfg.hil
        self.cfg, self.hil, self.envs, self.actor_id = cfg, hil, list(envs), actor_id
        self.notifier = notifier or OperatorNotifier()
        self.window = None
        if hil.name == "virtual":
            self.operators: list[Any] = [VirtualOperator(env, hil.virtual, action_spec, rng) for env in self.envs]
            self.label_source = "virtual_operator"
        else:
            if len(self.envs) != 1:
                raise ValueError(f"hil={hil.name}: one person drives one robot; set actor.num_envs=1")
            device, self.window = open_device_and_window(hil, self.envs[0], device)
            self.operators = [DeviceOperator(device, hil.device, action_spec, self.notifier)]
            self.label_source = "operator"
            self.notifier.tell(f"{hil.name} ready: " + ", ".join(f"{r}={b}" for r, b in hil.device.buttons.items()),
                               alarm=False)
        demo_dir = hil.protocol.demos or cfg.learner.demos or str(Path(cfg.run_dir) / "demos")
        self.protocol = GradedProtocol(hil.protocol, demo_dir, rng, spec_hash, len(self.envs))
        self.records = [_EpisodeRecord() for _ in self.envs]
        self.last_action: list[np.ndarray | None] = [None] * len(self.envs)
        self.log_path = Path(cfg.run_dir) / "hil" / f"{actor_id}.jsonl"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.totals = {"episodes": 0, "steps": 0, "intervention_steps": 0}

    # ------------------------------------------------------------------ actor hooks
    def reset(self, j: int, env: Any, seed: int) -> dict[str, np.ndarray]:
        self.records[j] = _EpisodeRecord()
        self.operators[j].reset()
        self.last_action[j] = None
        return self.protocol.start_episode(j, env, seed)

    def arbitrate(self, obs: Sequence[dict[str, np.ndarray]], policy_actions: np.ndarray
                  ) -> tuple[np.ndarray, list[bool]] | None:
        actions = np.array(policy_actions, np.float32, copy=True)
        intervened = [False] * len(obs)
        for j, o in enumerate(obs):
            rec = self.records[j]
            replayed = self.protocol.replay_action(j) if self.protocol.mode[j] == DEMO_REPLAY else None
            if replayed is not None:
                actions[j], intervened[j] = replayed, True
                continue
            cmd = self.operators[j].command(o, policy_actions[j], self.last_action[j])
            rec.events += cmd.events
            if cmd.hold:
                t0 = time.monotonic()
                time.sleep(self.hil.hold_poll_s)  # nothing is stepped; the operator was told why
                rec.held_s += time.monotonic() - t0
                return None
            if cmd.active and self.hil.protocol.guided:
                if not rec.active:
                    rec.takeovers += 1
                    self.protocol.remember_failure(self.envs[j])  # where the policy needed help
                actions[j], intervened[j] = cmd.action, True
            rec.active = bool(cmd.active and self.hil.protocol.guided)
        for j in range(len(obs)):
            self.last_action[j] = actions[j]
        return actions, intervened

    def label(self, j: int, tr: Transition, success: bool) -> tuple[Transition, bool]:
        """Apply the operator's presses to the step just taken; returns the (new) transition and success."""
        rec = self.records[j]
        rec.steps += 1
        rec.intervention_steps += int(tr.intervened)
        events, rec.events = rec.events, []
        if "success" in events:
            tr = replace(tr, reward=float(self.hil.success_reward), terminated=True, truncated=False)
            success, rec.label, rec.label_source = True, "success", self.label_source
        elif "failure" in events and not tr.terminated:
            tr = replace(tr, truncated=True)
            success, rec.label, rec.label_source = False, "failure", self.label_source
        elif "reset" in events and not tr.terminated:
            tr = replace(tr, truncated=True)
        elif self.protocol.replay_finished(j) and not (tr.terminated or tr.truncated):
            tr = replace(tr, truncated=True)  # the recorded actions ran out
        if (tr.terminated or tr.truncated) and not rec.label:
            if success:
                rec.label, rec.label_source = "success", "env"
            elif self.hil.name == "virtual" and self.hil.virtual.label_failure and tr.truncated:
                rec.label, rec.label_source = "failure", "virtual_operator"
        if self.window is not None:
            self.window.sync(self.notifier.overlay)
        return tr, success

    def push_events(self, *events: str) -> None:
        """Label/reset presses from elsewhere than the device (the dashboard's buttons): they label every env's
        current episode at its next step, exactly like the device's keys."""
        for event in events:
            if event not in ("success", "failure", "reset"):
                raise ValueError(f"unknown operator event {event!r} (success, failure, reset)")
            for rec in self.records:
                rec.events.append(event)

    def hold_reason(self) -> str:
        """Why the robot is held now ("" when it is not, or the operator cannot hold it: the virtual one)."""
        return next((op.hold_reason for op in self.operators if getattr(op, "hold_reason", "")), "")

    def episode_meta(self, j: int, success: bool, interrupted: bool, episode_id: int) -> dict[str, Any]:
        rec = self.records[j]
        meta = {"hil": self.hil.name, "protocol_mode": self.protocol.mode[j], "label": rec.label,
                "label_source": rec.label_source, "intervention_steps": rec.intervention_steps,
                "intervention_rate": rec.intervention_steps / max(rec.steps, 1), "takeovers": rec.takeovers,
                "held_s": round(rec.held_s, 3)}
        self.totals["episodes"] += 1
        self.totals["steps"] += rec.steps
        self.totals["intervention_steps"] += rec.intervention_steps
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"actor_id": self.actor_id, "episode_id": episode_id, "steps": rec.steps,
                                "success": bool(success), "interrupted": interrupted, **meta,
                                "time": time.time()}) + "\n")
        log.info("episode %d (%s): %d steps, intervention rate %.2f, label %s, success %s", episode_id,
                 meta["protocol_mode"], rec.steps, meta["intervention_rate"], rec.label or "-", success)
        return meta

    def summary(self) -> dict[str, float]:
        t = self.totals
        return {"hil/episodes": float(t["episodes"]),
                "hil/intervention_rate": t["intervention_steps"] / max(t["steps"], 1),
                "hil/intervention_steps": float(t["intervention_steps"])}

    def close(self) -> None:
        for op in self.operators:
            op.close()
        if self.window is not None:
            self.window.close()
