"""Distil any teacher into a :class:`StudentMLP`: DAgger (Ross et al. 2011), with plain BC as the baseline.

DAgger round 0 rolls out the teacher; every later round ``k`` rolls out a mixture that executes the
teacher's action with probability ``beta_decay ** k`` and the student's otherwise, *always* labelling the
visited state with the teacher's action. The student is retrained (warm start) on the aggregate after each
round. BC uses the same number of rounds and episodes, but every round executes the teacher only, so the two
see the same label budget and differ only in which states get labelled.

The teacher is queried on every step, including steps where the student acts, so stateful teachers (the
scripted pick experts keep a phase; chunked policies keep a queue) track the trajectory actually taken.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from robot_rl.hardware.mcu.student import StudentConfig, StudentMLP, Teacher

log = logging.getLogger("robot_rl.mcu.distill")


@dataclass
class DistillConfig:
    """Distillation schedule."""

    method: str = "dagger"
    """``dagger`` (student-visited states relabelled by the teacher) or ``bc`` (teacher rollouts only)."""
    rounds: int = 6
    """Data-collection rounds (round 0 always executes the teacher)."""
    episodes_per_round: int = 10
    """Episodes collected per round."""
    beta_decay: float = 0.5
    """DAgger: probability of executing the teacher's action in round ``k >= 1`` is ``beta_decay ** k``."""
    steps_per_round: int = 1500
    """Adam steps on the aggregate dataset after each round."""
    batch_size: int = 256
    """Minibatch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 0
    """Seeds episode resets (``seed + 1000 * round + episode``), minibatches and the mixture coin flips."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Student architecture."""

    def __post_init__(self) -> None:
        if self.method not in ("dagger", "bc"):
            raise ValueError(f"method must be 'dagger' or 'bc', got {self.method!r}")
        if self.rounds < 1 or self.episodes_per_round < 1 or self.steps_per_round < 1:
            raise ValueError("rounds, episodes_per_round and steps_per_round must be >= 1")
        if not 0.0 <= self.beta_decay <= 1.0:
            raise ValueError(f"beta_decay must be in [0, 1], got {self.beta_decay}")


@dataclass
class Rollouts:
    states: np.ndarray
    """``(N, D)`` float32 visited states."""
    labels: np.ndarray
    """``(N, A)`` float32 teacher actions at those states, normalised to ``[-1, 1]``."""
    executed: np.ndarray
    """``(N, A)`` float32 normalised actions actually executed (teacher's or student's)."""
    successes: list[bool]
    """Per-episode success."""

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else 0.0


@dataclass
class DistillResult:
    student: StudentMLP
    """The trained student (normalization buffers set)."""
    data: Rollouts
    """The aggregate labelled dataset."""
    history: list[dict[str, float]]
    """Per round: ``round``, ``beta``, ``samples``, ``loss`` (final train MSE), ``rollout_success``."""


def normalise_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.clip((np.asarray(action, np.float64) - (high + low) / 2) / ((high - low) / 2), -1, 1).astype(np.float32)


def collect(env: Any, teacher: Teacher | None, student: Callable[[np.ndarray], np.ndarray] | None, episodes: int,
            seed: int, beta: float, rng: np.random.Generator) -> Rollouts:
    """Roll out; execute the teacher with probability ``beta`` per step, else ``student((1, D)) -> (1, A)``.

    ``student`` returns *normalised* actions; the teacher (if given) labels every visited state.
    """
    if teacher is None and student is None:
        raise ValueError("collect needs a teacher or a student")
    low, high = env.action_spec.low_array().ravel(), env.action_spec.high_array().ravel()
    scale, bias = (high - low) / 2, (high + low) / 2
    states, labels, executed, successes = [], [], [], []
    for ep in range(episodes):
        obs = env.reset(seed=seed + ep)
        if teacher is not None:
            teacher.reset()
        while True:
            state = np.asarray(obs["state"], np.float32)
            label = normalise_action(teacher.act(obs), low, high) if teacher is not None else None
            if student is None or (teacher is not None and rng.random() < beta):
                act_n = label
            else:
                act_n = np.asarray(student(state[None]), np.float32)[0]
            states.append(state)
            if label is not None:
                labels.append(label)
            executed.append(act_n)
            result = env.step((act_n * scale + bias).astype(np.float32))
            obs = result.obs
            if result.terminated or result.truncated:
                successes.append(bool(result.success))
                break
    a_dim = env.action_spec.dim
    return Rollouts(np.stack(states), np.stack(labels) if labels else np.zeros((0, a_dim), np.float32),
                    np.stack(executed), successes)


def train_student(student: StudentMLP, states: np.ndarray, labels: np.ndarray, steps: int, batch_size: int,
                  lr: float, rng: np.random.Generator) -> float:
    """MSE regression of normalised actions; returns the mean loss over the last 10% of steps."""
    x = torch.as_tensor(states, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    tail: list[float] = []
    for step in range(steps):
        idx = torch.as_tensor(rng.integers(0, len(x), size=min(batch_size, len(x))))
        loss = torch.nn.functional.mse_loss(student(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step >= steps - max(steps // 10, 1):
            tail.append(loss.item())
    student.eval()
    return float(np.mean(tail))


def student_fn(student: StudentMLP) -> Callable[[np.ndarray], np.ndarray]:
    """``(N, D)`` numpy -> clipped normalised ``(N, A)`` numpy, no grad."""
    def fn(states: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return student(torch.as_tensor(states, dtype=torch.float32)).clamp(-1, 1).numpy()
    return fn


def distill(env: Any, teacher: Teacher, cfg: DistillConfig) -> DistillResult:
    """Run BC or DAgger on ``env`` (state observations) from ``teacher``; see the module docstring."""
    if "state" not in env.obs_spec.fields or len(env.obs_spec.fields["state"].shape) != 1:
        raise ValueError(f"the MCU student needs a flat 'state' observation; env has {env.obs_spec.keys()}")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    student = StudentMLP(env.obs_spec.fields["state"].shape[0], env.action_spec.dim, cfg.student)
    parts: list[Rollouts] = []
    history: list[dict[str, float]] = []
    for rnd in range(cfg.rounds):
        beta = 1.0 if (rnd == 0 or cfg.method == "bc") else cfg.beta_decay ** rnd
        parts.append(collect(env, teacher, student_fn(student) if beta < 1.0 else None, cfg.episodes_per_round,
                             cfg.seed + 1000 * rnd, beta, rng))
        states = np.concatenate([p.states for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        if rnd == 0:  # normalization from the teacher's own state distribution, then kept fixed (warm start)
            student.set_normalization(states)
        loss = train_student(student, states, labels, cfg.steps_per_round, cfg.batch_size, cfg.lr, rng)
        history.append({"round": rnd, "beta": beta, "samples": len(states), "loss": loss,
                        "rollout_success": parts[-1].success_rate})
        log.info("%s round %d: beta %.3f, %d samples, train mse %.5f, rollout success %.2f", cfg.method, rnd, beta,
                 len(states), loss, parts[-1].success_rate)
    data = Rollouts(np.concatenate([p.states for p in parts]), np.concatenate([p.labels for p in parts]),
                    np.concatenate([p.executed for p in parts]), [s for p in parts for s in p.successes])
    return DistillResult(student, data, history)


def on_policy_error(env: Any, teacher: Teacher, student: Callable[[np.ndarray], np.ndarray], episodes: int,
                    seed: int) -> dict[str, float]:
    """Student drives; the teacher labels. MSE and mean |err| on the student's own states, plus its success."""
    roll = collect(env, teacher, student, episodes, seed, beta=0.0, rng=np.random.default_rng(seed))
    err = roll.executed - roll.labels  # (N, A), both normalised; executed = the student's clipped output
    return {"mse": float(np.mean(err ** 2)), "mean_abs": float(np.mean(np.abs(err))),
            "success": roll.success_rate, "samples": float(len(err))}
