"""``robot-rl train``: the whole loop on one machine, through the real transport and real processes.

1. resolve and save the config (``run_dir/config.yaml``); every child process starts from that file;
2. record scripted-expert demos once (cached in ``run_dir/demos``) when the env has an expert; a run left
   without demos (no expert, no ``learner.demos``, or an empty one) says so loudly;
3. start the learner process, then ``num_actors`` actor processes (ZeroMQ on loopback);
4. wait for the learner to reach its budget, stop the actors (SIGTERM: they store their partial episodes);
5. evaluate the final policy deterministically, write ``eval.mp4`` and ``learning_curve.png``.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from robot_rl.config import save_resolved

log = logging.getLogger("robot_rl.train")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _free_ports(host: str, n: int) -> list[int]:
    """``n`` distinct free ports (all held open while choosing, so the OS cannot hand out one twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _spawn(args: list[str], log_path: Path, threads: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads is not None:  # oversubscribed torch threads slow a small learner several-fold
        env.setdefault("OMP_NUM_THREADS", str(threads))
    log_file = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "robot_rl.cli", *args], stdout=log_file,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0fs: killing", proc.pid, timeout)
            proc.kill()
            proc.wait()
    return proc.returncode


def _last_metrics(path: Path, state: dict[str, Any]) -> None:
    """Fold new lines of the learner's metrics file into ``state`` (reads only what was appended)."""
    if not path.exists():
        return
    with open(path) as f:
        f.seek(state.get("_offset", 0))
        for line in f:
            if not line.endswith("\n"):
                break  # a line still being written: read it next time
            state["_offset"] = state.get("_offset", 0) + len(line)
            record = json.loads(line)
            state.update({k: v for k, v in record.items() if isinstance(v, (int, float))})


class TrainProgress:
    """A rich progress bar in the terminal running ``robot-rl train``, fed by the learner's metrics file."""

    def __init__(self, run_dir: Path, total_env_steps: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.path = run_dir / "metrics_learner.jsonl"
        self.state: dict[str, Any] = {}
        self.progress = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("env steps"), TimeElapsedColumn(), TextColumn("{task.fields[info]}"),
                                 transient=False)
        self.task = self.progress.add_task("train", total=total_env_steps or None, info="starting")

    def __enter__(self) -> "TrainProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        self.progress.stop()

    def refresh(self) -> None:
        _last_metrics(self.path, self.state)
        s = self.state
        info = f"updates {int(s.get('updates', 0))} ({s.get('updates_per_s', 0):.0f}/s)"
        if "eval/success_rate" in s:
            info += f"  eval success {s['eval/success_rate']:.0%}"
        if "eval/return" in s:
            info += f" return {s['eval/return']:.3g}"
        self.progress.update(self.task, completed=int(s.get("env_steps", s.get("step", 0))), info=info)


def episode_curves(run_dir: Path) -> dict[str, Any] | None:
    """The actors' episodes (all stores under ``run_dir/episodes``) in the order they were written:
    ``env_steps`` (cumulative, at each episode's end), ``success`` (0/1) and ``return`` (sum of rewards), each
    (E,); None when there are none."""
    import numpy as np

    from robot_rl.episode_store import EpisodeStore

    episodes = []
    for store_dir in sorted((run_dir / "episodes").glob("*")):
        for path in EpisodeStore(store_dir).paths():
            with np.load(path) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                episode_return = float(np.sum(data["reward"]))
            episodes.append((meta["written_at"], meta["length"], meta["success"], episode_return))
    if not episodes:
        return None
    episodes.sort()
    return {"env_steps": np.cumsum([e[1] for e in episodes]), "success": np.asarray([e[2] for e in episodes], float),
            "return": np.asarray([e[3] for e in episodes], float)}


def plot_learning_curve(run_dir: Path) -> Path | None:
    """Success rate (top) and episode return (bottom) of the actors' episodes (from their episode stores) vs
    env steps, with the learner's periodic and the final deterministic evaluations -> PNG. The return panel
    matters for dense rewards, where success alone stays at 0 long after the policy started improving."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves = episode_curves(run_dir)
    if curves is None:
        return None
    steps = curves["env_steps"]
    window = max(1, min(20, len(steps) // 5))
    metrics = run_dir / "metrics_learner.jsonl"
    records = []
    if metrics.exists():  # periodic deterministic evaluations by the learner
        records = [json.loads(line) for line in metrics.read_text().splitlines() if '"eval/success_rate"' in line]
    final = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").exists() else None
    fig, (ax_success, ax_return) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True)
    for ax, column, eval_key, final_key, label in (
            (ax_success, "success", "eval/success_rate", "success_rate", "success rate"),
            (ax_return, "return", "eval/return", "mean_return", "episode return")):
        values = curves[column]
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, label=f"training episodes (moving mean of {window})")
        shown = [r for r in records if eval_key in r]
        if shown:
            ax.plot([r["step"] for r in shown], [r[eval_key] for r in shown], "o-", color="tab:green",
                    label="deterministic evaluation")
        if final is not None and final_key in final:
            ax.scatter([steps[-1]], [final[final_key]], color="red", zorder=3, label="final evaluation")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_success.set_ylim(-0.05, 1.05)
    ax_success.legend(loc="lower right", fontsize="small")
    ax_return.set_xlabel("env steps")
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _supervise(learner: subprocess.Popen, actors: list[subprocess.Popen], actor_args: Any, logs: Path,
               progress: TrainProgress) -> None:
    """Wait for the learner; restart an actor that crashed (its spill directory resends what it held)."""
    while learner.poll() is None:
        time.sleep(0.5)
        progress.refresh()
        for i, actor in enumerate(actors):
            if actor.poll() is not None and actor.returncode != 0:
                log.warning("actor-%d exited with %d; restarting it (see %s)", i, actor.returncode,
                            logs / f"actor-{i}.log")
                actors[i] = _spawn(actor_args(i), logs / f"actor-{i}.log")


def record_expert_demos(cfg: Any, run_dir: Path) -> Path | None:
    """Scripted-expert demos into ``run_dir/demos`` (cached) when the env has an expert; else say loudly that
    this run has no demos and what that means. Returns the demo directory or None."""
    from robot_rl.demos import generate_demos
    from robot_rl.episode_store import EpisodeStore
    from robot_rl.registry import ENVS

    if cfg.learner.demos:
        if not any(Path(cfg.learner.demos).glob("*.npz")):
            log.warning("NO DEMONSTRATIONS: learner.demos=%s holds no episodes; this run learns from its own "
                        "exploration alone", cfg.learner.demos)
        return None
    if cfg.num_demos <= 0:
        log.info("num_demos=0: training without demonstrations, as asked")
        return None
    probe = ENVS.make(cfg.env.name, cfg.env, seed=cfg.env.seed)
    has_expert = hasattr(probe, "expert")
    probe.close()
    if not has_expert:
        log.warning(
            "NO DEMONSTRATIONS: env %r has no scripted expert and learner.demos is unset, so this run learns from "
            "its own exploration alone (RLPD/SAC without demos: no offline warm start, no BC term, no 50/50 demo "
            "batches; sparse-reward tasks rarely learn this way). Record demos by hand with `robot-rl demos "
            "teleop=keyboard n=20 out=DIR` (same env overrides) and pass learner.demos=DIR, or give the env a "
            "scripted expert (env.expert=package.module:make_expert for env=gym); num_demos=0 silences this.",
            cfg.env.name)
        return None
    demo_dir = run_dir / "demos"
    have = len(EpisodeStore(demo_dir))
    if have < cfg.num_demos:
        log.info("recording %d scripted-expert demos into %s", cfg.num_demos - have, demo_dir)
        generate_demos(cfg, cfg.num_demos - have, demo_dir)
    return demo_dir


def train(cfg: Any) -> int:
    from robot_rl.evaluate import evaluate_checkpoint

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    save_resolved(cfg, config_path)
    extra: list[str] = []
    demo_dir = record_expert_demos(cfg, run_dir)
    if demo_dir is not None:
        extra.append(f"learner.demos={demo_dir}")
    t = cfg.transport
    if not (_port_free(t.bind, t.transitions_port) and _port_free(t.bind, t.weights_port)):
        # Another run (or program) holds the ports: this run is all on loopback, so any free pair will do.
        ports = _free_ports(t.bind, 2)
        log.info("ports %d/%d are busy; this run uses %d/%d", t.transitions_port, t.weights_port, *ports)
        extra_common = [f"transport.transitions_port={ports[0]}", f"transport.weights_port={ports[1]}"]
    else:
        extra_common = []
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    learner_threads = max(1, (os.cpu_count() or 1) - cfg.num_actors)
    learner = _spawn(["learner", "--config", str(config_path), *extra, *extra_common], logs / "learner.log",
                     threads=learner_threads)
    actor_args = lambda i: ["actor", "--config", str(config_path), f"actor.actor_id=actor-{i}", *extra_common]
    actors = [_spawn(actor_args(i), logs / f"actor-{i}.log") for i in range(cfg.num_actors)]
    log.info("learner pid %d, actor pids %s; logs in %s", learner.pid, [a.pid for a in actors], logs)
    if cfg.dashboard.enabled:  # the learner starts the web server; its URL (with the token) goes to this terminal
        from robot_rl.dashboard.feed import announce_url

        announce_url(run_dir)
    t0 = time.monotonic()
    try:
        with TrainProgress(run_dir, cfg.learner.max_env_steps) as progress:
            _supervise(learner, actors, actor_args, logs, progress)
    except KeyboardInterrupt:
        log.info("interrupted: stopping learner (it checkpoints) and actors")
    finally:
        _stop(learner, timeout=60)
        for actor in actors:
            _stop(actor)
    if learner.returncode != 0:
        log.error("learner failed with exit code %s; see %s", learner.returncode, logs / "learner.log")
        return 1
    log.info("training took %.0fs; evaluating", time.monotonic() - t0)
    plots: list[Path | None] = []

    def write_results(metrics: dict[str, Any]) -> None:
        # Before the video is encoded: a video that fails (or a run killed while encoding) keeps these.
        (run_dir / "eval.json").write_text(json.dumps(metrics))
        plots.append(plot_learning_curve(run_dir))

    result = evaluate_checkpoint(run_dir, cfg.eval_episodes, str(run_dir / "eval.mp4"), on_metrics=write_results)
    (run_dir / "eval.json").write_text(json.dumps(result))  # now with the video's path, when one was written
    log.info("final success rate %.2f, mean return %.3g over %d episodes; plot %s; video %s",
             result["success_rate"], result["mean_return"], result["episodes"], plots[-1] if plots else None,
             result.get("video", "none"))
    return 0
