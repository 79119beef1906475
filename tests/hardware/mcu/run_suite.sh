#!/usr/bin/env bash
# Device step of the test run: installs the Cortex-M toolchain and QEMU from Debian when missing (bounded,
# idempotent, a no-op when present), then runs the `mcu`-marked tests under a hard time bound.
#   tests/hardware/mcu/run_suite.sh [PYTHON]      (PYTHON defaults to .venv/bin/python, then python3)
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY="${1:-${PYTHON:-}}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
need=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
[ -n "$(find /usr/lib/arm-none-eabi -name libc_nano.a 2>/dev/null | head -1)" ] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
if [ ${#need[@]} -gt 0 ]; then
  echo "mcu suite: installing ${need[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  timeout 150 $SUDO apt-get update -qq
  timeout 300 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export MUJOCO_GL="${MUJOCO_GL:-egl}"
exec timeout 240 "$PY" -m pytest tests/hardware/mcu -m mcu -q -rsx -p no:cacheprovider
