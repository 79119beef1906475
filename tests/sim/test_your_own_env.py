"""README "Your own env", run as written: a third-party-style Gymnasium env (nested Dict obs, its own success key,
constructor kwargs), demos recorded by hand through the keyboard device on a pseudo-terminal, then ``robot-rl
train`` (learner and actor processes started from the resolved config), ``robot-rl eval`` with and without
``render_mode=rgb_array``.

The env module is the README's python block, written to a temporary directory on ``PYTHONPATH`` (it must equal
``tests/lab_reach_env.py``, which the in-process tests import); the commands are the README's bash block
with the paths moved under ``tmp_path`` and a small budget appended (later hydra overrides win).
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from robot_rl.episode_store import EpisodeStore
from support import free_ports

ROOT = Path(__file__).resolve().parents[2]
BUDGET = ("learner.max_env_steps=300", "learner.warmup_transitions=100", "algo.batch_size=32",
          "algo.offline_pretrain_updates=50", "learner.eval_every_env_steps=150", "learner.eval_episodes=1",
          "eval_episodes=2", "logger.wandb=disabled", "logger.progress=false", "num_actors=1")


def readme_example() -> tuple[str, list[list[str]]]:
    """(env module source, robot-rl commands with ``$ENV`` expanded) from the README section."""
    section = (ROOT / "README.md").read_text().split("## Your own env\n", 1)[1].split("\n## ", 1)[0]
    source = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    env_args = shlex.split(re.search(r'^ENV="(.*?)"', bash, re.S | re.M).group(1))
    commands = []
    for line in bash.splitlines():
        if line.startswith("robot-rl "):
            words = shlex.split(line, comments=True)[1:]
            commands.append([a for w in words for a in (env_args if w == "$ENV" else [w])])
    return source, commands


def _moved(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("demos/lab_reach", str(tmp / "demos")).replace("runs/lab_reach", str(tmp / "run"))
            for a in args]


def _env(tmp: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(tmp), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", COLUMNS="200")


def _cli(args: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robot_rl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tmp, env=_env(tmp))


class Terminal:
    """A child process whose stdin/stdout/stderr are a pseudo-terminal we type into."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen([sys.executable, "-m", "robot_rl.cli", *args], stdin=slave, stdout=slave,
                                     stderr=slave, cwd=tmp, env=_env(tmp), start_new_session=True)
        os.close(slave)
        self.output = b""
        self._consumed = 0

    def read_until(self, *texts: str, timeout: float = 90.0) -> str:
        """Wait until one of ``texts`` is printed after what earlier calls consumed; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.output.decode(errors="replace")
            found = [(seen.find(t, self._consumed), t) for t in texts if seen.find(t, self._consumed) >= 0]
            if found:
                at, text = min(found)
                self._consumed = at + len(text)
                return text
            if time.monotonic() > deadline or (self.proc.poll() is not None and not self._read(0.0)):
                raise AssertionError(f"no {texts} from robot-rl demos (exit {self.proc.poll()}):\n{seen[-3000:]}")
            self._read(0.1)

    def _read(self, wait: float) -> bool:
        if select.select([self.master], [], [], wait)[0]:
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return False
            self.output += data
            return bool(data)
        return False

    def type(self, keys: bytes, times: int = 1, every_s: float = 0.0) -> None:
        for _ in range(times):
            os.write(self.master, keys)
            self._read(every_s)

    def close(self) -> int:
        try:
            code = self.proc.wait(timeout=30)
            while self._read(0.1):
                pass
            return code
        finally:
            os.close(self.master)


def test_readme_env_block_is_the_test_env() -> None:
    source, commands = readme_example()
    assert source == (ROOT / "tests" / "lab_reach_env.py").read_text()
    assert [c[0] for c in commands] == ["demos", "train", "eval"]


def test_readme_worked_example_through_real_processes(tmp_path: Path) -> None:
    source, (demos_cmd, train_cmd, eval_cmd) = readme_example()
    (tmp_path / "lab_reach_env.py").write_text(source)

    # 1. Two demos by hand: the keyboard device reads the pseudo-terminal. Up arrow (+x) until the gripper
    # reaches the target's x (the env clips at the wall there), then `g` closes the gripper: the env's
    # info["succeed"] ends and labels the episode.
    demos_cmd = [a.replace("n=20", "n=2") for a in _moved(demos_cmd, tmp_path)]
    term = Terminal(demos_cmd, tmp_path)
    try:
        attempts = 0
        for k in (1, 2):
            while True:  # a machine too busy to type in time lets the env time out: that try is not saved
                attempts += 1
                assert attempts <= 4, term.output.decode(errors="replace")[-3000:]
                term.read_until(f"episode {k}/2: drive")
                term.type(b"\x1b[A", times=15, every_s=0.1)  # 10 Hz, 0.1 per step: ~20 steps of +x
                term.type(b"g")
                if term.read_until(f"saved {k}/2", "not saved") == f"saved {k}/2":
                    break
        term.read_until("wrote 2 episodes")
    finally:
        code = term.close()
    assert code == 0, term.output.decode(errors="replace")[-3000:]
    demos = list(EpisodeStore(tmp_path / "demos").episodes())
    assert len(demos) == 2
    for episode in demos:
        assert episode.success and episode.meta["label_source"] == "env" and episode.meta["source"] == "teleop"
        assert episode.action[:, 0].max() == 1.0 and episode.action[-1, 3] == 1.0  # +x pressed, gripper closed
        assert episode.intervened.all()

    # 2. Train through real processes (learner and actor start from the resolved config) on those demos.
    p1, p2 = free_ports(2)
    train = _cli([*_moved(train_cmd, tmp_path), *BUDGET, f"transport.transitions_port={p1}",
                  f"transport.weights_port={p2}"], tmp_path, timeout=400)
    run = tmp_path / "run"
    assert train.returncode == 0, train.stderr[-4000:]
    learner_log = (run / "logs" / "learner.log").read_text()
    assert "loaded 2 demo episodes" in learner_log, learner_log[-3000:]
    assert "NO DEMONSTRATIONS" not in train.stderr
    for name in ("eval.json", "learning_curve.png", "eval.mp4"):
        assert (run / name).stat().st_size > 0, name
    result = json.loads((run / "eval.json").read_text())
    assert result["episodes"] == 2 and 0.0 <= result["success_rate"] <= 1.0 and result["video"].endswith("eval.mp4")
    # kwargs reached the actor process (started with `actor --config`): start_spread=0.05 (default 0.5).
    episodes = list(EpisodeStore(run / "episodes" / "actor-0").episodes())
    assert len(episodes) >= 5
    starts = np.stack([e.frames["state"][0] for e in episodes])  # (E, 7): gripper, pos (3), target (3)
    assert np.abs(starts[:, 1:4]).max() <= 0.05 + 1e-6
    assert max(len(e) for e in episodes) <= 40  # +env.kwargs.horizon=40
    saved = (run / "config.yaml").read_text()
    assert "start_spread: 0.05" in saved and "succeed" in saved

    # 3. `robot-rl eval` as in the README: the video needs render_mode from the kwargs and picks the front
    # camera from the env's [front, wrist] render list.
    video = tmp_path / "run" / "eval20.mp4"
    ev = _cli([a.replace("episodes=20", "episodes=2") for a in _moved(eval_cmd, tmp_path)], tmp_path, timeout=180)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "success rate" in ev.stdout and video.stat().st_size > 0

    # 4. Without render_mode=rgb_array the evaluation still reports, and says why there is no video.
    no_video = tmp_path / "none.mp4"
    ev = _cli(["eval", f"checkpoint={run}", "episodes=1", f"video={no_video}", "env.kwargs.render_mode=null"],
              tmp_path, timeout=180)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "success rate" in ev.stdout and "renders nothing" in ev.stderr and not no_video.exists()


def test_issue_command_pendulum_with_kwargs_and_no_render_mode(tmp_path: Path) -> None:
    """The issue's `robot-rl train env=gym env.env_id=Pendulum-v1 +env.kwargs.g=9.81`: the learner and actor
    start from the resolved config, train says it has no demos, and the end skips the video with a warning."""
    p1, p2 = free_ports(2)
    run = tmp_path / "run"
    train = _cli(["train", "env=gym", "env.env_id=Pendulum-v1", "+env.kwargs.g=9.81", f"run_dir={run}", *BUDGET,
                  "learner.max_env_steps=250", "eval_episodes=1", "env.max_episode_steps=50",
                  f"transport.transitions_port={p1}", f"transport.weights_port={p2}"], tmp_path, timeout=300)
    assert train.returncode == 0, train.stderr[-4000:]
    err = " ".join(train.stderr.split())  # the console wraps long lines
    assert "NO DEMONSTRATIONS" in err and "robot-rl demos teleop=keyboard" in err
    assert "renders nothing" in err
    assert (run / "eval.json").exists() and (run / "learning_curve.png").exists() and not (run / "eval.mp4").exists()
    assert json.loads((run / "eval.json").read_text())["episodes"] == 1
    assert "g: 9.81" in (run / "config_actor-0.yaml").read_text()  # the actor ran with the kwargs
