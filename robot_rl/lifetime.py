"""Child processes of ``robot-rl train`` stop with it, whatever way it ends, and say why.

``robot-rl train`` starts the learner and the actors in sessions of their own (a Ctrl-C in the terminal reaches
only ``train``, which then stops them in order: the learner checkpoints, the actors store their partial
episodes). Without more, a ``train`` killed by SIGKILL (or its process group) would leave them running: an
orphaned actor logs "learner silent" forever. So each child, told its parent's pid through
``ROBOT_RL_PARENT_PID``:

* asks the kernel for SIGTERM when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), which runs the usual
  clean stop (checkpoint, spill, store partial episodes);
* also watches the parent from a thread (portable, and covers a parent that died before ``prctl`` ran): once the
  parent is gone it sets the stop event, logs why, and hard-exits if the clean stop has not finished within
  ``ORPHAN_GRACE_S``.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger("robot_rl.lifetime")

PARENT_ENV = "ROBOT_RL_PARENT_PID"
ORPHAN_GRACE_S = 120.0
"""Longest a child outlives its parent: a clean stop (final checkpoint, spill) normally takes seconds."""
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str]) -> dict[str, str]:
    """Environment for a child of this process that must stop with it."""
    return {**env, PARENT_ENV: str(os.getpid())}


def parent_pid() -> int | None:
    """The pid of the ``robot-rl train`` that started this process, or None when started by hand."""
    value = os.environ.get(PARENT_ENV, "")
    return int(value) if value.isdigit() else None


def parent_gone() -> bool:
    parent = parent_pid()
    return parent is not None and os.getppid() != parent


def why_signal(signum: int) -> str:
    """Words for a stop signal: a SIGTERM after the parent died is the death signal, not a person."""
    name = signal.Signals(signum).name
    if parent_gone():
        return f"{name}: robot-rl train (pid {parent_pid()}) has exited"
    return name


def stop_with_parent(stop: threading.Event, grace_s: float = ORPHAN_GRACE_S) -> None:
    """In a child of ``robot-rl train``: set ``stop`` when the parent dies; exit hard ``grace_s`` later."""
    parent = parent_pid()
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
                log.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): relying on the watcher", ctypes.get_errno())
        except (OSError, AttributeError) as exc:
            log.warning("prctl unavailable (%s): relying on the watcher", exc)

    def watch() -> None:  # a daemon thread: it ends with the process after a normal exit
        while os.getppid() == parent:
            time.sleep(0.5)
        log.warning("robot-rl train (pid %d) has exited: stopping", parent)
        stop.set()
        time.sleep(grace_s)
        log.error("still running %.0fs after robot-rl train exited: exiting now", grace_s)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
