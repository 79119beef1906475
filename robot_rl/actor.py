"""The actor loop: step env(s) at a fixed control rate, act with the latest policy copy, stream transitions.

Read top to bottom: build envs + policy + transport + episode store; then per step: maybe swap weights (only
between steps/episodes, never inside an action chunk), act (batched over envs), step each env, hand each
transition to the transport (returns immediately), and at episode end write the episode to the local store
(the actor never loses data, whatever the network does) and flush the partial chunk.
"""
from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from robot_rl.env import RobotEnv
from robot_rl.episode_store import EpisodeStore
from robot_rl.registry import ENVS, make_policy
from robot_rl.specs import spec_hash
from robot_rl.transport.base import ActorTransport
from robot_rl.types import Episode, Transition

log = logging.getLogger("robot_rl.actor")


class FixedRate:
    """Sleep until the next tick of a fixed-rate clock; counts overruns instead of drifting."""

    def __init__(self, hz: float) -> None:
        self.period = 1.0 / hz
        self.next_tick = time.perf_counter() + self.period
        self.overruns = 0

    def sleep(self) -> None:
        now = time.perf_counter()
        if now < self.next_tick:
            time.sleep(self.next_tick - now)
            self.next_tick += self.period
        else:
            self.overruns += 1
            self.next_tick = now + self.period  # late: restart the clock rather than burst to catch up


@dataclass
class ActorStats:
    steps: int = 0
    episodes: int = 0
    successes: int = 0
    weights_version: int = -1
    non_finite_actions: int = 0
    """Control ticks skipped because the policy produced NaN/inf (nothing sent; the env's watchdog holds)."""
    weights_incarnation: str = ""
    """Run id of the learner whose weights the policy holds (versions are ordered only within one run)."""
    loop_ms: list[float] = field(default_factory=list)
    recent_returns: list[float] = field(default_factory=list)
    recent_success: list[bool] = field(default_factory=list)

    def summary(self, transport: ActorTransport, elapsed_s: float) -> dict[str, float]:
        loop = np.asarray(self.loop_ms[-2000:] or [0.0])
        return {"steps": float(self.steps), "episodes": float(self.episodes),
                "steps_per_s": self.steps / max(elapsed_s, 1e-9),
                "loop_ms_p50": float(np.percentile(loop, 50)), "loop_ms_p99": float(np.percentile(loop, 99)),
                "success_rate_recent": float(np.mean(self.recent_success[-20:])) if self.recent_success else 0.0,
                "return_recent": float(np.mean(self.recent_returns[-20:])) if self.recent_returns else 0.0,
                "weights_version": float(self.weights_version),
                "non_finite_actions": float(self.non_finite_actions),
                **{f"transport/{k}": v for k, v in transport.stats().items()}}


    def record_episode(self, success: bool, episode_return: float) -> None:
        self.episodes += 1
        self.successes += int(success)
        self.recent_success.append(success)
        self.recent_returns.append(episode_return)


class UtdPacer:
    """Sim pacing for actor loops: hold while the learner's update-to-data budget is used up.

    The learner sends ``env_steps`` (transitions it has) and ``allowed_env_steps`` (what its updates allow) with
    its weights (see ``Learner.progress``); between two such messages the actor counts its own steps on top."""

    def __init__(self, transport: ActorTransport) -> None:
        self.transport = transport
        self._progress_key: tuple[int, int] | None = None
        self._steps_since_progress = 0

    def wait(self, stop: Any, steps: int) -> None:
        """Return once ``steps`` more env steps fit the budget (or ``stop`` is set)."""
        while True:
            progress = self.transport.learner_progress()
            if progress is None:  # no budget known yet: wait for the learner's first weights message
                if stop is not None and stop.is_set():
                    return
                time.sleep(0.01)
                continue
            key = (progress.get("env_steps", 0), progress.get("allowed_env_steps", 0))
            if key != self._progress_key:
                self._progress_key, self._steps_since_progress = key, 0
            if key[0] + self._steps_since_progress < key[1] or (stop is not None and stop.is_set()):
                self._steps_since_progress += steps
                return
            time.sleep(0.002)


def env_seed(base: int, actor_id: str, index: int) -> int:
    """Distinct, reproducible seeds per (actor, env) without a global actor numbering."""
    return (base + 1000 * index + zlib.crc32(actor_id.encode()) % 1_000_000) % 2**31


def envs_per_actor(cfg: Any) -> int:
    """``num_envs`` (the ``robot-rl train`` shorthand) when set, else ``actor.num_envs``."""
    return int(getattr(cfg, "num_envs", 0) or cfg.actor.num_envs)


def batched_backend(cfg: Any) -> str:
    """Batched-env backend of this actor: ``actor.batched_backend``, or ``warp`` for ``env=pick_cube_warp``
    (a GPU-batched twin only exists as a batch); empty = the per-env loop."""
    if cfg.actor.batched_backend:
        return cfg.actor.batched_backend
    return "warp" if cfg.env.name == "pick_cube_warp" else ""


def make_envs(cfg: Any, actor_id: str) -> list[RobotEnv]:
    return [ENVS.make(cfg.env.name, cfg.env, seed=env_seed(cfg.env.seed, actor_id, j))
            for j in range(envs_per_actor(cfg))]


def load_weights(policy: torch.nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Copy published weights into the actor's policy (strict: a missing or extra name is an error)."""
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}
    policy.load_state_dict(state, strict=True)


def inference_policy(policy: Any, backend: str) -> Any:
    """``policy`` as the actor runs it: itself (``torch``) or through ONNX Runtime (``onnxruntime``, with as many
    threads as torch has here), which acts, resets and loads weights the same way. ``auto``: ONNX Runtime where
    the policy exports and onnxruntime is installed, else torch, saying which and why."""
    if backend not in ("torch", "onnxruntime", "auto"):
        raise ValueError(f"actor.inference must be torch, onnxruntime or auto, got {backend!r}")
    if backend == "torch":
        return policy
    if backend == "auto":
        if not getattr(policy, "onnx_exportable", False):
            log.info("actor.inference=auto: %s runs in torch (it does not export to ONNX)", type(policy).__name__)
            return policy
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("actor.inference=auto: onnxruntime is not installed, the policy runs in torch "
                        "(pip install 'robot_rl[onnx]' for ~4x faster inference between control ticks)")
            return policy
    from robot_rl.policies.onnx_runtime import OnnxRuntimePolicy

    runner = OnnxRuntimePolicy(policy, threads=torch.get_num_threads())
    log.info("actor.inference=%s: the policy runs in ONNX Runtime", backend)
    return runner


class Actor:
    def __init__(self, cfg: Any, transport: ActorTransport, envs: Sequence[RobotEnv] | None = None,
                 policy: Any = None, store_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.actor_id = cfg.actor.actor_id
        self.envs = list(envs) if envs is not None else make_envs(cfg, self.actor_id)
        self.obs_spec, self.action_spec = self.envs[0].obs_spec, self.envs[0].action_spec
        self.spec_hash = spec_hash(self.obs_spec, self.action_spec)
        self.policy = policy if policy is not None else make_policy(cfg, self.obs_spec, self.action_spec)
        self.policy.eval()
        self.policy = inference_policy(self.policy, getattr(cfg.actor, "inference", "torch"))
        # A robot env with a slack hook (RosRobotEnv) gets new weights after a command is out, not between an
        # observation and its inference (a new ONNX Runtime session takes ~12 ms; torch's copy ~1 ms).
        self._swap_in_slack = len(self.envs) == 1 and isinstance(getattr(self.envs[0], "slack_tasks", None), list)
        if self._swap_in_slack:
            self.envs[0].slack_tasks.append(self._maybe_swap_weights)
        self.transport = transport
        directory = store_dir or cfg.actor.store_dir or Path(cfg.run_dir) / "episodes" / self.actor_id
        self.store = EpisodeStore(directory)
        self.rng = np.random.default_rng(env_seed(cfg.env.seed, self.actor_id, 999))
        self.stats = ActorStats()
        self.pacer = UtdPacer(transport)
        self._last_bad_actions_log = -np.inf
        self._held_since: float | None = None  # monotonic start of a backpressure hold
        self.hil = None  # human in the loop (hil=keyboard|spacemouse|gamepad|virtual): robot_rl.hardware.teleop
        if getattr(cfg, "hil", None) is not None and cfg.hil.name != "none":
            from robot_rl.hardware.teleop.session import HilSession

            self.hil = HilSession(cfg, self.envs, self.action_spec, self.spec_hash, self.actor_id, self.rng)
        from robot_rl.actor_status import StatusReporter

        self.status = StatusReporter(transport, self.hil.hil.name if self.hil is not None else "none")
        """Fleet-table figures for the dashboard, sent with the transport's heartbeats."""

    def _apply_controls(self) -> None:
        """Operator commands from the dashboard, relayed by the learner (wire ``Control``)."""
        for control in self.transport.poll_controls():
            log.info("actor %s: dashboard %s (issued %.2fs ago)", self.actor_id, control.action,
                     time.time() - control.issued_at)
            if control.action in ("pause", "resume"):
                self.status.paused = control.action == "pause"
            elif self.hil is None:
                log.warning("actor %s: %s ignored: this actor runs without an operator (hil=none)", self.actor_id,
                            control.action)
            else:  # the teleop keys' path: labels the current episode of every env at the next step
                self.hil.push_events(control.action.removeprefix("label_"))

    def _reset(self, j: int, episode_id: int) -> dict[str, np.ndarray]:
        seed = env_seed(self.cfg.env.seed, self.actor_id, j) + episode_id
        if self.hil is not None:  # the graded protocol picks the start (fresh, a failure state, a demo's)
            return self.hil.reset(j, self.envs[j], seed)
        return self.envs[j].reset(seed=seed)

    def _maybe_swap_weights(self) -> None:
        weights = self.transport.poll_weights()
        if weights is not None:
            load_weights(self.policy, weights.arrays)
            self.stats.weights_version = weights.version
            self.stats.weights_incarnation = weights.incarnation

    def _hold_for_backpressure(self) -> bool:
        """True (after a short wait) while the transport cannot hold more uncommitted data: the robot is not
        stepped (it holds) instead of data being dropped. Logged once when it starts and once when it ends."""
        reason = self.transport.backpressure()
        if reason is None:
            if self._held_since is not None:
                log.warning("actor %s: resuming after %.1fs held by backpressure", self.actor_id,
                            time.monotonic() - self._held_since)
                self._held_since = None
            return False
        if self._held_since is None:
            self._held_since = time.monotonic()
            log.error("actor %s: holding the robot: %s", self.actor_id, reason)
        time.sleep(0.05)
        return True

    def _actions(self, obs: list[dict[str, np.ndarray]]) -> np.ndarray | None:
        """(N, A) float32 actions within bounds; uniform random during the initial exploration phase. None when the
        policy produced NaN/inf (counted and logged at most every 10 s): no env may be stepped with them."""
        n = len(obs)
        if self.stats.steps < self.cfg.actor.random_steps:
            low, high = self.action_spec.low_array(), self.action_spec.high_array()
            return self.rng.uniform(low, high, (n, *low.shape)).astype(np.float32)
        batched = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        actions = self.policy.act(batched, deterministic=False)
        if not np.isfinite(actions).all():
            self.stats.non_finite_actions += 1
            now = time.monotonic()
            if now - self._last_bad_actions_log > 10.0:
                self._last_bad_actions_log = now
                log.error("actor %s: policy produced non-finite actions (%d ticks so far), e.g. %s; holding and "
                          "retrying with the next weights", self.actor_id, self.stats.non_finite_actions, actions[0])
            return None
        return self.action_spec.clip(actions)

    def run(self, max_steps: int | None = None, stop: Any = None) -> dict[str, float]:
        """Run until ``max_steps`` env steps (summed over envs), ``stop.is_set()``, or forever."""
        max_steps = max_steps if max_steps is not None else self.cfg.actor.max_env_steps
        if self.cfg.actor.wait_for_weights:
            while self.transport.poll_weights() is None and not (stop is not None and stop.is_set()):
                time.sleep(0.05)
        episode_ids = [self.store.reserve_episode_id(self.actor_id) for _ in self.envs]
        obs = [self._reset(j, episode_ids[j]) for j in range(len(self.envs))]
        buffers: list[list[Transition]] = [[] for _ in self.envs]
        rate = FixedRate(self.envs[0].control_hz) if self.cfg.actor.realtime else None
        start = last_log = time.perf_counter()
        self.policy.reset()
        while not max_steps or self.stats.steps < max_steps:
            if stop is not None and stop.is_set():
                break
            self._apply_controls()
            self.status.maybe_report(self.envs, self.stats.weights_version)
            if self.status.paused:  # paused from the dashboard: step nothing, keep reporting
                self.status.idle()
                time.sleep(0.05)
                continue
            if rate is None and self.cfg.actor.pace:
                self.pacer.wait(stop, len(self.envs))
            if self._hold_for_backpressure():
                continue
            t0 = time.perf_counter()
            if not self._swap_in_slack:
                self._maybe_swap_weights()
            actions = self._actions(obs)
            if actions is None:
                # Hold, don't end the node: no env is stepped (a robot's watchdog holds it), the episodes keep
                # their last observation (no gap in the stored frames) and the next weights may fix the policy.
                period = 1.0 / self.envs[0].control_hz if self.envs[0].control_hz > 0 else 0.1
                stop.wait(period) if stop is not None else time.sleep(period)
                if self._swap_in_slack:  # no command goes out while holding: take the next weights here
                    self._maybe_swap_weights()
                continue
            policy_actions, intervened = actions, [False] * len(self.envs)
            if self.hil is not None:  # the operator's command replaces the policy's where they drive
                decided = self.hil.arbitrate(obs, policy_actions)
                if decided is None:  # robot held: device lost or silent, or paused (the operator was told)
                    self.status.hold(self.hil.hold_reason())
                    continue
                actions, intervened = decided
            self.status.step(intervened)
            for j, env in enumerate(self.envs):
                result = env.step(actions[j])
                tr = Transition(obs=obs[j], action=actions[j], reward=result.reward, next_obs=result.obs,
                                terminated=result.terminated, truncated=result.truncated, actor_id=self.actor_id,
                                episode_id=episode_ids[j], step=len(buffers[j]), intervened=intervened[j],
                                policy_action=policy_actions[j])
                success = result.success
                if self.hil is not None:  # success/failure/reset presses label this step
                    tr, success = self.hil.label(j, tr, success)
                self.transport.send(tr)
                buffers[j].append(tr)
                obs[j] = result.obs
                self.stats.steps += 1
                if tr.terminated or tr.truncated:
                    self._finish_episode(buffers[j], success, env, index=j)
                    buffers[j] = []
                    episode_ids[j] = self.store.reserve_episode_id(self.actor_id)
                    obs[j] = self._reset(j, episode_ids[j])
                    self.policy.reset()
            self.stats.loop_ms.append((time.perf_counter() - t0) * 1e3)
            if len(self.stats.loop_ms) > 10_000:
                del self.stats.loop_ms[:5_000]
            now = time.perf_counter()
            if now - last_log > 10.0:
                last_log = now
                s = self.stats.summary(self.transport, now - start)
                log.info("actor %s: %d steps (%.0f/s), %d episodes, success(20)=%.2f, loop p99 %.1f ms, "
                         "weights v%d, pending %d", self.actor_id, s["steps"], s["steps_per_s"], s["episodes"],
                         s["success_rate_recent"], s["loop_ms_p99"], s["weights_version"],
                         s["transport/pending_chunks"] if "transport/pending_chunks" in s else 0)
            if rate is not None:
                rate.sleep()
        # Episodes cut short by the stop are still real experience: store them, marked truncated-by-stop.
        for j, buf in enumerate(buffers):
            if buf:
                self._finish_episode(buf, False, self.envs[j], interrupted=True, index=j)
        self.transport.flush()
        summary = self.stats.summary(self.transport, time.perf_counter() - start)
        if self.hil is not None:
            summary.update(self.hil.summary())
            self.hil.close()
        return summary

    def _finish_episode(self, transitions: list[Transition], success: bool, env: RobotEnv,
                        interrupted: bool = False, index: int = 0) -> None:
        meta = {"interrupted": interrupted, "weights_version": self.stats.weights_version,
                "weights_incarnation": self.stats.weights_incarnation}
        if self.hil is not None:  # label, its source and the intervention rate (reward models read these)
            meta.update(self.hil.episode_meta(index, success, interrupted, transitions[0].episode_id))
        episode = Episode.from_transitions(transitions, self.spec_hash, success=success,
                                           task=getattr(env, "task", ""), meta=meta)
        self.store.write(episode)
        self.transport.flush()
        self.stats.record_episode(success, float(episode.reward.sum()))
        self.status.episode(int(episode.intervened.sum()), len(transitions), success)
