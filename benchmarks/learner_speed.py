"""Gradient updates per second of our SAC learner vs stable-baselines3 SAC, same sizes, same run, same threads.

Setting (like the pick-cube twin): state obs 28 floats, action dim 4, batch 256, 2 critics 256x256, actor
256x256, one critic + actor + temperature update per step for both. Both sample their batch from a replay
buffer pre-filled with random data inside the timed loop (SB3: ``model.train(gradient_steps=K)`` on its own
buffer; ours: uniform indices into numpy arrays -> torch batch -> ``algo.update``). Repeats are interleaved
so machine noise hits both alike; medians are reported. Also, with 2 cameras (64 px) + state: the end-to-end
DrQ pixel route (``policy.encoder=drq``) and the default embedding route (``policy.encoder=task``: replay
holds each frame's frozen embedding, updates train the encoder head on it). The state route takes SAC's
hand-written update (``robot_rl/algorithms/sac_handwritten.py``, the default where the config allows it); the
pixel and embedding routes train an encoder and run through autograd.

    python benchmarks/learner_speed.py [--repeats 5] [--steps 300] [--threads 2]

Ends with one JSON line: ours_updates_per_s, sb3_updates_per_s, ratio_vs_sb3, pixel_updates_per_s,
embedding_updates_per_s, device, load_avg_1m (before, after), ratio_vs_sb3_cpu_time (the same runs per CPU
second of the process: less sensitive to other people's load; not the headline), ours_autograd_updates_per_s (the
same SAC update through autograd, ``algo.handwritten_update=false``: the path before the hand-written one, and
what configurations it does not cover run) and ours_bf16_updates_per_s (the opt-in ``algo.bf16_matmuls`` mode,
autograd; not the headline figure).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from robot_rl.config import load_config
from robot_rl.registry import ALGORITHMS, POLICIES
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec
from robot_rl.types import Batch

STATE_DIM, ACTION_DIM, BATCH, HIDDEN, BUFFER = 28, 4, 256, 256, 10_000


def random_buffer(obs_spec: ObsSpec, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Flat replay arrays (``obs/<k>``, ``next_obs/<k>``, per-step fields) filled with random data."""
    arrays: dict[str, np.ndarray] = {}
    for key, spec in obs_spec.fields.items():
        for prefix in ("obs/", "next_obs/"):
            if spec.dtype == "uint8":
                arrays[prefix + key] = rng.integers(0, 256, (size, *spec.shape), dtype=np.uint8)
            else:
                arrays[prefix + key] = rng.standard_normal((size, *spec.shape), dtype=np.float32)
    arrays["action"] = rng.uniform(-1, 1, (size, ACTION_DIM)).astype(np.float32)
    arrays["policy_action"] = arrays["action"]
    arrays["reward"] = rng.standard_normal(size, dtype=np.float32)
    arrays["terminated"] = rng.random(size) < 0.02
    arrays["truncated"] = np.zeros(size, bool)
    arrays["intervened"] = np.zeros(size, bool)
    arrays["episode_id"] = np.zeros(size, np.int64)
    arrays["step"] = np.zeros(size, np.int64)
    return arrays


def build_ours(obs_spec: ObsSpec, action_spec: ActionSpec, bf16: bool = False, encoder: str = "drq",
               handwritten: bool = True):
    # State-only specs ignore the encoder choice. With cameras: ``drq`` is the end-to-end conv encoder (every
    # update re-encodes every image), ``task`` the default route (frozen task encoder, updates on embeddings).
    # ``handwritten=False`` forces the autograd update (the state route otherwise takes the hand-written one).
    cfg = load_config(["algo=sac", f"algo.batch_size={BATCH}", f"algo.critic_hidden_dims=[{HIDDEN},{HIDDEN}]",
                       "algo.num_critics=2", f"policy.hidden_dims=[{HIDDEN},{HIDDEN}]",
                       f"algo.bf16_matmuls={str(bf16).lower()}", f"policy.encoder={encoder}",
                       f"algo.handwritten_update={str(handwritten).lower()}"])
    policy = POLICIES.make("gaussian", cfg.policy, obs_spec, action_spec)
    return ALGORITHMS.make("sac", cfg.algo, policy, obs_spec, action_spec, "cpu")


def rates(steps: int, wall_start: float, cpu_start: float) -> tuple[float, float]:
    """(updates per wall second, updates per CPU second of this process) since the two start readings. On a
    shared machine the wall figure drops with other people's load; the CPU figure mostly does not."""
    return steps / (time.perf_counter() - wall_start), steps / (time.process_time() - cpu_start)


def time_ours(algo, arrays: dict[str, np.ndarray], steps: int, rng: np.random.Generator) -> tuple[float, float]:
    size = len(arrays["reward"])
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        index = rng.integers(0, size, BATCH)
        batch = Batch.from_arrays({k: v[index] for k, v in arrays.items()}).to_torch("cpu")
        algo.update(batch)
    return rates(steps, wall, cpu)


def build_sb3():
    import gymnasium as gym
    from stable_baselines3 import SAC as SB3SAC
    from stable_baselines3.common.logger import Logger

    class RandomEnv(gym.Env):
        observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        def reset(self, *, seed=None, options=None):
            return np.zeros(STATE_DIM, np.float32), {}

        def step(self, action):
            return np.zeros(STATE_DIM, np.float32), 0.0, False, False, {}

    model = SB3SAC("MlpPolicy", RandomEnv(), batch_size=BATCH, buffer_size=BUFFER, learning_starts=0,
                   policy_kwargs=dict(net_arch=[HIDDEN, HIDDEN], n_critics=2), device="cpu", seed=0)
    # What learn() would set up, with no output (configure_logger(verbose=0) still makes an empty /tmp/SB3-* dir).
    model._logger = Logger(folder=None, output_formats=[])
    rng = np.random.default_rng(0)
    buf = model.replay_buffer
    buf.observations[:] = rng.standard_normal(buf.observations.shape, dtype=np.float32)
    buf.next_observations[:] = rng.standard_normal(buf.next_observations.shape, dtype=np.float32)
    buf.actions[:] = rng.uniform(-1, 1, buf.actions.shape).astype(np.float32)
    buf.rewards[:] = rng.standard_normal(buf.rewards.shape, dtype=np.float32)
    buf.dones[:] = (rng.random(buf.dones.shape) < 0.02).astype(np.float32)
    buf.full = True
    return model


def time_sb3(model, steps: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    model.train(gradient_steps=steps, batch_size=BATCH)
    return rates(steps, wall, cpu)


def time_pixels(updates: int, encoder: str = "drq") -> float:
    """Updates/s with 2 cameras (64 px) + state. ``drq``: image batches through the trained conv encoder;
    ``task``: replay holds each frame's frozen embedding (``embed/<cam>``), updates train the head on those."""
    obs_spec = ObsSpec({"state": ArraySpec((STATE_DIM,), "float32"),
                        "images/front": ArraySpec((64, 64, 3), "uint8"),
                        "images/wrist": ArraySpec((64, 64, 3), "uint8")})
    action_spec = ActionSpec((ACTION_DIM,), -1.0, 1.0)
    algo = build_ours(obs_spec, action_spec, encoder=encoder)
    rng = np.random.default_rng(1)
    arrays = random_buffer(algo.encoder.replay_spec(obs_spec), 1024, rng)  # what replay stores on this route
    time_ours(algo, arrays, 3 if encoder != "drq" else 1, rng)  # warm-up (allocations, oneDNN primitives)
    return time_ours(algo, arrays, updates, rng)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300, help="updates per timed repeat")
    parser.add_argument("--pixel-updates", type=int, default=3, help="timed updates of the drq pixel route")
    parser.add_argument("--embedding-updates", type=int, default=100,
                        help="timed updates of the embedding route (policy.encoder=task, the default for cameras)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch intra-op threads, the same for both learners")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]  # the machine is shared: the figures only mean something with its load

    obs_spec = ObsSpec({"state": ArraySpec((STATE_DIM,), "float32")})
    action_spec = ActionSpec((ACTION_DIM,), -1.0, 1.0)
    ours = build_ours(obs_spec, action_spec)
    if ours.handwritten_fallback is not None:  # the headline is the default path; say so if that changes
        raise SystemExit(f"the state route no longer takes the hand-written update: {ours.handwritten_fallback}")
    ours_autograd = build_ours(obs_spec, action_spec, handwritten=False)  # the same SAC through autograd
    ours_bf16 = build_ours(obs_spec, action_spec, bf16=True)  # opt-in reduced precision, reported apart
    rng = np.random.default_rng(0)
    arrays = random_buffer(obs_spec, BUFFER, rng)
    sb3 = build_sb3()
    time_ours(ours, arrays, 50, rng)  # warm-up all
    time_ours(ours_autograd, arrays, 50, rng)
    time_ours(ours_bf16, arrays, 50, rng)
    time_sb3(sb3, 50)
    ours_runs, autograd_runs, bf16_runs, sb3_runs = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so slow phases of a shared machine hit all alike
        ours_runs.append(time_ours(ours, arrays, args.steps, rng))
        sb3_runs.append(time_sb3(sb3, args.steps))
        autograd_runs.append(time_ours(ours_autograd, arrays, args.steps, rng))
        bf16_runs.append(time_ours(ours_bf16, arrays, args.steps, rng))
    pixel = time_pixels(args.pixel_updates)
    embedding = time_pixels(args.embedding_updates, encoder="task")
    load_after = os.getloadavg()[0]

    def median(runs: list[tuple[float, float]], which: int = 0) -> float:
        return statistics.median(r[which] for r in runs)

    ours_median, sb3_median, bf16_median = median(ours_runs), median(sb3_runs), median(bf16_runs)
    autograd_median = median(autograd_runs)
    ratio_cpu = median(ours_runs, 1) / median(sb3_runs, 1)
    print(f"threads={torch.get_num_threads()} batch={BATCH} obs={STATE_DIM} act={ACTION_DIM} "
          f"critics=2x{HIDDEN}x{HIDDEN} actor={HIDDEN}x{HIDDEN}")
    print(f"{'learner':<28}{'median upd/s':>14}   runs")
    print(f"{'robot_rl SAC (state)':<28}{ours_median:>14.1f}   {', '.join(f'{r:.0f}' for r, _ in ours_runs)}")
    print(f"{'stable-baselines3 SAC':<28}{sb3_median:>14.1f}   {', '.join(f'{r:.0f}' for r, _ in sb3_runs)}")
    print(f"{'robot_rl SAC autograd':<28}{autograd_median:>14.1f}   "
          f"{', '.join(f'{r:.0f}' for r, _ in autograd_runs)}   (algo.handwritten_update=false: the same update "
          f"through autograd)")
    print(f"{'robot_rl SAC bf16 matmuls':<28}{bf16_median:>14.1f}   {', '.join(f'{r:.0f}' for r, _ in bf16_runs)}"
          f"   (opt-in algo.bf16_matmuls=true, not the headline)")
    print(f"{'robot_rl SAC (2x64px+state)':<28}{pixel:>14.2f}   ({args.pixel_updates} updates, policy.encoder=drq)")
    print(f"{'robot_rl SAC (2x embed+state)':<28}{embedding:>14.1f}   ({args.embedding_updates} updates, "
          f"policy.encoder=task: frozen frame embeddings)")
    print(f"ratio ours/sb3: {ours_median / sb3_median:.2f}x   (1-min load average {load_before:.1f} before, "
          f"{load_after:.1f} after, {os.cpu_count()} CPUs); per CPU second of the process: {ratio_cpu:.2f}x "
          f"(ours {median(ours_runs, 1):.0f}, sb3 {median(sb3_runs, 1):.0f} updates per CPU s)")
    print(json.dumps({"ours_updates_per_s": round(ours_median, 1), "sb3_updates_per_s": round(sb3_median, 1),
                      "ratio_vs_sb3": round(ours_median / sb3_median, 2), "pixel_updates_per_s": round(pixel, 3),
                      "embedding_updates_per_s": round(embedding, 1),
                      "ratio_vs_sb3_cpu_time": round(ratio_cpu, 2),
                      "ours_autograd_updates_per_s": round(autograd_median, 1),
                      "ours_bf16_updates_per_s": round(bf16_median, 1),
                      "device": f"cpu ({torch.get_num_threads()} threads)",
                      "load_avg_1m": [round(load_before, 2), round(load_after, 2)]}))


if __name__ == "__main__":
    main()
