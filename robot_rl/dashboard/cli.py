"""``robot-rl dashboard RUN_DIR``: serve the live page of a run (the learner's feed; see robot_rl/dashboard)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence


def _defaults(run_dir: Path) -> dict[str, Any]:
    """The run's ``dashboard`` config (``run_dir/config.yaml``), else the schema's defaults."""
    import dataclasses

    from robot_rl.config import DashboardConfig

    values = dataclasses.asdict(DashboardConfig())
    config = run_dir / "config.yaml"
    if config.exists():
        from omegaconf import OmegaConf

        raw = OmegaConf.load(config)
        if "dashboard" in raw:
            values.update({k: v for k, v in OmegaConf.to_container(raw.dashboard).items() if k in values})
    return values


def cmd_dashboard(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    from robot_rl.dashboard.app import serve

    if overrides:
        raise SystemExit(f"robot-rl dashboard takes options, not overrides: {' '.join(overrides)}")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir} is not a run directory")
    d = _defaults(run_dir)
    return serve(run_dir, host=args.host or d["host"], port=d["port"] if args.port is None else args.port,
                 require_token=d["require_token"] and not args.no_token, status_hz=d["status_hz"],
                 frame_size=d["frame_size"])


def register(sub: Any) -> None:
    help_text = "serve the live dashboard of a run (fleet, cameras, learning, controls) on 127.0.0.1"
    p = sub.add_parser("dashboard", help=help_text, description=help_text)
    p.add_argument("run_dir", help="the run's directory (the learner's run_dir)")
    p.add_argument("--host", default=None, help="interface (default dashboard.host: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default dashboard.port: 8765; 0 = any free)")
    p.add_argument("--no-token", action="store_true", help="serve without the access token (loopback only)")
    p.set_defaults(func=cmd_dashboard, overrides=[])
