"""Env steps/s of the batched pick-cube twins: the vectorised CPU twin and the MuJoCo Warp twin, 1/64/1024 envs.

    python benchmarks/batched_sim.py [--budget-s 20] [--sizes 1 64 1024] [--backends cpu warp]

Each (backend, size) builds the env, takes one warm-up step (Warp compiles or loads its kernels), then steps
random actions until ``--budget-s`` seconds have passed (at least one step). A size whose projected time for
one step exceeds ``--max-step-s`` (from the previous size's rate) is skipped and reported as null. Ends with
one JSON line: ``{"device": ..., "cpu": {"steps_per_s_1": ...}, "warp": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

from robot_rl.sim.batched import make_batched_env  # noqa: E402
from robot_rl.sim.panda_config import PandaPickCubeConfig  # noqa: E402
from robot_rl.sim.pick_cube_warp import warp_available  # noqa: E402


def measure(backend: str, n: int, budget_s: float) -> dict[str, float]:
    cfg = PandaPickCubeConfig()
    t0 = time.perf_counter()
    env = make_batched_env(cfg, n, seed=0, backend=backend)
    build_s = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    actions = lambda: (torch.rand((n, 4), generator=gen) * 2 - 1).to(env.device)  # noqa: E731
    env.reset()
    t0 = time.perf_counter()
    env.step(actions())  # warm-up (kernel load/compile for Warp)
    warmup_s = time.perf_counter() - t0
    steps, t0 = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - t0 < budget_s:
        env.step(actions())
        steps += 1
    elapsed = time.perf_counter() - t0
    env.close()
    return {"steps_per_s": n * steps / elapsed, "batched_steps": steps, "seconds": elapsed, "build_s": build_s,
            "warmup_s": warmup_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=20.0, help="timed stepping per (backend, size)")
    parser.add_argument("--max-step-s", type=float, default=60.0, help="skip a size whose one step would be longer")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--backends", nargs="+", default=["cpu", "warp"], choices=["cpu", "warp"])
    args = parser.parse_args()
    warp_ok, warp_why = warp_available()
    device = "cuda" if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()}, " \
                                                       f"{os.cpu_count()} cores)"
    if warp_ok:
        import warp as wp

        device = f"warp {'cuda:0' if wp.is_cuda_available() else 'cpu'}; torch {device}"
    result: dict = {"device": device}
    print(f"{'backend':8s} {'envs':>6s} {'steps/s':>10s} {'steps':>6s} {'build s':>8s} {'warm-up s':>9s}")
    for backend in args.backends:
        if backend == "warp" and not warp_ok:
            result[backend] = {"skipped": warp_why}
            continue
        figures: dict = {}
        rate: float | None = None  # env steps/s of the previous size
        for n in args.sizes:
            if rate is not None and n / rate > args.max_step_s:
                figures[f"steps_per_s_{n}"] = None
                figures[f"skipped_{n}"] = f"one step projected at {n / rate:.0f} s > --max-step-s {args.max_step_s}"
                print(f"{backend:8s} {n:6d} {'skipped':>10s}")
                continue
            m = measure(backend, n, args.budget_s)
            rate = m["steps_per_s"]
            figures[f"steps_per_s_{n}"] = round(rate, 1)
            print(f"{backend:8s} {n:6d} {rate:10.1f} {m['batched_steps']:6d} {m['build_s']:8.1f} {m['warmup_s']:9.1f}",
                  flush=True)
        result[backend] = figures
    print(json.dumps(result))


if __name__ == "__main__":
    main()
