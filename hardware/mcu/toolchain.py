"""Compilers and emulator: host gcc, arm-none-eabi-gcc / -size, qemu-system-arm (netduinoplus2 = STM32F405).

Everything fails loudly (``ToolchainError`` with the tool's stderr); ``*_available()`` tell callers whether a
tool is installed so they can skip a step with a reason instead.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

HOST_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2")
M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
M4_CFLAGS = (*M4_FLAGS, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
             "-ffunction-sections", "-fdata-sections")
QEMU_MACHINE = "netduinoplus2"


class ToolchainError(RuntimeError):
    """A compiler, size tool or emulator run failed; the message carries its command and output."""


def _run(cmd: Sequence[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(map(str, cmd)), capture_output=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise ToolchainError(f"timed out after {timeout}s: {' '.join(map(str, cmd))}") from e
    return proc


def _check(proc: subprocess.CompletedProcess, cmd: Sequence[str]) -> None:
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        raise ToolchainError(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{err}")


def host_cc() -> str | None:
    return shutil.which("gcc") or shutil.which("cc")


def arm_available() -> bool:
    return all(shutil.which(t) for t in ("arm-none-eabi-gcc", "arm-none-eabi-size"))


def qemu_available() -> bool:
    return shutil.which("qemu-system-arm") is not None


def compile_host(sources: Sequence[Path], exe: Path, include: Sequence[Path] = (), extra: Sequence[str] = (),
                 timeout: float = 120) -> Path:
    """``gcc -std=c99 -Wall -Wextra -Werror -pedantic -O2`` the sources into ``exe``."""
    cc = host_cc()
    if cc is None:
        raise ToolchainError("no host C compiler (gcc/cc) on PATH")
    cmd = [cc, *HOST_CFLAGS, *extra, *(f"-I{p}" for p in include), *sources, "-o", exe]
    _check(_run(cmd, timeout), cmd)
    return exe


def run_harness_q(exe: Path, x_q: np.ndarray, timeout: float = 60) -> np.ndarray:
    """Feed ``(N, D)`` int8 records to ``harness q``; returns ``(N, A)`` int8."""
    x_q = np.ascontiguousarray(x_q, np.int8)
    proc = _run([exe, "q"], timeout, input=x_q.tobytes())
    _check(proc, [exe, "q"])
    return np.frombuffer(proc.stdout, np.int8).reshape(len(x_q), -1)


def run_harness_f(exe: Path, obs: np.ndarray, timeout: float = 60) -> np.ndarray:
    """Feed ``(N, D)`` float32 observations to ``harness f``; returns ``(N, A)`` float32 (NaN = refused)."""
    obs = np.ascontiguousarray(obs, np.float32)
    proc = _run([exe, "f"], timeout, input=obs.tobytes())
    _check(proc, [exe, "f"])
    return np.frombuffer(proc.stdout, np.float32).reshape(len(obs), -1)


def compile_m4_object(source: Path, obj: Path, include: Sequence[Path] = (), extra: Sequence[str] = (),
                      timeout: float = 120) -> Path:
    """Cross-compile one file for Cortex-M4F (``-pedantic`` too: the generated code must pass it)."""
    cmd = ["arm-none-eabi-gcc", *M4_CFLAGS, "-pedantic", "-fstack-usage", *extra, *(f"-I{p}" for p in include),
           "-c", source, "-o", obj]
    _check(_run(cmd, timeout), cmd)
    return obj


@dataclass
class SizeInfo:
    text: int
    """Code + const data (flash)."""
    data: int
    """Initialised RAM (its image also occupies flash)."""
    bss: int
    """Zero-initialised RAM (scratch buffers)."""

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss


def arm_size(path: Path, timeout: float = 30) -> SizeInfo:
    """Berkeley-format ``arm-none-eabi-size`` of an object or ELF."""
    cmd = ["arm-none-eabi-size", "-B", path]
    proc = _run(cmd, timeout, text=True)
    _check(proc, cmd)
    fields = proc.stdout.strip().splitlines()[-1].split()
    return SizeInfo(int(fields[0]), int(fields[1]), int(fields[2]))


def max_stack(su_file: Path) -> int:
    """Sum of the per-function stack frames in a ``-fstack-usage`` file: an upper bound for a call chain of them."""
    total = 0
    for line in su_file.read_text().splitlines():
        m = re.search(r"\t(\d+)\t", line)
        if m:
            total += int(m.group(1))
    return total


FIRMWARE_TARGETS = {"cortex-m4": ("firmware.elf", "netduinoplus2"), "cortex-m3": ("firmware_m3.elf", "lm3s6965evb"),
                    "cortex-m0": ("firmware_m0.elf", "microbit")}
"""Core -> (Makefile target, QEMU machine): STM32F405 (M4F, DSP kernel), TI LM3S6965 (M3) and nRF51822 (M0),
the last two without DSP extension or FPU (portable kernel, software floats)."""


def build_firmware(fw_dir: Path, timeout: float = 180, core: str = "cortex-m4", extra_cflags: str = "") -> Path:
    """``make -C fw_dir <target>`` with the Makefile the exporter wrote there (``EXTRA_CFLAGS`` appended)."""
    target = FIRMWARE_TARGETS[core][0]
    cmd = ["make", "-s", "-B", "-C", fw_dir, target, f"EXTRA_CFLAGS={extra_cflags}"]
    _check(_run(cmd, timeout), cmd)
    return fw_dir / target


def build_firmware_host(fw_dir: Path, timeout: float = 120, extra_cflags: str = "") -> Path:
    """The same firmware ``main.c`` against the stdio platform, for the host-vs-device comparison."""
    cmd = ["make", "-s", "-B", "-C", fw_dir, "firmware_host", f"EXTRA_CFLAGS={extra_cflags}"]
    _check(_run(cmd, timeout), cmd)
    return fw_dir / "firmware_host"


def run_qemu(elf: Path, timeout: float = 120, icount_shift: int = 4, machine: str = QEMU_MACHINE) -> tuple[int, str]:
    """Boot ``elf`` on a QEMU machine (netduinoplus2 by default) with semihosting; returns (exit code, output).

    ``-icount shift=N`` makes the virtual clock advance ``2^N`` ns per guest instruction, so the SysTick
    counter (CPU clock) the firmware reads counts instructions, which the firmware calibrates itself.
    """
    if not qemu_available():
        raise ToolchainError("qemu-system-arm is not installed")
    # Semihosting output goes to a file chardev: QEMU's stdio is buffered and loses its tail when the guest
    # exits through SYS_EXIT_EXTENDED.
    log_path = Path(elf).with_suffix(".semihosting.txt")
    log_path.unlink(missing_ok=True)
    cmd = ["qemu-system-arm", "-M", machine, "-display", "none", "-monitor", "none", "-serial", "none",
           "-chardev", f"file,id=sh0,path={log_path}", "-semihosting-config", "enable=on,target=native,chardev=sh0",
           "-icount", f"shift={icount_shift}", "-kernel", elf]
    proc = _run(cmd, timeout, text=True)
    if proc.returncode != 0 and not log_path.exists():
        raise ToolchainError(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{proc.stderr}")
    return proc.returncode, log_path.read_text()


def run_host(exe: Path, timeout: float = 60) -> tuple[int, str]:
    proc = _run([exe], timeout, text=True)
    return proc.returncode, proc.stdout
