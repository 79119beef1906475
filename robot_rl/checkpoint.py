"""Atomic learner checkpoints: a new directory per checkpoint, published by renaming it and then LATEST.

``run_dir/checkpoints/ckpt-<updates>/`` holds ``state.pt`` (algorithm + policy + optimizers + counters +
RNG + transport ledger, loaded with ``weights_only=True``) and ``replay_online/``, ``replay_demo/``. It is
built under a temporary name, fsynced, renamed, and only then is ``LATEST`` atomically rewritten. A crash at
any point leaves the previous checkpoint complete and pointed to; leftovers are cleaned on the next save.

The same name can be saved twice (no update between two periodic checkpoints, e.g. while every actor is
away). The live checkpoint is never deleted before its replacement is durable: the new one is written and
fsynced under ``.tmp-<name>``, the old one is renamed aside to ``.old-<name>``, the new one renamed in, the
directory fsynced, and only then is the old one removed. A crash between the two renames leaves
``.old-<name>`` and no ``<name>``: opening the checkpoint directory renames it back (:meth:`_recover`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from robot_rl.storage import atomic_write_bytes, fsync_dir

log = logging.getLogger("robot_rl.checkpoint")


def rng_state(np_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(np_rng.bit_generator.state)}


def restore_rng(state: dict[str, Any], np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = json.loads(state["numpy"])


class Checkpointer:
    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self._recover()

    def _recover(self) -> None:
        """Finish or undo a same-name replacement a crash interrupted (see the module docstring)."""
        for old in self.root.glob(".old-*"):
            final = self.root / old.name.removeprefix(".old-")
            if (final / "state.pt").exists():  # the replacement made it: the old copy is garbage
                shutil.rmtree(old, ignore_errors=True)
            elif (old / "state.pt").exists():
                if final.exists():
                    shutil.rmtree(final)  # an incomplete directory under the live name (cannot be ours)
                os.replace(old, final)
                fsync_dir(self.root)
                log.warning("restored checkpoint %s after a crash while it was being replaced", final.name)

    def save(self, name: str, state: dict[str, Any], extra_writers: dict[str, Callable[[Path], None]]) -> Path:
        """Write ``state`` (torch-serialisable, no custom classes) and each ``writer(subdir)`` atomically."""
        for stale in self.root.glob(".tmp-*"):  # a crash mid-save on an earlier run
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / name
        tmp = self.root / f".tmp-{name}"
        tmp.mkdir()
        torch.save(state, tmp / "state.pt")
        for sub, writer in extra_writers.items():
            writer(tmp / sub)
        for path in tmp.rglob("*"):
            if path.is_file():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():  # same name saved again: swap, never delete the live one before the new is in place
            old = self.root / f".old-{name}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            fsync_dir(self.root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
            fsync_dir(self.root)
        atomic_write_bytes(self.root / "LATEST", name.encode())
        self._prune(keep_name=name)
        return final

    def _prune(self, keep_name: str) -> None:
        complete = sorted(p for p in self.root.glob("ckpt-*") if p.is_dir())
        for old in complete[: -self.keep]:
            if old.name != keep_name:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The checkpoint LATEST names, or the newest complete one if LATEST is missing or dangling."""
        pointer = self.root / "LATEST"
        if pointer.exists():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / "state.pt").exists():
                return candidate
        complete = sorted(p for p in self.root.glob("ckpt-*") if (p / "state.pt").exists())
        return complete[-1] if complete else None

    @staticmethod
    def load_state(path: Path) -> dict[str, Any]:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
