"""LeRobotDataset export -> import round trips (v3.0 written by us, v2.1 written like LeRobot 0.3 did), the v3.0
layout LeRobot expects, the feature mapping (crop/resize), and bad input."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lerobot_v21 import write_v21
from synthetic import specs, write_run
from robot_rl.datasets.common import DatasetError, VideoReader
from robot_rl.datasets.lerobot_export import export_lerobot
from robot_rl.datasets.lerobot_import import import_lerobot
from robot_rl.datasets.mapping import LeRobotMapping
from robot_rl.episode_store import EpisodeStore
from robot_rl.images import prepare_frame
from robot_rl.specs import ArraySpec, ObsSpec, spec_hash

PSNR_BOUND_DB = 33.0  # h264 crf 18 yuv420p on 32x32 smooth frames measures ~37 dB; chroma subsampling caps it


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@pytest.fixture
def run(tmp_path: Path):
    obs_spec, action_spec = specs()
    episodes = write_run(tmp_path / "run", obs_spec, action_spec, episodes=3, steps=10)
    return tmp_path, obs_spec, action_spec, episodes


def test_v3_roundtrip_gives_identical_arrays_and_images_within_codec_tolerance(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    result = export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    assert result["episodes"] == 3 and result["frames"] == sum(len(e) + 1 for e in episodes)
    imported = import_lerobot(tmp / "lr", tmp / "back", LeRobotMapping(spec="dataset"))
    assert imported["spec_hash"] == spec_hash(obs_spec, action_spec)  # the stored spec comes back exactly
    back = list(EpisodeStore(tmp / "back").episodes(spec_hash=imported["spec_hash"], skip_bad=False))
    assert len(back) == 3
    worst = np.inf
    for ep, got in zip(episodes, back):
        assert np.array_equal(ep.frames["state"], got.frames["state"])
        for name in ("action", "policy_action", "reward", "terminated", "truncated", "intervened"):
            assert np.array_equal(getattr(ep, name), getattr(got, name)), name
        assert (got.success, got.task) == (ep.success, ep.task)
        for key in obs_spec.image_keys:
            assert got.frames[key].shape == ep.frames[key].shape
            worst = min(worst, psnr(ep.frames[key], got.frames[key]))
    print(f"round-trip PSNR (worst episode/camera): {worst:.2f} dB")
    assert worst >= PSNR_BOUND_DB


def test_export_has_the_v3_layout_lerobot_reads(run) -> None:
    import pyarrow.parquet as pq

    tmp, obs_spec, action_spec, episodes = run
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    root = tmp / "lr"
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_episodes"] == 3
    feats = info["features"]
    assert feats["observation.images.front"]["dtype"] == "video"
    assert feats["observation.images.front"]["shape"] == [32, 32, 3]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [6], "names": [f"state_{i}" for i in range(6)],
                                          "fps": 10}
    assert feats["action"]["names"] == ["u0", "u1", "u2"]
    for extra in ("intervened", "policy_action", "next.reward", "next.done", "success"):
        assert extra in feats
    data = pq.read_table(root / info["data_path"].format(chunk_index=0, file_index=0))
    assert data.num_rows == info["total_frames"] == sum(len(e) + 1 for e in episodes)
    assert data.column("index").to_pylist() == list(range(data.num_rows))
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1, 2]
    # episodes follow each other in one mp4 per camera: contiguous [from, to) time ranges
    key = "observation.images.front"
    assert eps[0][f"videos/{key}/from_timestamp"] == 0.0
    for a, b in zip(eps, eps[1:]):
        assert b[f"videos/{key}/from_timestamp"] == pytest.approx(a[f"videos/{key}/to_timestamp"])
        assert b["dataset_from_index"] == a["dataset_to_index"]
    video = root / info["video_path"].format(video_key=key, chunk_index=0, file_index=0)
    import av

    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.name, stream.pix_fmt) == ("h264", "yuv420p")
        assert sum(1 for _ in c.decode(stream)) == info["total_frames"]
    # tasks.parquet as pandas writes it: the task text is the index column
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert sorted(tasks.column("task").to_pylist()) == sorted({e.task for e in episodes})
    stats = json.loads((root / "meta/stats.json").read_text())
    assert np.asarray(stats[key]["mean"]).shape == (3, 1, 1)
    assert np.allclose(stats["action"]["min"], np.concatenate([e.action for e in episodes]).min(0), atol=1e-6)
    assert {"min", "max", "mean", "std", "count", "q01", "q99"} <= set(stats["observation.state"])


def test_v21_import_maps_lerobot_rows_to_steps(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    write_v21(tmp / "v21", episodes, fps=10, camera_names={"images/front": "observation.images.top",
                                                          "images/wrist": "observation.images.wrist"})
    mapping = LeRobotMapping(cameras={"front": "observation.images.top", "wrist": "observation.images.wrist"})
    import_lerobot(tmp / "v21", tmp / "back", mapping, target=(obs_spec, action_spec))
    back = list(EpisodeStore(tmp / "back").episodes(spec_hash=spec_hash(obs_spec, action_spec), skip_bad=False))
    assert len(back) == len(episodes)
    for ep, got in zip(episodes, back):
        n = len(ep)  # the dataset has no observation after the last action: it is the last frame repeated
        assert len(got) == n
        assert np.array_equal(got.frames["state"][:n], ep.frames["state"][:n])
        assert np.array_equal(got.frames["state"][n], ep.frames["state"][n - 1])
        assert np.array_equal(got.action, ep.action) and np.array_equal(got.reward, ep.reward)
        # a task reward on the last step terminates (success); otherwise the recording was cut (truncated)
        assert got.terminated[-1] == ep.success and got.truncated[-1] == (not ep.success)
        assert got.success == ep.success and got.task == ep.task
        assert psnr(ep.frames["images/front"][:n], got.frames["images/front"][:n]) >= PSNR_BOUND_DB


def test_success_column_decides_termination_under_dense_rewards(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    dense = [dataclasses.replace(ep, reward=np.full(len(ep), 0.5, np.float32)) for ep in episodes]  # positive on every step
    write_v21(tmp / "v21", dense, fps=10, camera_names={"images/front": "observation.images.front",
                                                       "images/wrist": "observation.images.wrist"},
              success_column=True)
    import_lerobot(tmp / "v21", tmp / "back", LeRobotMapping(), target=(obs_spec, action_spec))
    for ep, got in zip(episodes, EpisodeStore(tmp / "back").episodes(skip_bad=False)):
        assert got.success == ep.success and got.terminated[-1] == ep.success and got.truncated[-1] != ep.success
        assert np.allclose(got.reward, 0.5)


def test_v21_png_images_in_parquet(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    write_v21(tmp / "v21", episodes, fps=10, camera_names={"images/front": "observation.images.front",
                                                          "images/wrist": "observation.images.wrist"},
              images_in_parquet=True)
    import_lerobot(tmp / "v21", tmp / "back", LeRobotMapping(), target=(obs_spec, action_spec))
    got = next(EpisodeStore(tmp / "back").episodes(skip_bad=False))
    n = len(episodes[0])
    assert np.array_equal(got.frames["images/wrist"][:n], episodes[0].frames["images/wrist"][:n])  # PNG: lossless


def _as_recorded_by_lerobot(root: Path) -> None:
    """Strip what only our export writes: the final-observation row, exact end flags, our stored spec."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ours = ["final_observation", "next.terminated", "next.truncated", "success", "policy_action", "intervened"]
    for path in sorted((root / "data").glob("*/*.parquet")):
        table = pq.read_table(path)
        table = table.filter(pc.invert(table.column("final_observation"))).drop_columns(ours)
        pq.write_table(table, path)
    info = json.loads((root / "meta/info.json").read_text())
    for name in ours:
        del info["features"][name]
    (root / "meta/info.json").write_text(json.dumps(info))
    table = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    pq.write_table(table.set_column(table.column_names.index("length"), "length",
                                    pc.subtract(table.column("length"), 1)),
                   root / "meta/episodes/chunk-000/file-000.parquet")
    (root / "meta/robot_rl.json").unlink()


def test_v3_lerobot_recording_across_several_data_and_video_files(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    # a new data/video file every episode or two: episodes are found through their own file indices
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec), max_frames_per_file=25)
    assert len(list((tmp / "lr/videos/observation.images.front").glob("*/*.mp4"))) >= 2
    _as_recorded_by_lerobot(tmp / "lr")
    import_lerobot(tmp / "lr", tmp / "back", LeRobotMapping(), target=(obs_spec, action_spec))
    back = list(EpisodeStore(tmp / "back").episodes(skip_bad=False))
    for ep, got in zip(episodes, back):
        n = len(ep)  # LeRobot rows: one per step, the last next_obs is the last frame repeated
        assert len(got) == n and np.array_equal(got.action, ep.action)
        assert np.array_equal(got.frames["state"][:n], ep.frames["state"][:n])
        assert got.terminated[-1] == ep.success and not got.intervened.any()
        assert np.array_equal(got.policy_action, got.action)
        assert psnr(ep.frames["images/wrist"][:n], got.frames["images/wrist"][:n]) >= PSNR_BOUND_DB


def test_import_crops_and_resizes_to_the_target_spec(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    target = ObsSpec({"state": ArraySpec((6,), "float32"), "images/front": ArraySpec((16, 16, 3), "uint8")})
    mapping = LeRobotMapping(crop={"front": (4, 0, 24, 32)})  # (x, y, w, h) in the dataset's 32x32 frames
    import_lerobot(tmp / "lr", tmp / "small", mapping, target=(target, action_spec))
    got = next(EpisodeStore(tmp / "small").episodes(skip_bad=False))
    assert got.frames["images/front"].shape == (len(got) + 1, 16, 16, 3)
    expected = np.stack([prepare_frame(f, (4, 0, 24, 32), (16, 16)) for f in episodes[0].frames["images/front"]])
    assert psnr(expected, got.frames["images/front"]) >= PSNR_BOUND_DB


def _assert_nothing_written(tmp: Path, name: str) -> None:
    assert not (tmp / name).exists()
    assert not list(tmp.glob(f".{name}.partial-*"))


def test_missing_feature_and_shape_mismatch_are_clear_errors(run) -> None:
    tmp, obs_spec, action_spec, _ = run
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    with pytest.raises(DatasetError, match=r"info\.json.*no feature 'observation\.nope'"):
        import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(state=("observation.nope",)), (obs_spec, action_spec))
    _assert_nothing_written(tmp, "out")
    wide = ObsSpec({**obs_spec.fields, "state": ArraySpec((7,), "float32")})
    with pytest.raises(DatasetError, match="hold 6 values, the target spec's state has 7"):
        import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(), (wide, action_spec))
    info_path = tmp / "lr/meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.state"]["shape"] = [7]
    info_path.write_text(json.dumps(info))
    (tmp / "lr/meta/robot_rl.json").unlink()  # no stored spec: the shapes come from info.json
    with pytest.raises(DatasetError, match=r"file-000\.parquet: episode 0: feature 'observation\.state' holds 6 "):
        import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(spec="dataset", state=("observation.state",)),
                       None)
    _assert_nothing_written(tmp, "out")


def test_missing_reward_needs_an_explicit_choice(run) -> None:
    tmp, obs_spec, action_spec, episodes = run
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    mapping = LeRobotMapping(reward="next.nothing")
    with pytest.raises(DatasetError, match="missing_reward=success_at_end"):
        import_lerobot(tmp / "lr", tmp / "out", mapping, (obs_spec, action_spec))
    import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(reward="next.nothing", missing_reward="success_at_end"),
                   (obs_spec, action_spec))
    got = list(EpisodeStore(tmp / "out").episodes(skip_bad=False))
    assert all(e.reward[-1] == 1.0 and e.reward[:-1].sum() == 0 for e in got)


def test_corrupt_video_and_parquet_name_the_file_and_episode(run) -> None:
    tmp, obs_spec, action_spec, _ = run
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    shutil.copytree(tmp / "lr", tmp / "lr2")
    video = tmp / "lr/videos/observation.images.wrist/chunk-000/file-000.mp4"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 3])  # a truncated upload
    with pytest.raises(DatasetError, match=r"episode \d+.*wrist"):
        import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(spec="dataset"))
    _assert_nothing_written(tmp, "out")
    garbled = bytearray(data)  # bytes flipped inside the stream: decoding fails or frames go missing
    garbled[len(data) // 2: len(data) // 2 + 400] = bytes(400)
    video.write_bytes(bytes(garbled))
    try:
        import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(spec="dataset"))
    except DatasetError as e:
        assert "episode" in str(e) and "wrist" in str(e)
        _assert_nothing_written(tmp, "out")
    else:  # h264 conceals damaged macroblocks: the import then succeeds with degraded frames, never a crash
        assert len(EpisodeStore(tmp / "out")) == 3
    parquet = tmp / "lr2/data/chunk-000/file-000.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet" * 10)
    with pytest.raises(DatasetError, match=r"data/chunk-000/file-000\.parquet: not a readable parquet file"):
        import_lerobot(tmp / "lr2", tmp / "out", LeRobotMapping(spec="dataset"))
    _assert_nothing_written(tmp, "out")


def test_out_of_bounds_actions_are_refused_unless_clipped(run) -> None:
    tmp, obs_spec, action_spec, _ = run
    export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    from robot_rl.specs import ActionSpec

    narrow = ActionSpec((3,), (-0.5,), (0.5,), ("u0", "u1", "u2"))
    with pytest.raises(DatasetError, match=r"episode 0: action\[\d+\]\[\d\] = .* outside the target bounds"):
        import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(), (obs_spec, narrow))
    import_lerobot(tmp / "lr", tmp / "out", LeRobotMapping(clip_actions=True), (obs_spec, narrow))
    got = next(EpisodeStore(tmp / "out").episodes(skip_bad=False))
    assert np.abs(got.action).max() <= 0.5


def test_refuses_to_write_into_existing_data(run) -> None:
    tmp, obs_spec, action_spec, _ = run
    (tmp / "lr").mkdir()
    (tmp / "lr" / "keep.txt").write_text("user data")
    with pytest.raises(DatasetError, match="not an empty directory"):
        export_lerobot(tmp / "run", tmp / "lr", fps=10, specs=(obs_spec, action_spec))
    assert (tmp / "lr" / "keep.txt").read_text() == "user data"


def test_video_reader_rejects_timestamps_without_frames(tmp_path: Path) -> None:
    from robot_rl.datasets.common import encode_video
    from synthetic import frame

    path = tmp_path / "v.mp4"
    encode_video(path, iter([frame(16, t, 0) for t in range(10)]), fps=10)
    reader = VideoReader(path)
    assert reader.frames_at(np.arange(10) / 10, 1e-4, "ep").shape == (10, 16, 16, 3)
    with pytest.raises(DatasetError, match="no frame within"):
        reader.frames_at(np.array([0.0, 0.15]), 1e-4, "ep 3")
    reader.close()
