import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import torch

from robot_rl.checkpoint import Checkpointer

SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np, torch
    from robot_rl.checkpoint import Checkpointer
    ck = Checkpointer(sys.argv[1])
    ck.save("ckpt-0000000001", {"w": torch.ones(3), "updates": 1}, {"replay": lambda d: (d.mkdir(),
            np.save(d / "x.npy", np.arange(10)))})
    def slow_writer(d):
        d.mkdir()
        np.save(d / "x.npy", np.arange(5))
        print("WRITING", flush=True)
        time.sleep(60)  # killed here, in the middle of the second checkpoint
    ck.save("ckpt-0000000002", {"w": torch.zeros(3), "updates": 2}, {"replay": slow_writer})
""")


def test_kill_during_checkpoint_leaves_previous_loadable(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ck = Checkpointer(tmp_path)
    latest = ck.latest()
    assert latest is not None and latest.name == "ckpt-0000000001"
    state = ck.load_state(latest)
    assert state["updates"] == 1 and torch.equal(state["w"], torch.ones(3))
    np.testing.assert_array_equal(np.load(latest / "replay" / "x.npy"), np.arange(10))
    # the next save cleans the torn temporary directory and becomes the latest
    ck.save("ckpt-0000000003", {"updates": 3}, {})
    assert ck.latest().name == "ckpt-0000000003"
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_dangling_latest_falls_back_to_newest_complete(tmp_path):
    ck = Checkpointer(tmp_path, keep=3)
    ck.save("ckpt-0000000001", {"updates": 1}, {})
    ck.save("ckpt-0000000002", {"updates": 2}, {})
    (tmp_path / "checkpoints" / "LATEST").write_text("ckpt-0000000009")
    assert ck.latest().name == "ckpt-0000000002"


def test_saving_the_same_name_twice_never_deletes_the_live_checkpoint(tmp_path, monkeypatch):
    """``ckpt-N`` saved again (no update in between): a crash while the new copy is put in place must leave the
    old copy, whose ledger the actors were told is durable, loadable under that name."""
    import robot_rl.checkpoint as checkpoint

    ck = Checkpointer(tmp_path)
    ck.save("ckpt-0000000005", {"updates": 5, "copy": 1}, {"replay": lambda d: (d.mkdir(),
                                                                                np.save(d / "x.npy", np.arange(4)))})
    real_replace = os.replace

    def crash_when_the_new_copy_goes_in(src, dst):
        if os.path.basename(str(src)).startswith(".tmp-"):
            raise OSError("simulated power loss")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_when_the_new_copy_goes_in)
    try:
        ck.save("ckpt-0000000005", {"updates": 5, "copy": 2}, {})
    except OSError:
        pass
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    reopened = Checkpointer(tmp_path)  # the restarted learner
    latest = reopened.latest()
    assert latest is not None and latest.name == "ckpt-0000000005"
    assert reopened.load_state(latest)["copy"] == 1
    np.testing.assert_array_equal(np.load(latest / "replay" / "x.npy"), np.arange(4))
    # without a crash the second save replaces the first and leaves nothing behind
    reopened.save("ckpt-0000000005", {"updates": 5, "copy": 3}, {})
    assert reopened.load_state(reopened.latest())["copy"] == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["LATEST", "ckpt-0000000005"]
