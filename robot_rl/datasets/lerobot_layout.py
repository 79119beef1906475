"""Reading a local LeRobotDataset folder, v3.0 or v2.1, without the ``lerobot`` package.

v3.0 (LeRobot >= 0.4): ``meta/info.json`` (``codebase_version: v3.0``, ``fps``, ``features``, path templates
``data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`` and ``videos/{video_key}/chunk-.../file-...mp4``),
``meta/tasks.parquet`` (task string -> ``task_index``), ``meta/episodes/chunk-*/file-*.parquet`` (one row per
episode: ``length``, ``tasks``, ``data/chunk_index``, ``data/file_index``, ``dataset_from_index``,
``dataset_to_index``, ``videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}``). A data file and a
video file each hold many episodes back to back; an episode's frame at ``timestamp`` t is the video frame at
``from_timestamp + t``.

v2.1: one parquet per episode (``data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet``), one mp4
per episode and camera (``videos/chunk-.../<key>/episode_....mp4``, starting at t = 0), ``meta/episodes.jsonl``
and ``meta/tasks.jsonl``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.datasets.common import DatasetError, VideoReader, column_to_numpy

log = logging.getLogger("robot_rl.datasets")
SUPPORTED_VERSIONS = ("v2.1", "v3.0")
VISUAL_DTYPES = ("video", "image")


@dataclass
class EpisodeRef:
    """Where one episode's rows and frames live."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: Path
    video_files: dict[str, Path] = field(default_factory=dict)
    """video feature -> mp4 holding this episode."""
    video_from_s: dict[str, float] = field(default_factory=dict)
    """video feature -> time in that mp4 of the episode's first frame (0 in v2.1)."""


@dataclass
class EpisodeRows:
    """One episode's frames: every requested feature as a ``(length, *shape)`` array, plus task strings."""

    ref: EpisodeRef
    arrays: dict[str, np.ndarray]
    tasks: list[str]
    """Task text of every frame (``task_index`` resolved through the tasks table)."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing (not a LeRobotDataset folder?)") from e
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON: {e}") from e


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing (a v2.1 dataset lists its episodes there)") from e
    out = []
    for i, line in enumerate(lines):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}: line {i + 1} is not valid JSON: {e}") from e
    return out


def read_parquet(path: Path, what: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: missing ({what})") from e
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: not a readable parquet file ({what}): {e}") from e


class LeRobotSource:
    """A LeRobotDataset folder: its metadata, episode index, and per-episode rows and video frames."""

    def __init__(self, root: str | Path, tolerance_s: float = 1e-4) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        self.info = _read_json(self.root / "meta" / "info.json")
        self.version = str(self.info.get("codebase_version", ""))
        if self.version not in SUPPORTED_VERSIONS:
            raise DatasetError(f"{self.root / 'meta/info.json'}: codebase_version {self.version!r} is not one of "
                               f"{SUPPORTED_VERSIONS}")
        for key in ("fps", "features", "data_path"):
            if key not in self.info:
                raise DatasetError(f"{self.root / 'meta/info.json'}: no {key!r}")
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        for name, ft in self.features.items():
            if "dtype" not in ft or "shape" not in ft:
                raise DatasetError(f"{self.root / 'meta/info.json'}: feature {name!r} lacks dtype or shape")
        self.tolerance_s = tolerance_s
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
        self._table_path: Path | None = None
        self._table: Any = None
        self._videos: dict[Path, VideoReader] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def video_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] == "video"]

    @property
    def visual_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] in VISUAL_DTYPES]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.features[key]["shape"])

    def _load_tasks(self) -> dict[int, str]:
        if self.version == "v2.1":
            rows = _read_jsonl(self.root / "meta" / "tasks.jsonl")
            return {int(r["task_index"]): str(r["task"]) for r in rows}
        path = self.root / "meta" / "tasks.parquet"
        if not path.exists():
            return {}
        table = read_parquet(path, "tasks")
        names = table.column_names
        # pandas writes the task strings as the index column "task" (or "__index_level_0__" when unnamed)
        text_col = "task" if "task" in names else "__index_level_0__" if "__index_level_0__" in names else None
        if text_col is None or "task_index" not in names:
            raise DatasetError(f"{path}: expected columns 'task' and 'task_index', got {names}")
        return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(),
                                                table.column(text_col).to_pylist())}

    def _load_episodes(self) -> list[EpisodeRef]:
        if self.version == "v2.1":
            return self._load_episodes_v21()
        paths = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not paths:
            raise DatasetError(f"{self.root / 'meta/episodes'}: no chunk-*/file-*.parquet episode files")
        refs = []
        for path in paths:
            table = read_parquet(path, "episode metadata")
            cols = set(table.column_names)
            need = {"episode_index", "length", "data/chunk_index", "data/file_index"}
            need |= {f"videos/{k}/{c}" for k in self.video_keys
                     for c in ("chunk_index", "file_index", "from_timestamp")}
            if need - cols:
                raise DatasetError(f"{path}: missing columns {sorted(need - cols)}")
            rows = table.select(sorted(need | ({"tasks"} & cols))).to_pylist()
            for r in rows:
                ep = int(r["episode_index"])
                data_file = self.root / self.info["data_path"].format(chunk_index=int(r["data/chunk_index"]),
                                                                      file_index=int(r["data/file_index"]))
                ref = EpisodeRef(ep, int(r["length"]), tuple(r.get("tasks") or ()), data_file)
                for key in self.video_keys:
                    ref.video_files[key] = self.root / self.info["video_path"].format(
                        video_key=key, chunk_index=int(r[f"videos/{key}/chunk_index"]),
                        file_index=int(r[f"videos/{key}/file_index"]))
                    ref.video_from_s[key] = float(r[f"videos/{key}/from_timestamp"])
                refs.append(ref)
        return sorted(refs, key=lambda e: e.index)

    def _load_episodes_v21(self) -> list[EpisodeRef]:
        chunks = int(self.info.get("chunks_size", 1000))
        refs = []
        for r in _read_jsonl(self.root / "meta" / "episodes.jsonl"):
            ep = int(r["episode_index"])
            fmt = {"episode_chunk": ep // chunks, "episode_index": ep}
            ref = EpisodeRef(ep, int(r["length"]), tuple(r.get("tasks") or ()),
                             self.root / self.info["data_path"].format(**fmt))
            for key in self.video_keys:
                ref.video_files[key] = self.root / self.info["video_path"].format(video_key=key, **fmt)
                ref.video_from_s[key] = 0.0
            refs.append(ref)
        return sorted(refs, key=lambda e: e.index)

    # ------------------------------------------------------------------ rows and frames
    def _table_for(self, path: Path) -> Any:
        if self._table_path != path:
            self._table = read_parquet(path, "frame data")
            self._table_path = path
        return self._table

    def read_episode(self, ref: EpisodeRef, keys: list[str]) -> EpisodeRows:
        """The rows of one episode (sorted by ``frame_index``) for the given features; videos decoded at the
        rows' timestamps. Every error names the file and the episode."""
        import pyarrow.compute as pc

        where = f"{ref.data_file}: episode {ref.index}"
        table = self._table_for(ref.data_file)
        missing = [k for k in ["episode_index", "timestamp"] + [k for k in keys if k not in self.video_keys]
                   if k not in table.column_names]
        if missing:
            raise DatasetError(f"{where}: missing columns {missing} (info.json lists {sorted(self.features)})")
        rows = table.filter(pc.equal(table.column("episode_index"), ref.index))
        if rows.num_rows != ref.length:
            raise DatasetError(f"{where}: {rows.num_rows} rows, the episode index says {ref.length}")
        if "frame_index" in rows.column_names:
            rows = rows.take(pc.sort_indices(rows.column("frame_index")))
        timestamps = column_to_numpy(rows.column("timestamp"), (1,), where, "timestamp").astype(np.float64)
        arrays: dict[str, np.ndarray] = {}
        for key in keys:
            if key not in self.features:
                raise DatasetError(f"{self.root / 'meta/info.json'}: no feature {key!r} (has {sorted(self.features)})")
            ft = self.features[key]
            if ft["dtype"] == "video":
                reader = self._video(ref.video_files[key], where)
                frames = reader.frames_at(timestamps + ref.video_from_s[key], self.tolerance_s,
                                          f"{where}, video {key!r}")
                arrays[key] = _check_image_shape(frames, self.shape(key), f"{where}, video {key!r}")
            elif ft["dtype"] == "image":
                arrays[key] = _check_image_shape(_decode_images(rows.column(key), f"{where}, {key!r}"),
                                                 self.shape(key), f"{where}, image {key!r}")
            else:
                arrays[key] = column_to_numpy(rows.column(key), self.shape(key), where, key)
        if "task_index" in rows.column_names:
            idx = column_to_numpy(rows.column("task_index"), (1,), where, "task_index")
            unknown = sorted(set(int(i) for i in idx) - set(self.tasks))
            if unknown:
                raise DatasetError(f"{where}: task_index {unknown} not in the tasks table")
            tasks = [self.tasks[int(i)] for i in idx]
        else:
            tasks = [ref.tasks[0] if ref.tasks else ""] * rows.num_rows
        return EpisodeRows(ref, arrays, tasks)

    def _video(self, path: Path, where: str) -> VideoReader:
        if path not in self._videos:
            if not path.exists():
                raise DatasetError(f"{where}: video file {path} is missing")
            if len(self._videos) >= 8:  # v3.0 episodes come file by file: keep few decoders open
                self._videos.pop(next(iter(self._videos))).close()
            try:
                self._videos[path] = VideoReader(path)
            except DatasetError as e:
                raise DatasetError(f"{where}: {e}") from e
        return self._videos[path]

    def close(self) -> None:
        for reader in self._videos.values():
            reader.close()
        self._videos.clear()


def _check_image_shape(frames: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    # info.json lists image shapes as (H, W, C) (LeRobot's names: height, width, channels)
    if len(shape) == 3 and shape[0] in (1, 3) and shape[2] not in (1, 3):  # a (C, H, W) declaration
        shape = (shape[1], shape[2], shape[0])
    if tuple(frames.shape[1:3]) != tuple(shape[:2]):
        raise DatasetError(f"{where}: frames are {frames.shape[2]}x{frames.shape[1]}, info.json declares "
                           f"{shape[1]}x{shape[0]}")
    return frames


def _decode_images(column: Any, where: str) -> np.ndarray:
    """``image`` features: PNG/JPEG bytes in a ``{bytes, path}`` struct column -> (N, H, W, 3) RGB."""
    import cv2

    out = []
    for i, item in enumerate(column.to_pylist()):
        data = item.get("bytes") if isinstance(item, dict) else item
        image = cv2.imdecode(np.frombuffer(data or b"", np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            raise DatasetError(f"{where}: frame {i}: image bytes do not decode")
        out.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    return np.stack(out)
