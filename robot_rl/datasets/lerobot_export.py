"""Our episodes -> a LeRobotDataset v3.0 folder (``robot-rl data export-lerobot RUN_DIR OUT``).

Layout as LeRobot writes it: ``meta/info.json``, ``meta/stats.json``, ``meta/tasks.parquet``,
``meta/episodes/chunk-000/file-000.parquet``, ``data/chunk-000/file-000.parquet`` and one mp4 per camera
(``videos/observation.images.<cam>/chunk-000/file-000.mp4``, h264 yuv420p) holding many episodes back to back.
An episode of T steps becomes T + 1 rows: row t < T holds observation t, ``action`` t, ``next.reward`` /
``next.done`` of step t; row T holds the final observation, repeats the last action and is flagged
``final_observation`` (LeRobot trains on it as one more frame; our import turns it back into ``next_obs``).
Extra columns: ``policy_action``, ``intervened``, ``next.terminated``, ``next.truncated`` and the episode's
``success`` label on every row; ``meta/robot_rl.json`` keeps our ObsSpec/ActionSpec.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from robot_rl.datasets.common import DatasetError, VideoWriter, atomic_output_dir
from robot_rl.datasets.lerobot_import import FINAL_OBSERVATION, SPEC_FILE
from robot_rl.datasets.lerobot_stats import histogram_stats, image_histogram, to_json, vector_stats
from robot_rl.episode_store import EpisodeStore
from robot_rl.specs import IMAGE_PREFIX, ActionSpec, ObsSpec, spec_hash
from robot_rl.types import Episode

log = logging.getLogger("robot_rl.datasets")
CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
INDEX_FEATURES = {"timestamp": "float32", "frame_index": "int64", "episode_index": "int64", "index": "int64",
                  "task_index": "int64"}


def episode_files(run_dir: str | Path) -> list[Path]:
    """Episode files of a run directory (``episodes/<actor>/*.npz``), or of one episode store."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DatasetError(f"{run_dir}: no such directory")
    files = sorted(run_dir.glob("*.npz"))
    if not files:
        files = sorted(run_dir.glob("episodes/*/*.npz"))
    if not files:
        raise DatasetError(f"{run_dir}: no episodes (*.npz, or episodes/<actor>/*.npz in a run directory)")
    return files


def feature_name(obs_key: str) -> str:
    """``state`` -> ``observation.state``; ``images/front`` -> ``observation.images.front``."""
    return "observation." + obs_key.replace("/", ".")


def _features(first: Episode, fps: int, action_spec: ActionSpec | None) -> dict[str, dict[str, Any]]:
    a_dim = int(np.prod(first.action.shape[1:]))
    a_names = list(action_spec.names) if action_spec is not None and action_spec.names else \
        [f"a{i}" for i in range(a_dim)]
    feats: dict[str, dict[str, Any]] = {}
    for key, frames in sorted(first.frames.items()):
        if key.startswith(IMAGE_PREFIX):
            h, w, c = frames.shape[1:]
            feats[feature_name(key)] = {
                "dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
                "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                         "video.fps": fps, "video.channels": c, "has_audio": False, "is_depth_map": False}}
        else:
            dim = int(np.prod(frames.shape[1:]))
            feats[feature_name(key)] = {"dtype": str(frames.dtype), "shape": [dim],
                                        "names": [f"{key}_{i}" for i in range(dim)]}
    feats["action"] = {"dtype": "float32", "shape": [a_dim], "names": a_names}
    feats["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("next.done", "next.terminated", "next.truncated", "intervened", "success", FINAL_OBSERVATION):
        feats[name] = {"dtype": "bool", "shape": [1], "names": None}
    feats["policy_action"] = {"dtype": "float32", "shape": [a_dim], "names": a_names}
    for name, dtype in INDEX_FEATURES.items():
        feats[name] = {"dtype": dtype, "shape": [1], "names": None}
    for ft in feats.values():
        if ft["dtype"] != "video":
            ft["fps"] = fps
    return feats


def _rows(ep: Episode, episode_index: int, start: int, task_index: int, fps: int) -> dict[str, np.ndarray]:
    """The T + 1 rows of one episode, non-image features only."""
    n = len(ep) + 1
    last = lambda x, fill: np.concatenate([x, np.asarray([fill], x.dtype)])  # noqa: E731
    rows = {feature_name(k): v.reshape(n, -1) for k, v in ep.frames.items() if not k.startswith(IMAGE_PREFIX)}
    action = ep.action.reshape(len(ep), -1)
    policy_action = ep.policy_action.reshape(len(ep), -1)
    rows.update({
        "action": np.concatenate([action, action[-1:]]).astype(np.float32),
        "next.reward": last(ep.reward.astype(np.float32), 0.0),
        "next.done": last(ep.terminated | ep.truncated, True),
        "next.terminated": last(ep.terminated.astype(bool), False),
        "next.truncated": last(ep.truncated.astype(bool), False),
        "intervened": last(ep.intervened.astype(bool), False),
        "success": np.full(n, bool(ep.success)),
        FINAL_OBSERVATION: np.arange(n) == n - 1,
        "policy_action": np.concatenate([policy_action, policy_action[-1:]]).astype(np.float32),
        "timestamp": (np.arange(n) / fps).astype(np.float32),
        "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, episode_index, np.int64),
        "index": np.arange(start, start + n, dtype=np.int64),
        "task_index": np.full(n, task_index, np.int64),
    })
    return rows


def _arrow_table(rows: dict[str, np.ndarray], features: dict[str, dict[str, Any]]) -> Any:
    import pyarrow as pa

    columns = {}
    for name, ft in features.items():
        if ft["dtype"] == "video":
            continue
        values = rows[name]
        if ft["shape"] == [1]:
            columns[name] = pa.array(values.reshape(-1))
        else:  # a vector per row: fixed-size list (HF datasets' Sequence(length=D))
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), int(ft["shape"][0]))
    return pa.table(columns)


def _tasks_table(tasks: list[str]) -> Any:
    """``meta/tasks.parquet`` as pandas writes it (LeRobot reads it with ``pd.read_parquet``): the task text is
    the index column ``task``, next to ``task_index``."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["task"], "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                                                        "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _read_episodes(files: list[Path]) -> Iterator[tuple[Path, Episode]]:
    for path in files:
        try:
            yield path, EpisodeStore.read(path)
        except Exception as e:  # a corrupt npz: name it, never skip silently in an export
            raise DatasetError(f"{path}: unreadable episode: {e}") from e


def export_lerobot(run_dir: str | Path, out: str | Path, fps: int, specs: tuple[ObsSpec, ActionSpec] | None = None,
                   crf: int = 18, robot_type: str | None = None, max_frames_per_file: int = 100_000
                   ) -> dict[str, Any]:
    """Write every episode under ``run_dir`` as a LeRobotDataset v3.0 at ``out`` (atomically).

    ``specs``, when known (the run's env), are checked against the episodes' spec hash and stored in
    ``meta/robot_rl.json`` so an import gets the very same spec back. Returns counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = episode_files(run_dir)
    fps = int(fps)
    if fps <= 0:
        raise DatasetError(f"fps must be a positive integer, got {fps}")
    with atomic_output_dir(out) as root:
        features: dict[str, dict[str, Any]] | None = None
        first_hash, first_path = "", Path()
        cams: list[str] = []
        obs_keys: list[str] = []
        tasks: dict[str, int] = {}
        episode_rows: list[dict[str, Any]] = []
        numeric: dict[str, list[np.ndarray]] = {}
        images: dict[str, tuple[np.ndarray, int]] = {}  # camera feature -> (pixel histogram, frames)
        total = 0
        file_index, file_frames = 0, 0
        writer: Any = None
        videos: dict[str, VideoWriter] = {}
        try:
            for episode_index, (path, ep) in enumerate(_read_episodes(files)):
                if features is None:
                    first_hash, first_path = ep.spec_hash, path
                    if specs is not None and spec_hash(*specs) != ep.spec_hash:
                        raise DatasetError(f"{path}: recorded with spec {ep.spec_hash}, the configured env's spec "
                                           f"is {spec_hash(*specs)}: pass the env the episodes came from")
                    features = _features(ep, fps, specs[1] if specs else None)
                    cams = sorted(k for k in ep.frames if k.startswith(IMAGE_PREFIX))
                    obs_keys = sorted(ep.frames)
                elif ep.spec_hash != first_hash:
                    raise DatasetError(f"{path}: spec {ep.spec_hash} differs from {first_path}'s {first_hash}: "
                                       f"export one spec at a time")
                n = len(ep) + 1
                if file_frames and file_frames + n > max_frames_per_file:  # roll over to the next data/video file
                    writer.close()
                    for v in videos.values():
                        v.close()
                    writer, videos, file_index, file_frames = None, {}, file_index + 1, 0
                chunk, fidx = divmod(file_index, CHUNKS_SIZE)
                task_index = tasks.setdefault(ep.task, len(tasks))
                rows = _rows(ep, episode_index, total, task_index, fps)
                table = _arrow_table(rows, features)
                if writer is None:
                    data_path = root / DATA_PATH.format(chunk_index=chunk, file_index=fidx)
                    data_path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(data_path, table.schema, compression="snappy")
                writer.write_table(table)
                meta: dict[str, Any] = {
                    "episode_index": episode_index, "tasks": [ep.task], "length": n,
                    "data/chunk_index": chunk, "data/file_index": fidx,
                    "dataset_from_index": total, "dataset_to_index": total + n}
                ep_stats = {name: vector_stats(v) for name, v in rows.items()}
                for key in cams:
                    vkey = feature_name(key)
                    if vkey not in videos:
                        vpath = root / VIDEO_PATH.format(video_key=vkey, chunk_index=chunk, file_index=fidx)
                        vpath.parent.mkdir(parents=True, exist_ok=True)
                        videos[vkey] = VideoWriter(vpath, fps, crf)
                    start = videos[vkey].frames
                    for frame in ep.frames[key]:
                        videos[vkey].add(frame)
                    meta.update({f"videos/{vkey}/chunk_index": chunk, f"videos/{vkey}/file_index": fidx,
                                 f"videos/{vkey}/from_timestamp": start / fps,
                                 f"videos/{vkey}/to_timestamp": (start + n) / fps})
                    hist = image_histogram(ep.frames[key])
                    ep_stats[vkey] = histogram_stats(hist, n)
                    total_hist, total_n = images.get(vkey, (0, 0))
                    images[vkey] = (total_hist + hist, total_n + n)
                meta.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                             "robot_rl/actor_id": ep.actor_id, "robot_rl/episode_id": ep.episode_id})
                for feature, stats in ep_stats.items():
                    for stat, value in stats.items():
                        meta[f"stats/{feature}/{stat}"] = np.asarray(value).tolist()
                episode_rows.append(meta)
                for name, v in rows.items():
                    numeric.setdefault(name, []).append(v)
                total += n
                file_frames += n
        finally:
            if writer is not None:
                writer.close()
            for v in videos.values():
                v.close()
        assert features is not None
        stats = {name: vector_stats(np.concatenate(v)) for name, v in numeric.items()}
        stats.update({name: histogram_stats(hist, count) for name, (hist, count) in images.items()})
        episodes_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
        pq.write_table(_tasks_table(list(tasks)), root / "meta" / "tasks.parquet")
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episode_rows),
                "total_frames": total, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
                "splits": {"train": f"0:{len(episode_rows)}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if cams else None, "features": features}
        (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        (root / "meta" / "stats.json").write_text(json.dumps(to_json(stats), indent=4))
        spec_doc: dict[str, Any] = {"spec_hash": first_hash, "source": str(run_dir),
                                    "observation_features": {k: feature_name(k) for k in obs_keys}}
        if specs is not None:
            spec_doc.update(obs_spec=specs[0].to_dict(), action_spec=specs[1].to_dict())
        (root / "meta" / SPEC_FILE).write_text(json.dumps(spec_doc, indent=1))
    return {"episodes": len(episode_rows), "frames": total, "cameras": [feature_name(c) for c in cams],
            "tasks": len(tasks), "out": str(out)}
