"""The actor loop for a batched env (:class:`robot_rl.sim.batched.BatchedEnv`): one policy call and one env call
per step for all ``N`` envs, no per-env Python loop on the simulation or inference path.

Same contract as :class:`robot_rl.actor.Actor` (weights swapped between steps, UTD pacing, every transition to
the transport, every finished episode to the local store), for simulators that step thousands of envs on one
device. The transport and the episode store take one transition at a time, so the only per-row work left is
handing rows (numpy views of the step's tensors, copied once per step) to them.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from robot_rl.actor import ActorStats, UtdPacer, env_seed, load_weights
from robot_rl.episode_store import EpisodeStore
from robot_rl.registry import make_policy
from robot_rl.specs import spec_hash
from robot_rl.transport.base import ActorTransport
from robot_rl.types import Episode, Transition

log = logging.getLogger("robot_rl.batched_actor")


class BatchedActor:
    def __init__(self, cfg: Any, transport: ActorTransport, env: Any, policy: Any = None,
                 store_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        if getattr(cfg.actor, "inference", "torch") != "torch":  # torch tensors on the twin's device, end to end
            raise ValueError(f"actor.inference={cfg.actor.inference} is for the per-env actor (robots); the batched "
                             f"twin (actor.batched_backend={cfg.actor.batched_backend!r}) runs its policy in torch")
        self.actor_id = cfg.actor.actor_id
        self.env = env
        self.num_envs = int(env.num_envs)
        self.obs_spec, self.action_spec = env.obs_spec, env.action_spec
        self.spec_hash = spec_hash(self.obs_spec, self.action_spec)
        self.policy = policy if policy is not None else make_policy(cfg, self.obs_spec, self.action_spec)
        self.policy.eval()
        self.policy_device = next(self.policy.parameters()).device
        self.transport = transport
        directory = store_dir or cfg.actor.store_dir or Path(cfg.run_dir) / "episodes" / self.actor_id
        self.store = EpisodeStore(directory)
        self.generator = torch.Generator(device=env.device).manual_seed(env_seed(cfg.env.seed, self.actor_id, 999))
        self.low = torch.as_tensor(self.action_spec.low, dtype=torch.float32, device=env.device)  # (A,)
        self.high = torch.as_tensor(self.action_spec.high, dtype=torch.float32, device=env.device)  # (A,)
        self.stats = ActorStats()
        self.pacer = UtdPacer(transport)
        from robot_rl.actor_status import StatusReporter

        self.status = StatusReporter(transport, "none")  # fleet figures for the dashboard (no operator here)

    def _apply_controls(self) -> None:
        """Dashboard pause/resume relayed by the learner; labels need an operator, which batched envs have not."""
        for control in self.transport.poll_controls():
            if control.action in ("pause", "resume"):
                log.info("batched actor %s: dashboard %s", self.actor_id, control.action)
                self.status.paused = control.action == "pause"
            else:
                log.warning("batched actor %s: %s ignored: no operator (hil) here", self.actor_id, control.action)

    def _actions(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, A) float32 actions on the env's device; uniform random during the exploration phase."""
        if self.stats.steps < self.cfg.actor.random_steps:
            u = torch.rand((self.num_envs, *self.low.shape), generator=self.generator, device=self.low.device)
            return self.low + u * (self.high - self.low)
        with torch.no_grad():
            out = self.policy.forward_act({k: v.to(self.policy_device) for k, v in obs.items()}, False)
        if out.ndim == 3:  # chunked policy: first action of each chunk
            out = out[:, 0]
        out = out.float().to(self.low.device)
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError("policy produced non-finite actions; refusing to send them")
        return torch.maximum(torch.minimum(out, self.high), self.low)

    def _maybe_swap_weights(self) -> None:
        weights = self.transport.poll_weights()
        if weights is not None:
            load_weights(self.policy, weights.arrays)
            self.policy_device = next(self.policy.parameters()).device
            self.stats.weights_version = weights.version
            self.stats.weights_incarnation = weights.incarnation

    def run(self, max_steps: int | None = None, stop: Any = None) -> dict[str, float]:
        """Run until ``max_steps`` env steps (summed over envs), ``stop.is_set()``, or forever."""
        max_steps = max_steps if max_steps is not None else self.cfg.actor.max_env_steps
        if self.cfg.actor.wait_for_weights:
            while self.transport.poll_weights() is None and not (stop is not None and stop.is_set()):
                time.sleep(0.05)
        n = self.num_envs
        episode_ids = [self.store.reserve_episode_id(self.actor_id) for _ in range(n)]
        buffers: list[list[Transition]] = [[] for _ in range(n)]
        obs = self.env.reset(seed=env_seed(self.cfg.env.seed, self.actor_id, 0))
        start = last_log = time.perf_counter()
        self.policy.reset()
        while not max_steps or self.stats.steps < max_steps:
            if stop is not None and stop.is_set():
                break
            self._apply_controls()
            self.status.maybe_report([self.env], self.stats.weights_version)
            if self.status.paused:
                self.status.idle()
                time.sleep(0.05)
                continue
            if self.cfg.actor.pace:
                self.pacer.wait(stop, n)  # one batched step spends N env steps of budget
            t0 = time.perf_counter()
            self._maybe_swap_weights()
            actions = self._actions(obs)  # (N, A)
            result = self.env.step(actions)
            # One device -> host copy per field per step; rows below are views into these arrays.
            obs_np = {k: v.cpu().numpy() for k, v in obs.items()}  # (N, ...)
            next_np = {k: v.cpu().numpy() for k, v in result.final_obs.items()}  # (N, ...)
            act_np = actions.cpu().numpy()  # (N, A)
            reward, term, trunc, success = (t.cpu().numpy() for t in (result.reward, result.terminated,
                                                                      result.truncated, result.success))
            for j in range(n):
                tr = Transition(obs={k: v[j] for k, v in obs_np.items()}, action=act_np[j], reward=float(reward[j]),
                                next_obs={k: v[j] for k, v in next_np.items()}, terminated=bool(term[j]),
                                truncated=bool(trunc[j]), actor_id=self.actor_id, episode_id=episode_ids[j],
                                step=len(buffers[j]), intervened=False, policy_action=act_np[j])
                self.transport.send(tr)
                buffers[j].append(tr)
                if tr.terminated or tr.truncated:
                    self._finish_episode(buffers[j], bool(success[j]))
                    buffers[j] = []
                    episode_ids[j] = self.store.reserve_episode_id(self.actor_id)
            if bool(term.any() or trunc.any()):
                self.transport.flush()  # finished episodes' partial chunks go out now (as the single-env actor)
            self.stats.steps += n
            self.status.step([False] * n)
            obs = result.obs
            self.stats.loop_ms.append((time.perf_counter() - t0) * 1e3)
            if len(self.stats.loop_ms) > 10_000:
                del self.stats.loop_ms[:5_000]
            if time.perf_counter() - last_log > 10.0:
                last_log = time.perf_counter()
                s = self.stats.summary(self.transport, last_log - start)
                log.info("batched actor %s: %d steps (%.0f/s) over %d envs, %d episodes, success(20)=%.2f",
                         self.actor_id, s["steps"], s["steps_per_s"], n, s["episodes"], s["success_rate_recent"])
        for buf in buffers:  # episodes cut short by the stop are still real experience
            if buf:
                self._finish_episode(buf, False, interrupted=True)
        self.transport.flush()
        return self.stats.summary(self.transport, time.perf_counter() - start)

    def _finish_episode(self, transitions: list[Transition], success: bool, interrupted: bool = False) -> None:
        meta = {"interrupted": interrupted, "weights_version": self.stats.weights_version,
                "weights_incarnation": self.stats.weights_incarnation}
        episode = Episode.from_transitions(transitions, self.spec_hash, success=success, task=self.env.task,
                                           meta=meta)
        self.store.write(episode)
        self.stats.record_episode(success, float(episode.reward.sum()))
        self.status.episode(0, len(transitions), success)
