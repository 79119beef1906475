"""Writes a LeRobotDataset in the v2.1 layout as LeRobot 0.3 recorded it (one parquet and one mp4 per episode and
camera, ``meta/episodes.jsonl``, ``meta/tasks.jsonl``): rows are (observation t, action t, next.reward, next.done)
and the observation after the last action is not stored. Only the tests use it (we export v3.0)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robot_rl.datasets.common import encode_video
from robot_rl.types import Episode

DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def write_v21(root: Path, episodes: list[Episode], fps: int, camera_names: dict[str, str],
              images_in_parquet: bool = False, success_column: bool = False) -> None:
    """``camera_names``: our obs key (``images/front``) -> dataset feature (``observation.images.top``).
    ``images_in_parquet``: ``image`` features (PNG bytes in the parquet) instead of ``video`` ones.
    ``success_column``: a ``next.success`` feature (true on a successful episode's last row), as LeRobot's sim
    datasets have."""
    import cv2

    root = Path(root)
    (root / "meta").mkdir(parents=True)
    tasks = sorted({ep.task for ep in episodes})
    first = episodes[0]
    s_dim, a_dim = first.frames["state"].shape[1], first.action.shape[1]
    features = {"observation.state": {"dtype": "float32", "shape": [s_dim], "names": None},
                "action": {"dtype": "float32", "shape": [a_dim], "names": [f"m{i}" for i in range(a_dim)]},
                "next.reward": {"dtype": "float32", "shape": [1], "names": None},
                "next.done": {"dtype": "bool", "shape": [1], "names": None}}
    for key, feature in camera_names.items():
        h, w, c = first.frames[key].shape[1:]
        features[feature] = {"dtype": "image" if images_in_parquet else "video", "shape": [h, w, c],
                             "names": ["height", "width", "channels"]}
    if success_column:
        features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                        ("index", "int64"), ("task_index", "int64")):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    index = 0
    lines = []
    for e, ep in enumerate(episodes):
        n = len(ep)  # one row per step: the final observation is dropped, as LeRobot records
        fmt = {"episode_chunk": 0, "episode_index": e}
        done = np.zeros(n, bool)
        done[-1] = True
        table = pa.table({
            "observation.state": pa.array(list(ep.frames["state"][:n]), pa.list_(pa.float32())),
            "action": pa.array(list(ep.action), pa.list_(pa.float32())),
            "next.reward": pa.array(ep.reward), "next.done": pa.array(done),
            "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(n)), "episode_index": pa.array(np.full(n, e)),
            "index": pa.array(np.arange(index, index + n)),
            "task_index": pa.array(np.full(n, tasks.index(ep.task)))})
        if success_column:
            table = table.append_column("next.success", pa.array(done & ep.success))
        if images_in_parquet:  # HF datasets' Image(): a {bytes, path} struct per row
            for key, feature in camera_names.items():
                png = [{"bytes": cv2.imencode(".png", f[..., ::-1])[1].tobytes(), "path": None}
                       for f in ep.frames[key][:n]]
                table = table.append_column(feature, pa.array(png, pa.struct([("bytes", pa.binary()),
                                                                              ("path", pa.string())])))
        path = root / DATA.format(**fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        for key, feature in ({} if images_in_parquet else camera_names).items():
            vpath = root / VIDEO.format(video_key=feature, **fmt)
            vpath.parent.mkdir(parents=True, exist_ok=True)
            encode_video(vpath, iter(ep.frames[key][:n]), fps)
        lines.append(json.dumps({"episode_index": e, "tasks": [ep.task], "length": n}))
        index += n
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta" / "tasks.jsonl").write_text("\n".join(json.dumps({"task_index": i, "task": t})
                                                          for i, t in enumerate(tasks)) + "\n")
    info = {"codebase_version": "v2.1", "robot_type": "test", "total_episodes": len(episodes), "total_frames": index,
            "total_tasks": len(tasks), "total_videos": len(episodes) * len(camera_names), "total_chunks": 1,
            "chunks_size": 1000, "fps": fps, "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA,
            "video_path": None if images_in_parquet else VIDEO, "features": features}
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
