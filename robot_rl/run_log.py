"""Run logging: wandb (offline unless the user turns it online), a metrics.jsonl file, and a rich console.

``metrics.jsonl`` in the run directory is always written (one JSON object per log call), so plots and tests
never depend on wandb. wandb runs in ``offline`` mode by default: nothing leaves the machine until the user
runs ``wandb sync``; ``logger.wandb=disabled`` turns it off, ``online`` streams live.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

log = logging.getLogger("robot_rl")


def setup_logging(level: int = logging.INFO) -> None:
    """Rich log lines on a terminal; plain one-line records otherwise (``logs/*.log`` of ``robot-rl train``,
    CI), where rich would wrap every message at 80 columns and make the logs hard to grep."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    if any(isinstance(h, RichHandler) or getattr(h, "_robot_rl", False) for h in root.handlers):
        return
    console = Console(stderr=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(rich_tracebacks=False, show_path=False, console=console)
        logging.basicConfig(level=level, format="%(name)s: %(message)s", datefmt="[%X]", handlers=[handler])
    else:
        handler = logging.StreamHandler()
        handler._robot_rl = True  # type: ignore[attr-defined]
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S", handlers=[handler])


class RunLogger:
    def __init__(self, run_dir: str | Path, cfg: Any, job: str, config_dict: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self._metrics = open(self.run_dir / f"metrics_{job}.jsonl", "a", buffering=1)
        self._last_print = 0.0
        self.console = Console(stderr=True, soft_wrap=True)  # one line per record, also in a log file
        self._wandb = None
        if cfg.wandb != "disabled":
            try:
                os.environ.setdefault("WANDB_SILENT", "true")
                import wandb

                self._wandb = wandb.init(project=cfg.project, mode=cfg.wandb, dir=str(self.run_dir),
                                         config=config_dict, job_type=job, reinit="finish_previous")
            except Exception as exc:  # logging must never take the learner down
                log.warning("wandb disabled: %s", exc)

    def log(self, metrics: dict[str, float], step: int, force_print: bool = False) -> None:
        record = {"step": step, "time": time.time(), **metrics}
        self._metrics.write(json.dumps(record) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        now = time.monotonic()
        if self.cfg.progress and (force_print or now - self._last_print >= self.cfg.log_every_s):
            self._last_print = now
            shown = "  ".join(f"[bold]{k}[/]={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
            self.console.print(f"[cyan]step {step}[/]  {shown}", highlight=False)

    def phase(self, name: str, step: int, **counts: float) -> None:
        """Record what the job is doing now (``warm_start``, ``online``, ``evaluation``, ``drain``, ``done``)
        and its own progress (``done``/``total``) in the metrics file only: ``robot-rl train`` shows it."""
        self._metrics.write(json.dumps({"step": step, "time": time.time(), "phase": name, **counts}) + "\n")

    def close(self) -> None:
        self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics_<role>.jsonl`` file, in order; [] when it does not exist yet. A line that does
    not decode (the last one, while a live run is still writing it) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
