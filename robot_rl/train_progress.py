"""What ``robot-rl train`` shows while it runs: the current phase and that phase's own progress.

Phases, in order: ``demos`` (scripted-expert demos recorded by ``train`` itself), ``warm_start`` (the learner's
offline updates on the demos), ``online`` (env steps against ``learner.max_env_steps``), ``evaluation`` (the
learner's periodic deterministic episodes), ``drain`` (the actors' last chunks are committed), ``final_eval``
(``train``'s closing evaluation and video). The learner reports its phases as ``{"phase": ...}`` records in
``metrics_learner.jsonl`` (:meth:`robot_rl.run_log.RunLogger.phase`); its numeric records feed the counters.

On a terminal a rich bar is redrawn in place. Anywhere else (a log file, CI) a bar would be cut at 80 columns and
repeated as control codes, so plain lines are written instead: one per phase change and one every
``PLAIN_EVERY_S`` seconds.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

PLAIN_EVERY_S = 15.0

# phase -> (label, unit of its progress counter)
PHASES: dict[str, tuple[str, str]] = {
    "starting": ("starting the learner and the actors", ""),
    "demos": ("recording demos", "demos"),
    "warm_start": ("warm start on the demos", "updates"),
    "online": ("online training", "env steps"),
    "evaluation": ("evaluating", "episodes"),
    "drain": ("finishing: committing the actors' last chunks", ""),
    "done": ("learner finished", ""),
    "final_eval": ("final evaluation", "episodes"),
}


def read_new_records(path: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    """Records appended to a JSONL file since the last call (``state`` keeps the offset)."""
    if not path.exists():
        return []
    records = []
    with open(path) as f:
        f.seek(state.get("_offset", 0))
        for line in f:
            if not line.endswith("\n"):
                break  # a line still being written: read it next time
            state["_offset"] = state.get("_offset", 0) + len(line)
            records.append(json.loads(line))
    return records


class TrainProgress:
    """Progress of one ``robot-rl train`` run, fed by the learner's metrics file and by ``train`` itself."""

    def __init__(self, run_dir: Path, max_env_steps: int, live: bool | None = None,
                 stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.path = run_dir / "metrics_learner.jsonl"
        self.max_env_steps = max_env_steps
        self.stream = stream or sys.stderr
        console = Console(file=self.stream)
        self.live = console.is_terminal if live is None else live
        self._file_state: dict[str, Any] = {}
        if self.path.exists():  # a resumed run: only this session's records matter
            self._file_state["_offset"] = self.path.stat().st_size
        self.metrics: dict[str, float] = {}
        self.phase, self.done, self.total = "starting", 0, 0
        self._t0 = time.monotonic()
        self._last_plain = 0.0
        self._last_line = ""
        self._progress = None
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[unit]}"), TimeElapsedColumn(),
                                      TextColumn("{task.fields[info]}"), console=console, transient=False)
            self._task = self._progress.add_task("starting", total=None, unit="", info="")

    def __enter__(self) -> "TrainProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.refresh()
        if self._progress is not None:
            self._progress.stop()
        else:
            self._plain(force=True)

    # ------------------------------------------------------------------------------------------ input
    def set_phase(self, phase: str, done: int = 0, total: int = 0) -> None:
        """``train``'s own phases (demos, final evaluation) and their progress."""
        changed = phase != self.phase
        self.phase, self.done, self.total = phase, int(done), int(total)
        self._show(force=changed)

    def refresh(self) -> None:
        """Fold the learner's new records in and redraw."""
        changed = False
        for record in read_new_records(self.path, self._file_state):
            if "phase" in record:
                changed |= record["phase"] != self.phase
                self.phase = record["phase"]
                self.done, self.total = int(record.get("done", 0)), int(record.get("total", 0))
            else:
                self.metrics.update({k: v for k, v in record.items() if isinstance(v, (int, float))})
        if self.phase == "online":
            # Actors run a little past the budget (pacing slack): the bar stops at the budget, not beyond it.
            steps = int(self.metrics.get("env_steps", 0))
            self.done = min(steps, self.max_env_steps) if self.max_env_steps else steps
            self.total = self.max_env_steps
        self._show(force=changed)

    # ----------------------------------------------------------------------------------------- output
    def info(self) -> str:
        m = self.metrics
        parts = []
        if self.phase not in ("online", "evaluation", "drain", "done"):
            return ""  # train's own phases: the learner's counters are not about them
        if "updates" in m:
            parts.append(f"{int(m['updates'])} updates ({m.get('updates_per_s', 0):.0f}/s)")
        if "eval/success_rate" in m:
            parts.append(f"eval success {m['eval/success_rate']:.0%}")
        return "  ".join(parts)

    def line(self) -> str:
        """The plain-text form: ``[  42s] online training: 1200/8000 env steps  2400 updates (55/s)``."""
        label, unit = PHASES.get(self.phase, (self.phase, ""))
        count = f": {self.done}/{self.total} {unit}" if self.total else (f": {self.done} {unit}" if unit and self.done
                                                                          else "")
        info = self.info()
        return f"[{time.monotonic() - self._t0:5.0f}s] {label}{count}" + (f"  {info}" if info else "")

    def _show(self, force: bool = False) -> None:
        if self._progress is not None:
            label, unit = PHASES.get(self.phase, (self.phase, ""))
            self._progress.update(self._task, description=label, total=self.total or None,
                                  completed=self.done if self.total else 0, unit=unit if self.total else "",
                                  info=self.info())
        else:
            self._plain(force)

    def _plain(self, force: bool = False) -> None:
        now = time.monotonic()
        line = self.line()
        if (force and line.split("] ", 1)[1] != self._last_line) or now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain, self._last_line = now, line.split("] ", 1)[1]
            print(line, file=self.stream, flush=True)
