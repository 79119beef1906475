"""Our v3.0 export read the way LeRobot 0.4's ``LeRobotDataset`` reads a local folder: ``pd.read_parquet`` of
``meta/tasks.parquet`` (task text as the index), ``datasets.Dataset.from_parquet`` of the episode index and of
the frame data with the HF features LeRobot derives from ``info.json``, and frames decoded at
``from_timestamp + timestamp``. Skipped unless ``datasets`` and ``pandas`` are installed (LeRobot's own
dependencies, not ours)."""
from __future__ import annotations

import json

import numpy as np
import pytest

datasets = pytest.importorskip("datasets", reason="needs HF datasets (a LeRobot dependency) for this check")
pd = pytest.importorskip("pandas", reason="needs pandas (a LeRobot dependency) for this check")

from synthetic import specs, write_run  # noqa: E402
from robot_rl.datasets.common import VideoReader  # noqa: E402
from robot_rl.datasets.lerobot_export import export_lerobot  # noqa: E402


def hf_features(features: dict) -> "datasets.Features":
    """LeRobot's ``get_hf_features_from_features``: scalars Value, vectors Sequence(length=D), videos skipped."""
    out = {}
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        if list(ft["shape"]) == [1]:
            out[key] = datasets.Value(dtype=ft["dtype"])
        else:
            out[key] = datasets.Sequence(length=ft["shape"][0], feature=datasets.Value(dtype=ft["dtype"]))
    return datasets.Features(out)


def test_export_loads_like_lerobot_loads_it(tmp_path) -> None:
    obs_spec, action_spec = specs()
    episodes = write_run(tmp_path / "run", obs_spec, action_spec, episodes=3, steps=8)
    export_lerobot(tmp_path / "run", tmp_path / "lr", fps=10, specs=(obs_spec, action_spec))
    root = tmp_path / "lr"
    info = json.loads((root / "meta/info.json").read_text())
    tasks = pd.read_parquet(root / "meta/tasks.parquet")
    tasks.index.name = "task"
    for ep in episodes:
        assert ep.task in tasks.index  # LeRobot's get_task_index: task text -> index
    meta = datasets.Dataset.from_parquet([str(p) for p in sorted((root / "meta/episodes").glob("*/*.parquet"))])
    data = datasets.Dataset.from_parquet([str(p) for p in sorted((root / "data").glob("*/*.parquet"))],
                                         features=hf_features(info["features"]))
    assert len(data) == info["total_frames"] and len(meta) == info["total_episodes"]
    for ep_idx, ep in enumerate(episodes):
        row = meta[ep_idx]
        first = data[row["dataset_from_index"]]
        assert first["episode_index"] == ep_idx and first["frame_index"] == 0
        assert np.allclose(first["observation.state"], ep.frames["state"][0])
        assert tasks.iloc[first["task_index"]].name == ep.task
        key = "observation.images.front"
        path = root / info["video_path"].format(video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
                                               file_index=row[f"videos/{key}/file_index"])
        last = data[row["dataset_to_index"] - 1]
        reader = VideoReader(path)
        frame = reader.frames_at(np.array([row[f"videos/{key}/from_timestamp"] + last["timestamp"]]), 1e-4, "")
        reader.close()
        assert np.abs(frame[0].astype(int) - ep.frames["images/front"][-1]).mean() < 4
