"""``robot-rl train``: the whole loop on one machine, through the real transport and real processes.

1. resolve and save the config (``run_dir/config.yaml``) and say what the run starts from (a checkpoint, the
   episodes already on disk, or nothing); every child process starts from that file;
2. record scripted-expert demos once (cached in ``run_dir/demos``) when the env has an expert; a run left
   without demos (no expert, no ``learner.demos``, or an empty one) says so loudly;
3. start the learner process, then ``num_actors`` actor processes (ZeroMQ on loopback). Each has a session of
   its own and stops when ``train`` exits, however it exits (:mod:`robot_rl.lifetime`);
4. the learner reaches its budget and says so with its weights; the actors stop, their last chunks are
   checkpointed and committed (nothing stays in ``spill/``), and once they have exited ``train`` stops the
   learner. Ctrl-C, SIGTERM or SIGHUP stop everything at once (the learner checkpoints, the actors keep what
   is uncommitted in ``spill/`` and store their partial episodes);
5. evaluate the final policy deterministically, write ``eval.json``, ``eval.mp4`` (the first
   ``eval_video_episodes`` episodes) and ``learning_curve.png``.
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
from typing import Any, Callable

from robot_rl.config import save_resolved, to_dict
from robot_rl.episode_store import EpisodeStore
from robot_rl.lifetime import child_env
from robot_rl.train_progress import TrainProgress

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
    """A child in its own session (a terminal's Ctrl-C reaches only ``train``, which stops the children in
    order) that still stops when ``train`` dies, however it dies (:mod:`robot_rl.lifetime`)."""
    env = child_env(dict(os.environ, PYTHONUNBUFFERED="1"))
    if threads is not None:  # oversubscribed torch threads slow a small learner several-fold
        env.setdefault("OMP_NUM_THREADS", str(threads))
    with open(log_path, "ab") as log_file:  # the child holds its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "robot_rl.cli", *args], stdout=log_file,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop_all(procs: list[tuple[subprocess.Popen, float]]) -> None:
    """SIGTERM every process at once (each stops cleanly on its own), then wait; SIGKILL after its timeout."""
    for proc, _ in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, timeout in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0fs: killing", proc.pid, timeout)
            proc.kill()
            proc.wait()


def received_episodes(run_dir: Path) -> Callable[[str, int], bool] | None:
    """Which stored episodes the learner received, from the online replay of its latest checkpoint: the
    episodes in it and, once replay has wrapped around, the older ones it overwrote. An episode an actor
    stored but whose chunks never reached the learner (lost to a kill before they were committed) is not in
    it. None when there is no checkpoint to tell."""
    import numpy as np

    from robot_rl.checkpoint import Checkpointer

    latest = Checkpointer(run_dir).latest()
    replay = latest / "replay_online" if latest is not None else None
    if replay is None or not (replay / "meta.json").exists():
        return None
    meta = json.loads((replay / "meta.json").read_text())
    names = np.asarray(meta["actor_names"] or [""], dtype=object)
    actor_of = names[np.load(replay / "actor_index.npy")] if len(meta["actor_names"]) else np.array([], object)
    episode_ids = np.load(replay / "field_episode_id.npy")
    held = set(zip(actor_of.tolist(), episode_ids.tolist()))
    wrapped = meta["transitions_written"] > meta["capacity"]
    oldest = {a: int(episode_ids[actor_of == a].min()) for a in set(actor_of.tolist())} if wrapped else {}
    return lambda actor, episode: (actor, episode) in held or episode < oldest.get(actor, -1)



def episode_curves(run_dir: Path) -> dict[str, Any] | None:
    """The actors' episodes (all stores under ``run_dir/episodes``) in the order they were written:
    ``env_steps`` (cumulative, at each episode's end), ``success`` (0/1) and ``return`` (sum of rewards), each
    (E,); None when there are none."""
    import numpy as np

    received = received_episodes(run_dir)
    episodes = []
    for store_dir in sorted((run_dir / "episodes").glob("*")):
        for path in EpisodeStore(store_dir).paths():
            with np.load(path) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                episode_return = float(np.sum(data["reward"]))
            if received is None or received(meta["actor_id"], int(meta["episode_id"])):
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


def describe_start(cfg: Any, run_dir: Path, had_config: bool) -> str:
    """One line saying what this run starts from: a checkpoint, the episodes on disk, or nothing."""
    from robot_rl.checkpoint import Checkpointer

    episodes = sum(len(EpisodeStore(d)) for d in sorted((run_dir / "episodes").glob("*")) if d.is_dir())
    latest = Checkpointer(run_dir).latest() if cfg.learner.resume else None
    if latest is not None:
        updates = latest.name.rsplit("-", 1)[-1].lstrip("0") or "0"
        return (f"resuming {run_dir} from checkpoint {latest.name} ({updates} updates); the actors' "
                f"{episodes} stored episodes stay, and what they had not sent is resent from spill/")
    if episodes and cfg.learner.resume:
        return (f"resuming {run_dir}: no checkpoint yet, so the learner rebuilds replay from the {episodes} "
                f"episodes in {run_dir / 'episodes'}")
    if had_config:
        return f"{run_dir} has no checkpoint and no episodes yet: starting it from the beginning"
    return f"new run in {run_dir}"


def _changed_settings(old_yaml: str, cfg: Any) -> list[str]:
    """``key: old -> new`` for settings that differ from the config an earlier session of this run saved."""
    from omegaconf import OmegaConf

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    old = flat(OmegaConf.to_container(OmegaConf.create(old_yaml)))
    new = flat(to_dict(cfg))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _supervise(learner: subprocess.Popen, actors: list[subprocess.Popen], actor_args: Any, logs: Path,
               progress: TrainProgress) -> None:
    """Wait for the learner. Restart an actor that crashed (its spill directory resends what it held) unless
    the learner is finishing; once every actor has exited (the learner's budget reached, or
    ``actor.max_env_steps`` done), stop the learner."""
    learner_stopped = False
    while learner.poll() is None:
        time.sleep(0.5)
        progress.refresh()
        finishing = progress.phase in ("drain", "done")
        for i, actor in enumerate(actors):
            if actor.poll() is not None and actor.returncode != 0 and not finishing:
                log.warning("actor-%d exited with %d; restarting it (see %s)", i, actor.returncode,
                            logs / f"actor-{i}.log")
                actors[i] = _spawn(actor_args(i), logs / f"actor-{i}.log")
        if not learner_stopped and all(a.poll() is not None for a in actors):
            learner_stopped = True
            if progress.phase != "done":  # "done": it is exiting by itself
                log.info("all actors have exited: stopping the learner")
                learner.send_signal(signal.SIGTERM)


def _raise_interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt(signal.Signals(signum).name)


def record_expert_demos(cfg: Any, run_dir: Path, progress: TrainProgress | None = None) -> Path | None:
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
        if progress is not None:
            progress.set_phase("demos", have, cfg.num_demos)
        log.info("recording %d scripted-expert demos into %s", cfg.num_demos - have, demo_dir)
        generate_demos(cfg, cfg.num_demos - have, demo_dir,
                       on_episode=None if progress is None else
                       lambda n: progress.set_phase("demos", have + n, cfg.num_demos))
    return demo_dir


def train(cfg: Any) -> int:
    from robot_rl.evaluate import evaluate_checkpoint

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.yaml"
    had_config = config_path.exists()
    if had_config:
        changed = _changed_settings(config_path.read_text(), cfg)
        if changed:
            log.warning("settings differ from the earlier session of this run: %s", "; ".join(changed))
    log.info(describe_start(cfg, run_dir, had_config))
    save_resolved(cfg, config_path)
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
    # SIGTERM/SIGHUP to train take the same orderly path as Ctrl-C (the children checkpoint and store). SIGINT is
    # set too: a process started in the background by a non-interactive shell inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler (Ctrl-C or `kill -INT` would do nothing).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)
    progress = TrainProgress(run_dir, cfg.learner.max_env_steps, live=None if cfg.logger.progress else False)
    learner, actors = None, []
    t0 = time.monotonic()
    try:
        with progress:
            demo_dir = record_expert_demos(cfg, run_dir, progress)
            extra = [f"learner.demos={demo_dir}"] if demo_dir is not None else []
            progress.set_phase("starting")
            learner_threads = max(1, (os.cpu_count() or 1) - cfg.num_actors)
            learner = _spawn(["learner", "--config", str(config_path), *extra, *extra_common],
                             logs / "learner.log", threads=learner_threads)
            actor_args = lambda i: ["actor", "--config", str(config_path), f"actor.actor_id=actor-{i}",
                                    *extra_common]
            actors = [_spawn(actor_args(i), logs / f"actor-{i}.log") for i in range(cfg.num_actors)]
            log.info("learner pid %d, actor pids %s; logs in %s", learner.pid, [a.pid for a in actors], logs)
            if cfg.dashboard.enabled:  # the learner starts the web server; its URL (with its token) goes here
                from robot_rl.dashboard.feed import announce_url

                announce_url(run_dir)
            _supervise(learner, actors, actor_args, logs, progress)
    except KeyboardInterrupt as exc:
        log.info("interrupted (%s): the learner checkpoints, the actors store their partial episodes; resume "
                 "with `robot-rl train run_dir=%s`", str(exc) or "SIGINT", run_dir)
        return 130
    finally:
        _stop_all([(p, 60.0 if p is learner else 15.0) for p in [learner, *actors] if p is not None])
    if learner.returncode != 0:
        log.error("learner failed with exit code %s; see %s", learner.returncode, logs / "learner.log")
        return 1
    log.info("training took %.0fs; evaluating", time.monotonic() - t0)
    plots: list[Path | None] = []

    def write_results(metrics: dict[str, Any]) -> None:
        # Before the video is encoded: a video that fails (or a run killed while encoding) keeps these.
        (run_dir / "eval.json").write_text(json.dumps(metrics))
        plots.append(plot_learning_curve(run_dir))

    try:
        with progress:
            progress.set_phase("final_eval", 0, cfg.eval_episodes)
            result = evaluate_checkpoint(
                run_dir, cfg.eval_episodes, str(run_dir / "eval.mp4"), video_episodes=cfg.eval_video_episodes,
                on_episode=lambda n: progress.set_phase("final_eval", n, cfg.eval_episodes),
                on_metrics=write_results)
    except KeyboardInterrupt:
        log.info("interrupted during the final evaluation; training is complete and checkpointed: evaluate "
                 "later with `robot-rl eval checkpoint=%s`", run_dir)
        return 130
    (run_dir / "eval.json").write_text(json.dumps(result))  # now with the video's path, when one was written
    log.info("final success rate %.2f, mean return %.3g over %d episodes; plot %s; video %s",
             result["success_rate"], result["mean_return"], result["episodes"], plots[-1] if plots else None,
             result.get("video", "none"))
    return 0
