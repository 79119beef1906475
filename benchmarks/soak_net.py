"""Network and disk faults for ``benchmarks/soak.py``, all inside private namespaces the soak creates.

The soak re-executes itself under ``unshare -n -m`` (a fresh network namespace holding only ``lo``, and a
private mount namespace), so nothing here can touch the machine's real interfaces, addresses or mounts. The
learner runs in that hub namespace; each actor slot gets its own network namespace (a ``sleep`` process holds
it across actor restarts) joined to the hub by a veth pair ``h<i>`` (hub, 10.199.<i>.1/30) <-> ``a<i>``
(actor, 10.199.<i>.2/30): private addresses that exist only inside these namespaces.

Faults:
- partition: nftables drops everything on the slot's veth in both directions (a pulled cable: TCP stays open
  and retransmits, nothing arrives), then the rules are flushed;
- loss: nftables ``numgen random mod 10 == 0 drop`` on both ends of the veth (10% of packets each way);
- delay: this kernel has no ``sch_netem``, so a userspace relay (:class:`DelayRelay`) in the hub forwards the
  slot's two TCP ports to the learner holding every byte 50 ms in each direction;
- disk full: the actor's spill directory is a small tmpfs, filled to the last byte for a while.
"""
from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

REQUIRED_TOOLS = ("unshare", "nsenter", "ip", "nft", "mount")


def missing_tools() -> list[str]:
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


def in_private_namespaces() -> bool:
    """True in the namespaces the soak made: no interface but ``lo`` (never configure a real network)."""
    if os.environ.get("SOAK_NETNS") != "1":
        return False
    # /sys/class/net would show the namespace that mounted /sys, not ours: ask the kernel through ip.
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()]
    return all(n == "lo" or n[:1] == "h" and n[1:].isdigit() for n in names)


class ActorSlot:
    """One actor's network namespace and veth pair; ``prefix`` runs a command inside that namespace."""

    def __init__(self, index: int) -> None:
        if not in_private_namespaces():
            raise RuntimeError("refusing to create interfaces outside the soak's private network namespace")
        self.index = index
        self.hub_if, self.actor_if = f"h{index}", f"a{index}"
        self.hub_addr, self.actor_addr = f"10.199.{index}.1", f"10.199.{index}.2"
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        time.sleep(0.2)  # the holder must have unshared before the veth end moves into its namespace
        sh("ip", "link", "add", self.hub_if, "type", "veth", "peer", "name", self.actor_if, "netns",
           str(self.holder.pid))
        sh("ip", "addr", "add", f"{self.hub_addr}/30", "dev", self.hub_if)
        sh("ip", "link", "set", self.hub_if, "up")
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{self.actor_addr}/30", "dev",
                                                         self.actor_if], ["ip", "link", "set", self.actor_if, "up"]):
            sh(*self.prefix, *cmd)
        # One nftables table per side and slot; a fault adds rules, healing flushes them.
        for side in (self._hub, self._actor):
            side("add", "table", "inet", "soak")
            side("add", "chain", "inet", "soak", "out", "{ type filter hook output priority 0 ; }")
            side("add", "chain", "inet", "soak", "in", "{ type filter hook input priority 0 ; }")

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n"]

    def _hub(self, *args: str) -> None:
        # Every slot's hub-side rules live in the one hub namespace: table "soak" becomes "soak<i>" there.
        sh("nft", *[f"soak{self.index}" if a == "soak" else a for a in args])

    def _actor(self, *args: str) -> None:
        sh(*self.prefix, "nft", *args)

    def partition(self) -> None:
        self._hub("add", "rule", "inet", "soak", "out", "oifname", self.hub_if, "drop")
        self._hub("add", "rule", "inet", "soak", "in", "iifname", self.hub_if, "drop")
        self._actor("add", "rule", "inet", "soak", "out", "oifname", self.actor_if, "drop")
        self._actor("add", "rule", "inet", "soak", "in", "iifname", self.actor_if, "drop")

    def lossy(self, every_nth: int = 10) -> None:
        """Drop one packet in ``every_nth`` (at random) leaving either end of the veth."""
        self._hub("add", "rule", "inet", "soak", "out", "oifname", self.hub_if, "numgen", "random", "mod",
                  str(every_nth), "==", "0", "drop")
        self._actor("add", "rule", "inet", "soak", "out", "oifname", self.actor_if, "numgen", "random", "mod",
                    str(every_nth), "==", "0", "drop")

    def heal(self) -> None:
        self._hub("flush", "table", "inet", "soak")
        self._actor("flush", "table", "inet", "soak")

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


class DelayRelay:
    """Forward ``listen_host:listen_port`` -> ``target``, every byte held ``delay_s`` in each direction."""

    def __init__(self, listen_host: str, listen_port: int, target: tuple[str, int], delay_s: float) -> None:
        self.target, self.delay_s = target, delay_s
        self.server = socket.create_server((listen_host, listen_port), reuse_port=False)
        self.server.settimeout(0.5)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{listen_port}").start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:  # the learner is down: the actor sees a refused/closed connection, as without relay
                client.close()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                self._pump(src, dst)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        pending: queue.Queue = queue.Queue()

        def read() -> None:
            try:
                while data := src.recv(65536):
                    pending.put((time.monotonic() + self.delay_s, data))
            except OSError:
                pass
            pending.put((0.0, b""))

        def write() -> None:
            try:
                while True:
                    due, data = pending.get()
                    if not data:
                        break
                    time.sleep(max(0.0, due - time.monotonic()))
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):  # one side gone: close both, as a dead peer would
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.server.close()


class SmallDisk:
    """A tmpfs of ``size_mb`` at ``path`` (private mount namespace); :meth:`fill` takes every free byte."""

    def __init__(self, path: Path, size_mb: int) -> None:
        if not in_private_namespaces():
            raise RuntimeError("refusing to mount outside the soak's private mount namespace")
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path))
        self.filler = path / ".soak-filler"

    def fill(self) -> None:
        block = b"\0" * 65536
        with open(self.filler, "wb", buffering=0) as f:
            for size in (65536, 4096, 1):  # until even one byte does not fit (ENOSPC)
                try:
                    while True:
                        f.write(block[:size])
                except OSError:
                    continue

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        self.free()
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=10)
