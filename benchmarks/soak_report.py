"""Figures of a finished ``benchmarks/soak.py`` run: what the actors stored vs what the learner's replay holds,
restarts, memory growth, control-loop periods and the weights taken after each learner restart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

WARMUP_S = 20.0       # RSS samples of a process's first seconds (imports, first allocations) are not growth
MIN_RSS_SPAN_S = 30.0  # a slope needs at least this much post-warm-up time
STARTUP_S = 5.0       # control periods of an actor's first seconds (first weights, first episode) are skipped


def _store_ids(run_dir: Path, actors: int) -> set[tuple[str, int, int]]:
    from robot_rl.episode_store import EpisodeStore

    ids = set()
    for i in range(actors):
        for ep in EpisodeStore(run_dir / "episodes" / f"actor-{i}").episodes():
            ids.update((ep.actor_id, ep.episode_id, s) for s in range(len(ep)))
    return ids


def _replay_and_spill_ids(run_dir: Path, actors: int) -> tuple[list[tuple[str, int, int]], set[tuple[str, int, int]]]:
    """Rows of the final checkpoint's online replay, and transitions still waiting in the actors' spill
    directories (a next run of that actor resends them: not lost)."""
    from robot_rl.checkpoint import Checkpointer
    from robot_rl.config import load_resolved
    from robot_rl.registry import env_specs
    from robot_rl.replay import ReplayBuffer
    from robot_rl.specs import spec_hash
    from robot_rl.transport import wire
    from robot_rl.transport.pending import read_frames

    cfg = load_resolved(run_dir / "config_learner.yaml", [])
    obs_spec, action_spec = env_specs(cfg)
    latest = Checkpointer(run_dir).latest()
    replay = ReplayBuffer(obs_spec, action_spec, cfg.replay.capacity)
    replay.load(latest / "replay_online")
    spilled = set()
    for i in range(actors):
        for path in sorted((run_dir / "spill" / f"actor-{i}").glob("*.chunk")):
            frames = read_frames(path)
            _, header = wire.unpack_header(frames[0])
            chunk = wire.decode_chunk(header, frames[1:], obs_spec, action_spec, spec_hash(obs_spec, action_spec))
            spilled.update((chunk.actor_id, int(e), int(s)) for e, s in zip(chunk.batch.episode_id, chunk.batch.step))
    return list(replay.iter_ids()), spilled


def _events(soak: Any) -> list[dict]:
    out = []
    for proc in soak.procs:
        path = Path(f"{proc.trace}.events") if proc.trace else None
        if path is not None and path.exists():
            out += [dict(json.loads(line), role=proc.role) for line in path.read_text().splitlines() if line]
    return sorted(out, key=lambda e: e["t"])


def _learner_runs(soak: Any, events: list[dict]) -> list[dict]:
    """Per learner process after the first: its kill/restart times, when actors first took its weights."""
    learners = [p for p in soak.procs if p.role == "learner"]
    first_seen: dict[str, dict] = {}
    for e in events:
        first_seen.setdefault(e["incarnation"], e)
    incarnations = sorted(first_seen.values(), key=lambda e: e["t"])
    runs = []
    for k, proc in enumerate(learners[1:], start=1):
        killed = learners[k - 1].killed_at
        taken = next((e for e in incarnations if e["t"] >= proc.started), None)
        before = [e["version"] for e in events if e["t"] < proc.started]
        runs.append({"killed_at": killed, "restarted_at": proc.started,
                     "previous_learner_max_version": max(before) if before else None,
                     "weights_version_taken": None if taken is None else taken["version"],
                     "taken_s_after_restart": None if taken is None else round(taken["t"] - proc.started, 2),
                     "outage_end": taken["t"] if taken else soak.stopped_at})
    return runs


def _periods(soak: Any, outages: list[tuple[float, float]], exclude: dict[str, list[tuple[float, float]]]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Control periods (ms) of every actor process, split into (learner up, learner down)."""
    normal, outage = [], []
    for proc in soak.procs:
        path = Path(f"{proc.trace}.ticks") if proc.trace else None
        if path is None or not path.exists():
            continue
        ticks = np.fromfile(path, np.float64)
        if len(ticks) < 2:
            continue
        ends, periods = ticks[1:], np.diff(ticks) * 1e3
        keep = ends > proc.started + STARTUP_S
        for a, b in exclude.get(proc.role, []):
            keep &= ~((ends >= a) & (ends <= b))
        down = np.zeros_like(keep)
        for a, b in outages:
            down |= (ends >= a) & (ends <= b)
        normal.append(periods[keep & ~down])
        outage.append(periods[keep & down])
    return (np.concatenate(normal) if normal else np.zeros(0)), (np.concatenate(outage) if outage else np.zeros(0))


def _rss_slopes(soak: Any, events: list[dict]) -> dict[str, float]:
    """MB/min of each process after its warm-up, which counts from when it started working: an actor's first
    control step, a learner's first weights taken by an actor (imports take long on a busy machine)."""
    slopes = {}
    for n, proc in enumerate(soak.procs):
        begin = proc.started
        ticks = Path(f"{proc.trace}.ticks") if proc.trace else None
        if ticks is not None and ticks.exists() and ticks.stat().st_size >= 8:
            begin = float(np.fromfile(ticks, np.float64, count=1)[0])
        elif proc.role == "learner":
            begin = next((e["t"] for e in events if e["t"] >= proc.started), begin)
        samples = [(t, mb) for t, mb in proc.rss if t >= begin + WARMUP_S]
        if len(samples) >= 5 and samples[-1][0] - samples[0][0] >= MIN_RSS_SPAN_S:
            t, mb = np.asarray(samples).T
            slopes[f"{proc.role}#{n}"] = float(np.polyfit((t - t[0]) / 60.0, mb, 1)[0])
    return slopes


def _p99(x: np.ndarray) -> float | None:
    return round(float(np.percentile(x, 99)), 1) if len(x) else None


def _log_count(soak: Any, role: str, text: str) -> int:
    return sum(p.read_text(errors="replace").count(text) for p in soak.logs.glob(f"{role}.*.log"))


def figures(soak: Any) -> dict:
    args = soak.args
    stored = _store_ids(soak.run_dir, args.actors)
    replay_ids, spilled = _replay_and_spill_ids(soak.run_dir, args.actors)
    held = set(replay_ids)
    events = _events(soak)
    runs = _learner_runs(soak, events)
    outages = [(r["killed_at"], r["outage_end"]) for r in runs]
    marks = dict((what, t) for t, what in soak.marks)
    exclude = {}
    if "disk full actor-3" in marks:  # its backpressure holds are reported on their own
        exclude["actor-3"] = [(marks["disk full actor-3"], marks.get("disk free actor-3", soak.stopped_at) + 5)]
    normal, outage = _periods(soak, outages, exclude)
    slopes = _rss_slopes(soak, events)
    first: dict[str, Any] = {}
    for p in soak.procs:
        first.setdefault(p.role, p)
    actor_restarts = [p for p in soak.procs if p.role != "learner" and p is not first[p.role]]
    survived = sum(1 for p in actor_restarts if p.trace and Path(f"{p.trace}.ticks").exists()
                   and Path(f"{p.trace}.ticks").stat().st_size >= 16)
    survived += sum(1 for r in runs if r["weights_version_taken"] is not None)
    return {
        "produced": len(stored), "in_replay": len(stored & held), "lost": len(stored - held - spilled),
        "duplicated": len(replay_ids) - len(held), "waiting_in_spill": len(stored & spilled - held),
        "in_replay_unstored": len(held - stored),  # steps of episodes a kill -9 cut short (never stored)
        "restarts_survived": survived, "restarts": len(actor_restarts) + len(runs),
        "unexpected_exits": soak.unexpected_exits,
        "rss_slope_mb_per_min_max": round(max(slopes.values()), 2) if slopes else None,
        "rss_slope_worst": max(slopes, key=slopes.get) if slopes else None,
        "actor_period_p99_ms_normal": _p99(normal), "actor_period_p99_ms_outage": _p99(outage),
        "actor_period_nominal_ms": round(1e3 / args.control_hz, 1),
        "actor_period_ratio_outage_vs_normal": (round(_p99(outage) / _p99(normal), 3)
                                                if len(outage) and len(normal) else None),
        "weights_after_learner_restart": [{k: r[k] for k in ("weights_version_taken", "taken_s_after_restart",
                                                             "previous_learner_max_version")} for r in runs],
        "spill_full_errors": _log_count(soak, "actor-3", "No space left on device"),
        "backpressure_holds": _log_count(soak, "actor-3", "holding the robot"),
        "network_faults": soak.network, "minutes": args.minutes, "actors": args.actors, "env": args.env,
        "out": str(soak.out),
    }
