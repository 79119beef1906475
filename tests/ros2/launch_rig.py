"""Helpers of the real ``ros2 launch`` tests: a learner process to stream to, and ``ros2 launch`` itself.

The launch system (launch, launch_ros, ros2launch, ros2cli, ros2pkg: pure Python, not on PyPI) comes from
``$ROOT/../shared/ros2-launch``, installed into ``.venv-ros`` by ``tests/ros2/run_suite.sh``; without that folder
the tests skip and say so.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ros_rig import ROOT

BIN = Path(sys.executable).parent
LAUNCH_SRC = ROOT.parent / "shared" / "ros2-launch"
NODES = ("robot_rl_twin_node", "robot_rl_actor_node", "robot_rl_safety_node")


def strip_ansi(text: str) -> str:
    """Node output without terminal colours (launch runs the actor with emulate_tty)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def require_ros2_launch() -> None:
    """Skip (with the reason) where the real launch system cannot run."""
    if not LAUNCH_SRC.is_dir():
        pytest.skip(f"{LAUNCH_SRC} is absent: the real `ros2 launch` (not on PyPI) cannot be installed here")
    if not (BIN / "ros2").exists():
        pytest.skip(f"`ros2` is not installed in {BIN.parent}: run tests/ros2/run_suite.sh, which installs "
                    f"{LAUNCH_SRC} into .venv-ros")


def launch_env(prefix: Path, **extra: str) -> dict[str, str]:
    """Environment of ``ros2 launch``: the package's prefix on AMENT_PREFIX_PATH, the composition_interfaces
    stand-in on PYTHONPATH (launch_ros imports it at load time)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled", **extra)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), *[p for p in env.get("AMENT_PREFIX_PATH", "").split(
        os.pathsep) if p and p != str(prefix)]])
    standins = str(LAUNCH_SRC / "stand-ins")
    if standins not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (standins, env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class LearnerRun:
    proc: subprocess.Popen
    run_dir: Path
    keys: Path
    log: Path

    def log_text(self) -> str:
        return strip_ansi(self.log.read_text(errors="replace"))

    def wait_for_transitions(self, n: int, timeout: float, alive=lambda: True) -> int:
        """Online transitions the learner ingested, read from its newest checkpoint (written every second),
        once at least ``n``, at ``timeout``, or as soon as ``alive()`` turns False (the launch failed)."""
        from robot_rl.checkpoint import Checkpointer

        deadline, seen = time.monotonic() + timeout, 0
        while time.monotonic() < deadline and self.proc.poll() is None and alive():
            for path in sorted((self.run_dir / "checkpoints").glob("ckpt-*"), key=lambda p: p.stat().st_mtime):
                try:
                    seen = max(seen, int(Checkpointer.load_state(path)["online_transitions"]))
                except Exception:  # noqa: BLE001 (a checkpoint being replaced right now: read the next one)
                    continue
            if seen >= n:
                return seen
            time.sleep(1.0)
        return seen


def start_learner(tmp_path: Path) -> LearnerRun:
    """A pixel learner (update-free), checkpointing every second (``wait_for_transitions`` reads them)."""
    from support import free_ports

    env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    cli = [sys.executable, "-m", "robot_rl.cli"]
    keys = tmp_path / "keys"
    subprocess.run([*cli, "keys", str(keys), "--actors", "robot1"], check=True, env=env, capture_output=True,
                   timeout=60)
    p1, p2 = free_ports(2)
    run = tmp_path / "run"
    log = tmp_path / "learner.log"
    args = [*cli, "learner", "env=panda_pick_cube", "env.obs=pixels", "env.image_size=64", "policy.encoder=drq",
            "learner.utd=0",
            "learner.checkpoint_every_s=1", f"transport.transitions_port={p1}",
            f"transport.weights_port={p2}", f"transport.keys_dir={keys}", f"run_dir={run}",
            "logger.wandb=disabled", "logger.progress=false"]
    proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    learner = LearnerRun(proc, run, keys, log)
    for _ in range(900):  # the learner writes its resolved config before it binds
        if (run / "config_learner.yaml").exists():
            return learner
        assert proc.poll() is None, learner.log_text()[-4000:]
        time.sleep(0.1)
    raise AssertionError("learner did not start: " + learner.log_text()[-4000:])


def ros2_launch(launch_file: str, arguments: dict[str, str], env: dict[str, str], cwd: Path, log: Path,
                setup_bash: Path | None = None) -> subprocess.Popen:
    """``ros2 launch robot_rl <file> k:=v...``; with ``setup_bash``, after ``source``-ing it (a colcon workspace),
    ``exec``-ing so that the signals reach ``ros2 launch`` itself."""
    args = [str(BIN / "ros2"), "launch", "robot_rl", launch_file, *(f"{k}:={v}" for k, v in arguments.items())]
    if setup_bash is not None:
        args = ["bash", "-c", f'source "{setup_bash}" && exec "$@"', "ros2-launch", *args]
    # its own session: a leftover node can be cleaned up by group; the test signals only `ros2 launch` itself
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def sigint_and_wait(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGINT to ``ros2 launch`` (what Ctrl-C in its terminal sends it), then its exit code."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def node_exits(log_text: str) -> dict[str, str]:
    """Per launched process (``robot_rl_actor_node-2``...): launch's verdict, ``finished cleanly`` or ``died``
    with its exit code."""
    out = {}
    for m in re.finditer(r"\[INFO\] \[([\w.-]+)\]: process (has finished cleanly|has died)(.*)", log_text):
        out[m.group(1)] = m.group(2) + m.group(3)
    return out


def assert_clean_exits(log_text: str, expected_nodes: tuple[str, ...], killed: tuple[str, ...] = ()) -> None:
    """Every node in ``expected_nodes`` exited with code 0 (launch: ``finished cleanly``); ``killed`` ones are
    not judged (the test killed them)."""
    exits = node_exits(log_text)
    started = {name.rsplit("-", 1)[0]: name for name in exits}
    assert set(expected_nodes) <= set(started), (exits, log_text[-4000:])
    bad = {k: v for k, v in exits.items() if "finished cleanly" not in v and k.rsplit("-", 1)[0] not in killed}
    assert not bad, (bad, log_text[-6000:])
