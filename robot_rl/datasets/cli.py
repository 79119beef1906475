"""``robot-rl data``: datasets in and out of the episode store.

    robot-rl data import-lerobot SRC OUT [env overrides] [mapping keys]
        a local LeRobotDataset (v3.0 or v2.1) -> episode store OUT, mapped onto the configured env's specs
        (e.g. env=panda_pick_cube env.obs=pixels camera.front=observation.images.top missing_reward=success_at_end)
    robot-rl data export-lerobot RUN_DIR OUT [fps=N crf=18 robot_type=NAME] [env overrides]
        a run's episodes (RUN_DIR/episodes/*/ or one episode store) -> LeRobotDataset v3.0 OUT
    robot-rl data import-bag BAG_DIR OUT [params=real.yaml control_hz=10 actor_id=rosbag]
        rosbag2/MCAP recordings of the robot node's topics -> episode store OUT

Mapping keys (import-lerobot): see robot_rl.datasets.mapping.LeRobotMapping; ``mapping=FILE.yaml`` holds them too.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger("robot_rl.datasets")


def _split(overrides: Sequence[str], is_extra: Any) -> tuple[list[str], dict[str, str]]:
    rest, extra = [], {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and is_extra(key):
            extra[key] = value
        else:
            rest.append(item)
    return rest, extra


def _train_config(args: argparse.Namespace, overrides: Sequence[str], fallback: Path | None = None) -> Any:
    from robot_rl.config import load_config, load_resolved

    if args.config:
        return load_resolved(args.config, overrides)
    if not overrides and fallback is not None:
        return load_resolved(fallback) if fallback.exists() else None
    return load_config(list(overrides))


def cmd_import_lerobot(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.datasets.lerobot_import import import_lerobot
    from robot_rl.datasets.mapping import LeRobotMapping
    from robot_rl.registry import env_specs

    names = {f.name for f in fields(LeRobotMapping)} | {"mapping"}
    rest, extra = _split(overrides, lambda k: k in names or k.startswith(("camera.", "crop.")))
    mapping = LeRobotMapping.from_items(extra)
    target = None
    if mapping.spec == "env":
        cfg = _train_config(args, rest)
        target = env_specs(cfg)
        log.info("mapping onto env %s (obs %s)", cfg.env.name, target[0].to_dict())
    elif rest:
        raise SystemExit(f"spec=dataset takes no env overrides, got {rest}")
    print(json.dumps(import_lerobot(args.src, args.out, mapping, target)))
    return 0


def cmd_export_lerobot(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.datasets.lerobot_export import export_lerobot
    from robot_rl.registry import env_specs

    rest, extra = _split(overrides, lambda k: k in ("fps", "crf", "robot_type", "max_frames_per_file"))
    run_dir = Path(args.run_dir)
    fallback = next((p for p in (run_dir / "config.yaml", run_dir / "config_learner.yaml") if p.exists()), None)
    cfg = _train_config(args, rest, fallback or run_dir / "config.yaml")
    specs = env_specs(cfg) if cfg is not None else None
    if cfg is None:
        log.warning("%s has no config.yaml and no env was given: the ActionSpec is not stored in the dataset "
                    "(an import with spec=dataset derives bounds from the data)", run_dir)
    fps = extra.get("fps") or (getattr(cfg.env, "control_hz", None) if cfg is not None else None)
    if fps is None:
        raise SystemExit("export-lerobot needs fps=N (the control rate the episodes were recorded at)")
    if float(fps) != int(float(fps)):
        raise SystemExit(f"LeRobot datasets have an integer fps, the control rate is {fps}: pass fps=N")
    robot_type = extra.get("robot_type") or (cfg.env.name if cfg is not None else None)
    result = export_lerobot(run_dir, args.out, int(float(fps)), specs, crf=int(extra.get("crf", 18)),
                            robot_type=robot_type,
                            max_frames_per_file=int(extra.get("max_frames_per_file", 100_000)))
    print(json.dumps(result))
    return 0


def cmd_import_bag(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.datasets.bag_import import import_bags
    from robot_rl.hardware.ros2.config import RobotNodeConfig, from_params, load_params_file

    rest, extra = _split(overrides, lambda k: k in ("params", "node", "control_hz", "actor_id"))
    if "params" in extra:
        cfg = load_params_file(extra["params"], extra.get("node", "robot_rl_actor"), RobotNodeConfig)
        if rest:
            raise SystemExit(f"give node parameters in the params file, not also as {rest}")
    else:  # node parameters as dotted overrides (topics.cameras=[front]) on the defaults
        import yaml

        cfg = from_params(RobotNodeConfig, {k: yaml.safe_load(v) for k, v in (r.split("=", 1) for r in rest)})
    control_hz = float(extra["control_hz"]) if "control_hz" in extra else None
    print(json.dumps(import_bags(args.bag_dir, args.out, cfg, control_hz, extra.get("actor_id", "rosbag"))))
    return 0


def _run(func: Any) -> Any:
    def run(args: argparse.Namespace, overrides: Sequence[str]) -> int:
        from robot_rl.datasets.common import DatasetError

        try:
            return func(args, overrides)
        except DatasetError as e:  # bad input: one clear line, no traceback
            raise SystemExit(f"robot-rl data {args.data_command}: {e}") from e
    return run


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="LeRobotDataset import/export, rosbag2 import",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", required=True)
    specs = [("import-lerobot", cmd_import_lerobot, ("src", "out"), "LeRobotDataset folder -> episode store"),
             ("export-lerobot", cmd_export_lerobot, ("run_dir", "out"), "episodes -> LeRobotDataset v3.0"),
             ("import-bag", cmd_import_bag, ("bag_dir", "out"), "rosbag2/MCAP bags -> episode store")]
    for name, func, positionals, help_text in specs:
        q = sub.add_parser(name, help=help_text, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        for pos in positionals:
            q.add_argument(pos)
        q.add_argument("overrides", nargs="*", help="key=value options and hydra overrides")
        if name != "import-bag":  # bags take the robot node's parameter file instead (params=FILE)
            q.add_argument("--config", help="start from a resolved config file (run_dir/config.yaml)")
        q.set_defaults(func=_run(func))
