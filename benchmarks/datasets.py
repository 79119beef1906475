"""Dataset import/export benchmark: LeRobotDataset v3.0 export and import speed, and the round trip's fidelity.

    python benchmarks/datasets.py [--episodes 10] [--steps 100] [--image-size 96] [--cameras 2] [--repeats 2]

Synthetic episodes (smooth moving scenes, tests/datasets/synthetic.py) of ``--cameras`` RGB cameras, a 6-float
state and a 3-float action. A "frame" is one dataset row (one time step with every camera). Figures:
export frames/s (parquet + h264 encode of every camera), import frames/s (parquet read + video decode at the
rows' timestamps + episode store write), PSNR of the images after export -> import, and whether every non-image
array came back bit-identical. Baseline, measured in the same run: copying the same episodes from one episode
store to another (npz read + write, no codec), the floor any format conversion pays. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "datasets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from synthetic import specs, write_run

    from robot_rl.datasets.lerobot_export import export_lerobot
    from robot_rl.datasets.lerobot_import import import_lerobot
    from robot_rl.datasets.mapping import LeRobotMapping
    from robot_rl.episode_store import EpisodeStore

    cams = tuple(f"cam{i}" for i in range(args.cameras))
    obs_spec, action_spec = specs(args.image_size, cams)
    tmp = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    try:
        episodes = write_run(tmp / "run", obs_spec, action_spec, args.episodes, args.steps)
        frames = sum(len(e) + 1 for e in episodes)
        rows: dict[str, list[float]] = {"export": [], "import": [], "copy": []}
        for r in range(args.repeats):
            t = time.perf_counter()
            export_lerobot(tmp / "run", tmp / f"lr{r}", fps=10, specs=(obs_spec, action_spec), crf=args.crf)
            rows["export"].append(frames / (time.perf_counter() - t))
            t = time.perf_counter()
            import_lerobot(tmp / f"lr{r}", tmp / f"back{r}", LeRobotMapping(spec="dataset"))
            rows["import"].append(frames / (time.perf_counter() - t))
            t = time.perf_counter()
            copy = EpisodeStore(tmp / f"copy{r}", fsync=False)
            for ep in EpisodeStore(tmp / "run" / "episodes" / "actor-0").episodes(skip_bad=False):
                copy.write(ep)
            rows["copy"].append(frames / (time.perf_counter() - t))
        back = list(EpisodeStore(tmp / "back0").episodes(skip_bad=False))
        equal = len(back) == len(episodes)
        sq_err, n_px, worst = 0.0, 0, np.inf
        for ep, got in zip(episodes, back):
            for name in ("action", "policy_action", "reward", "terminated", "truncated", "intervened"):
                equal &= bool(np.array_equal(getattr(ep, name), getattr(got, name)))
            equal &= bool(np.array_equal(ep.frames["state"], got.frames["state"]))
            equal &= (ep.success, ep.task) == (got.success, got.task)
            for key in obs_spec.image_keys:
                err = (ep.frames[key].astype(np.float64) - got.frames[key]) ** 2
                sq_err, n_px = sq_err + err.sum(), n_px + err.size
                worst = min(worst, 10 * np.log10(255.0 ** 2 / max(err.mean(), 1e-12)))
        psnr = 10 * np.log10(255.0 ** 2 / max(sq_err / n_px, 1e-12))
        video_mb = sum(p.stat().st_size for p in (tmp / "lr0" / "videos").rglob("*.mp4")) / 1e6
        raw_mb = sum(ep.frames[k].nbytes for ep in episodes for k in obs_spec.image_keys) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{args.episodes} episodes x {args.steps}+ steps, {args.cameras} cameras {args.image_size}x{args.image_size}, "
          f"{frames} frames, h264 crf {args.crf}")
    print(f"{'measure':42s} {'median':>10s}   all runs")
    for label, key in (("export to LeRobot v3.0, frames/s", "export"), ("import from LeRobot v3.0, frames/s", "import"),
                       ("baseline: episode store copy, frames/s", "copy")):
        print(f"{label:42s} {med[key]:10.0f}   {[round(x) for x in rows[key]]}")
    print(f"{'round-trip PSNR (all / worst episode-cam)':42s} {psnr:10.2f}   worst {worst:.2f} dB")
    print(f"{'non-image arrays bit-identical':42s} {str(equal):>10s}")
    print(f"{'video size vs raw uint8 frames':42s} {video_mb:9.2f}M   raw {raw_mb:.2f} MB "
          f"({raw_mb / max(video_mb, 1e-9):.0f}x smaller)")
    print(json.dumps({"import_frames_per_s": round(med["import"], 1), "export_frames_per_s": round(med["export"], 1),
                      "roundtrip_psnr_db": round(float(psnr), 2), "roundtrip_worst_psnr_db": round(float(worst), 2),
                      "roundtrip_arrays_equal": bool(equal),
                      "baseline_store_copy_frames_per_s": round(med["copy"], 1),
                      "export_ratio_vs_store_copy": round(med["export"] / med["copy"], 4),
                      "import_ratio_vs_store_copy": round(med["import"] / med["copy"], 4),
                      "video_compression_x": round(raw_mb / max(video_mb, 1e-9), 1),
                      "frames": frames, "cameras": args.cameras, "image_size": args.image_size,
                      "repeats": args.repeats}))


if __name__ == "__main__":
    main()
