"""The real-robot path end to end on the twin: ``ros2 launch robot_rl sim.launch.py`` (twin node in real time,
safety node, actor node at 10 Hz, pixels) streaming to a pixel learner, until its evaluation reaches the target
success rate or the wall-clock budget runs out.

    # inside .venv-ros with the launch stack installed (tests/ros2/run_suite.sh does both) and robot_rl installed
    # with its data files (pip install . / colcon), in a private network namespace as the ROS suite runs:
    unshare -n bash -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo;
        ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST .venv-ros/bin/python benchmarks/ros2_learning.py --minutes 40'

The learner records ``--demos`` scripted pixel demos first, evaluates deterministically on its own twin every
``--eval-every`` online env steps (``learner.eval_every_env_steps``), and the benchmark reads those evaluations
from ``metrics_learner.jsonl``. It also reads the episodes the ROS actor streamed (the learner's episode store):
their success is what the robot itself achieved through the whole ROS path (stochastic policy, sensors over DDS,
safety node), which the learner's evaluation on its own twin does not see. Runs the whole budget unless
``--stop-at-target``. Writes ``learning_curve.png`` (both against wall-clock minutes) in the run directory and
ends with one JSON line: ``final_success``, ``wall_s``, ``reached_target_at_s`` (None if never),
``actor_episodes``, ``actor_successes``, ``actor_success_last_20``, ``twin_arm_recoveries`` (times the twin node
put a wrecked arm back home, from the statistics it writes as it stops: None when it did not stop
cleanly), ``evals``, ``target``. Extra learner overrides go after ``--`` (e.g. the pixel recipe of the pixels
issue). This is a 40-minute job: it is not part of any test.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from robot_rl.run_log import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _evals(metrics: Path) -> list[dict[str, float]]:
    return [r for r in read_metrics(metrics) if "eval/success_rate" in r]


def _actor_episodes(episodes: Path) -> list[tuple[float, bool]]:
    """``(end time, success)`` of every episode the ROS actor streamed (the learner's episode store): what the
    robot itself achieved with its stochastic policy, through the whole ROS path."""
    import numpy as np

    out = []
    for path in sorted(episodes.glob("*/*.npz")):
        with np.load(path) as ep:
            out.append((path.stat().st_mtime, bool(np.asarray(ep["reward"]).sum() > 0)))
    return sorted(out)


def _plot(evals: list[dict[str, float]], actor: list[tuple[float, bool]], t0: float, target: float,
          out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([(e["time"] - t0) / 60 for e in evals], [e["eval/success_rate"] for e in evals], "o-",
            label="learner eval (deterministic, its own twin)")
    if actor:
        wins = np.array([s for _, s in actor], float)
        rolling = [wins[max(0, i - 19):i + 1].mean() for i in range(len(wins))]
        ax.plot([(t - t0) / 60 for t, _ in actor], rolling, "-", label="ROS actor episodes (last 20, stochastic)")
    ax.legend(fontsize=7, loc="lower right")
    ax.axhline(target, ls="--", c="grey")
    ax.set(xlabel="wall-clock minutes", ylabel="eval success", ylim=(-0.05, 1.05),
           title="ros2 launch sim.launch.py (10 Hz, pixels)")
    fig.tight_layout()
    fig.savefig(out)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    # Started in the background by a non-interactive shell, SIGINT arrives ignored (and would stay ignored in
    # `ros2 launch` and the learner): handle SIGINT and SIGTERM explicitly, so either one stops the launch and
    # the learner through the cleanup below and still writes the figures.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demos", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--stop-at-target", action="store_true",
                        help="stop at the first evaluation >= --target (default: run the whole budget)")
    parser.add_argument("overrides", nargs="*", help="extra learner overrides (after --)")
    args = parser.parse_args()

    from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    try:
        get_package_prefix("robot_rl")
    except PackageNotFoundError:
        sys.exit("robot_rl is not in the ament index: install it with its data files (pip install . or colcon "
                 "build) and put its prefix on AMENT_PREFIX_PATH (README, ROS 2)")
    run = args.run_dir or ROOT / "runs" / time.strftime("ros2_learning_%Y%m%d_%H%M%S")
    run.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    cli = [sys.executable, "-m", "robot_rl.cli"]
    common = ["env=panda_pick_cube", "env.obs=pixels", "env.image_size=64", f"seed={args.seed}",
              f"env.seed={args.seed}"]
    keys = run / "keys"
    subprocess.run([*cli, "keys", str(keys), "--actors", "robot1"], check=True, env=env, capture_output=True)
    t0 = time.time()
    demos = run / "demos"
    if args.demos:
        subprocess.run([*cli, "demos", *common, f"n={args.demos}", f"out={demos}"], check=True, env=env)
    learner_args = [*cli, "learner", *common, f"run_dir={run / 'learner'}", f"transport.keys_dir={keys}",
                    f"learner.eval_every_env_steps={args.eval_every}", f"learner.eval_episodes={args.eval_episodes}",
                    "logger.wandb=disabled", *([f"learner.demos={demos}"] if args.demos else []), *args.overrides]
    learner = subprocess.Popen(learner_args, env=env, stdout=open(run / "learner.log", "wb"),
                               stderr=subprocess.STDOUT)
    config = run / "learner" / "config_learner.yaml"
    while not config.exists():
        if learner.poll() is not None:
            sys.exit(f"learner exited ({learner.returncode}): see {run / 'learner.log'}")
        time.sleep(0.5)
    ros2 = Path(sys.executable).parent / "ros2"  # the venv's, when it is not activated
    launch = subprocess.Popen([str(ros2) if ros2.exists() else "ros2", "launch", "robot_rl", "sim.launch.py",
                               "learner_host:=127.0.0.1", f"train_config:={config}", f"keys_dir:={keys}", "actor_id:=robot1",
                               "key_name:=robot1", f"twin_stats_file:={run / 'twin_stats.json'}"],
                              env=env, cwd=run, stdout=open(run / "launch.log", "wb"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    deadline, reached = t0 + args.minutes * 60, None
    try:
        while time.time() < deadline and launch.poll() is None and learner.poll() is None:
            evals = _evals(run / "learner" / "metrics_learner.jsonl")
            hit = [e for e in evals if e["eval/success_rate"] >= args.target]
            if hit and reached is None:
                reached = hit[0]["time"] - t0
                if args.stop_at_target:
                    break
            time.sleep(5)
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}): stopping the launch and the learner", flush=True)
    finally:
        if launch.poll() is None:
            launch.send_signal(signal.SIGINT)
            try:
                launch.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(launch.pid, signal.SIGKILL)
        learner.terminate()
        try:
            learner.wait(120)
        except subprocess.TimeoutExpired:  # e.g. inside a long offline pre-training phase: its metrics are on disk
            learner.kill()
            learner.wait(30)
    evals = _evals(run / "learner" / "metrics_learner.jsonl")
    wall = time.time() - t0
    actor = _actor_episodes(run / "learner" / "episodes")
    if evals or actor:
        _plot(evals, actor, t0, args.target, run / "learning_curve.png")
    for e in evals:
        print(f"{(e['time'] - t0) / 60:6.1f} min  env step {e['step']:>6}  eval success {e['eval/success_rate']:.2f}")
    last = [s for _, s in actor[-20:]]
    print(f"ROS actor: {len(actor)} episodes, {sum(s for _, s in actor)} successful; last 20: "
          f"{sum(last)}/{len(last)}")
    # The twin node counts the times it had to put the arm back home (an arm the episodes could not recover)
    # and writes its statistics as it stops; none when it did not stop cleanly (see launch.log).
    twin_stats_file = run / "twin_stats.json"
    twin_stats = json.loads(twin_stats_file.read_text()) if twin_stats_file.exists() else {}
    recoveries = int(twin_stats["arm_recoveries"]) if "arm_recoveries" in twin_stats else None
    if twin_stats:
        print(f"twin: {int(twin_stats['commands'])} commands, {int(twin_stats['episode_resets'])} episode resets, "
              f"arm put back home {recoveries} time(s), physics lag max {twin_stats['physics_lag_max_s']:.3f} s")
    else:
        print(f"twin: no statistics ({twin_stats_file} missing: the twin node did not stop cleanly, see launch.log)")
    print(json.dumps({"final_success": evals[-1]["eval/success_rate"] if evals else None, "wall_s": round(wall, 1),
                      "actor_episodes": len(actor), "actor_successes": sum(s for _, s in actor),
                      "twin_arm_recoveries": recoveries,
                      "actor_success_last_20": (sum(last) / len(last)) if last else None,
                      "reached_target_at_s": None if reached is None else round(reached, 1),
                      "target": args.target, "evals": [[round(e["time"] - t0, 1), e["step"],
                                                        e["eval/success_rate"]] for e in evals],
                      "run_dir": str(run)}))


if __name__ == "__main__":
    main()
