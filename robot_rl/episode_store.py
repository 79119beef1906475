"""Append-only episode store: one atomically written ``.npz`` file per episode.

Why npz and not zarr: an episode is written once and read whole, so chunked random access buys nothing;
one file per episode written to a temporary name, fsynced and renamed is trivially crash-safe (a zarr
store is a directory of many files with no atomic commit); and npz needs only numpy, so anyone can open a
demo with ``np.load``. Images are stored raw (uint8) or zlib-compressed (``compress=True``: ~5-20x smaller
for rendered frames, slower to write; off by default on the actor's hot path).

File name: ``<actor_id>-<episode_id:08d>.npz``; arrays ``frames/<obs key>`` (T+1 frames), ``action``,
``policy_action``, ``reward``, ``terminated``, ``truncated``, ``intervened`` and a JSON ``meta`` string.
"""
from __future__ import annotations

import io
import json
import logging
import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from robot_rl.storage import atomic_write_bytes, remove_stale_temporaries
from robot_rl.types import Episode

log = logging.getLogger("robot_rl.episodes")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_STEP_FIELDS = ("action", "policy_action", "reward", "terminated", "truncated", "intervened")


class EpisodeStore:
    def __init__(self, directory: str | Path, compress: bool = False, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.compress = compress
        self.fsync = fsync
        remove_stale_temporaries(self.directory)

    def path_for(self, actor_id: str, episode_id: int) -> Path:
        return self.directory / f"{_SAFE.sub('_', actor_id)}-{episode_id:08d}.npz"

    def write(self, episode: Episode) -> Path:
        """Write one episode; refuses to overwrite (append-only: an existing file is never replaced)."""
        path = self.path_for(episode.actor_id, episode.episode_id)
        if path.exists():
            raise FileExistsError(f"{path} exists: episode ids must be unique per actor")
        meta = {"actor_id": episode.actor_id, "episode_id": episode.episode_id, "spec_hash": episode.spec_hash,
                "success": episode.success, "task": episode.task, "length": len(episode),
                "written_at": time.time(), **{"meta": episode.meta}}
        arrays = {f"frames/{k}": v for k, v in episode.frames.items()}
        arrays.update({name: getattr(episode, name) for name in _STEP_FIELDS})
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        buf = io.BytesIO()
        (np.savez_compressed if self.compress else np.savez)(buf, **arrays)
        atomic_write_bytes(path, buf.getbuffer(), fsync=self.fsync)
        return path

    @staticmethod
    def read(path: str | Path, spec_hash: str | None = None) -> Episode:
        """Load one episode; with ``spec_hash`` given, refuse an episode recorded under another spec."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if spec_hash is not None and meta["spec_hash"] != spec_hash:
                raise ValueError(f"{path}: recorded with spec {meta['spec_hash']}, expected {spec_hash}")
            frames = {k[len("frames/"):]: data[k] for k in data.files if k.startswith("frames/")}
            steps = {name: data[name] for name in _STEP_FIELDS}
        episode = Episode(frames=frames, actor_id=meta["actor_id"], episode_id=int(meta["episode_id"]),
                          spec_hash=meta["spec_hash"], success=bool(meta["success"]), task=meta.get("task", ""),
                          meta=meta.get("meta", {}), **steps)
        n = len(episode)
        if any(len(v) != n + 1 for v in frames.values()) or any(len(v) != n for v in steps.values()):
            raise ValueError(f"{path}: inconsistent lengths (corrupt file)")
        return episode

    @staticmethod
    def read_meta(path: str | Path) -> dict:
        """The episode's meta (``spec_hash``, ``success``, ``length``, the recorder's ``meta``...) without its
        arrays: npz members load on access, so a caller that needs one field of many episodes (where each demo
        started) does not read their camera frames."""
        with np.load(path, allow_pickle=False) as data:
            return json.loads(bytes(data["meta"]).decode())

    def paths(self) -> list[Path]:
        return sorted(self.directory.glob("*.npz"))

    def __len__(self) -> int:
        return len(self.paths())

    def episodes(self, spec_hash: str | None = None, skip_bad: bool = True) -> Iterator[Episode]:
        """Stream episodes back in name order. A corrupt file is reported and skipped, never deleted."""
        for path in self.paths():
            try:
                yield self.read(path, spec_hash)
            except Exception as exc:
                if not skip_bad:
                    raise
                log.error("skipping unreadable episode %s: %s", path, exc)

    def reserve_episode_id(self, actor_id: str) -> int:
        """Claim a fresh id at episode *start*: a killed actor's half-sent episode keeps its id, so a
        restarted actor never reuses it (ids are what replay and the learner key transitions by)."""
        marker = self.directory / f".next-{_SAFE.sub('_', actor_id)}"
        # The marker is written before any episode with that id can be stored, so it is never behind the
        # files; without one (an older store) scan the directory once.
        episode_id = int(marker.read_text()) if marker.exists() else self.next_episode_id(actor_id)
        atomic_write_bytes(marker, str(episode_id + 1).encode(), fsync=False)
        return episode_id

    def next_episode_id(self, actor_id: str) -> int:
        """First unused id for ``actor_id`` (a restarted actor continues numbering, never overwrites)."""
        prefix = f"{_SAFE.sub('_', actor_id)}-"
        ids = [int(p.stem[len(prefix):]) for p in self.directory.glob(f"{prefix}*.npz")
               if p.stem[len(prefix):].isdigit()]
        return max(ids) + 1 if ids else 0


def load_demos(directory: str | Path, spec_hash: str) -> list[Episode]:
    """The demonstrations in ``directory`` recorded for this env's spec (``spec_hash``). A directory that does
    not exist is refused (a typo must not become an empty demo buffer); one with no usable episode is warned
    about, loudly, since training then runs without demonstrations."""
    from robot_rl.config_errors import UsageError

    if not Path(directory).is_dir():
        raise UsageError(f"learner.demos={directory}: no such directory")
    store = EpisodeStore(directory)
    episodes = list(store.episodes(spec_hash=spec_hash))
    log.info("loaded %d demo episodes from %s", len(episodes), store.directory)
    if not episodes:
        log.warning("learner.demos=%s has no usable episode for this env's spec: training WITHOUT "
                    "demonstrations", store.directory)
    return episodes
