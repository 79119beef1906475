"""Steps per second of the Panda pick-cube twin: state obs vs 2 x 64 px cameras, 1 env vs N envs in one process.

    MUJOCO_GL=egl python benchmarks/env_speed.py [--repeats 3] [--steps 400] [--num-envs 4]

Each row is the median over ``--repeats`` runs of uniformly random actions (episodes reset when they end).
The N-env rows step N independent envs one after another per tick (what one actor process with
``actor.num_envs=N`` does) and count env steps summed over the envs. ``cpu`` columns divide by this process's
CPU time instead of wall time: on a shared machine they show the cost of the twin itself. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from robot_rl.sim.panda_config import PandaPickCubeConfig  # noqa: E402
from robot_rl.sim.panda_pick_cube import PandaPickCube  # noqa: E402


def measure(obs_mode: str, num_envs: int, steps: int, seed: int) -> tuple[float, float]:
    """(wall, cpu) env steps per second for ``steps`` ticks of ``num_envs`` envs."""
    cfg = PandaPickCubeConfig(obs=obs_mode, image_size=64)
    envs = [PandaPickCube(cfg, seed=seed + i) for i in range(num_envs)]
    for env in envs:
        env.reset()
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, num_envs, 4)).astype(np.float32)
    envs[0].step(actions[0, 0])  # first step builds the renderers (GL context): not part of the steady state
    wall, cpu = time.perf_counter(), time.process_time()
    for tick in range(steps):
        for env, action in zip(envs, actions[tick]):
            result = env.step(action)
            if result.terminated or result.truncated:
                env.reset()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for env in envs:
        env.close()
    return steps * num_envs / wall, steps * num_envs / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="ticks per repeat (pixel rows use a quarter)")
    parser.add_argument("--num-envs", type=int, default=4)
    args = parser.parse_args()
    rows: dict[str, tuple[float, float]] = {}
    for obs_mode, label in (("state", "state"), ("pixels", "pixels64")):
        for num_envs in (1, args.num_envs):
            steps = args.steps if obs_mode == "state" else max(args.steps // 4, 20)
            steps = max(steps // num_envs, 10)
            runs = [measure(obs_mode, num_envs, steps, seed=r) for r in range(args.repeats)]
            key = f"{label}_steps_per_s" + ("" if num_envs == 1 else f"_vec{num_envs}")
            rows[key] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    print(f"{'config':32s} {'steps/s (wall)':>15s} {'steps/s (cpu)':>15s}")
    for key, (wall, cpu) in rows.items():
        print(f"{key:32s} {wall:15.1f} {cpu:15.1f}")
    summary = {key: round(wall, 1) for key, (wall, _) in rows.items()}
    summary.update({f"{key}_cpu": round(cpu, 1) for key, (_, cpu) in rows.items()})
    summary.update(repeats=args.repeats, control_hz=10.0, physics_hz=500.0, load_avg_1min=os.getloadavg()[0])
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
