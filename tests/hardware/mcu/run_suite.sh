#!/usr/bin/env bash
# Device step of the test run: installs the Cortex-M toolchain and QEMU from Debian when missing (bounded,
# idempotent, a no-op when present), then runs the `mcu`-marked tests under a hard time bound.
#   tests/hardware/mcu/run_suite.sh [PYTHON]      (PYTHON defaults to .venv/bin/python, then python3)
set -euo pipefail
cd "$(dirname "$0")/../../.."
. tests/lib/suite_setup.sh
PY="$(pick_python "${1:-}")"
need=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
[ -n "$(find /usr/lib/arm-none-eabi -name libc_nano.a 2>/dev/null | head -1)" ] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
apt_install "mcu suite" 300 ${need[@]+"${need[@]}"}
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec timeout 240 "$PY" -m pytest tests/hardware/mcu -m mcu -q -rsx -p no:cacheprovider
