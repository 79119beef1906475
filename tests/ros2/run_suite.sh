#!/usr/bin/env bash
# The ROS 2 test step (`make test-ros`): creates/reuses .venv-ros (rclpy Jazzy + Fast DDS and the message
# packages from PyPI, cyclonedds + rosbags as independent peers, colcon, ROS 2's launch stack from
# ../shared/ros2-launch), then runs the `ros`-marked tests inside
# a private network namespace (loopback only) under a hard time bound. Idempotent: a stamp file skips the
# install when nothing it depends on changed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
VENV="${ROS_VENV:-$ROOT/.venv-ros}"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu/}"
LIMIT_S="${ROS_SUITE_TIMEOUT_S:-900}"
# Each install step is bounded too. A fresh install took 400+ s on a 2-core machine busy with training runs, so
# the bound is generous; a step that runs past it says so, and the next run resumes (no stamp was written).
INSTALL_LIMIT_S="${ROS_INSTALL_TIMEOUT_S:-900}"
ROS_PACKAGES=("ros-jazzy-rclpy[fastrtps]" ros-jazzy-std-msgs ros-jazzy-sensor-msgs ros-jazzy-geometry-msgs
              ros-jazzy-trajectory-msgs ros-jazzy-std-srvs ros-jazzy-builtin-interfaces ros-jazzy-ament-index-python
              ros-jazzy-lifecycle-msgs ros-jazzy-rcl-interfaces
              "cyclonedds==11.0.1" "rosbags>=0.10" "colcon-common-extensions" "mcap>=1.1")
# ROS 2 Jazzy's pure-Python launch stack (launch, launch_ros, ros2launch, ros2cli, ros2pkg: not on PyPI) lives
# beside the repository in CI and on dev machines; without it the `ros2 launch` tests skip with that reason.
LAUNCH_SRC="$ROOT/../shared/ros2-launch"
HAVE_LAUNCH=$(test -x "$LAUNCH_SRC/install.sh" && echo yes || echo no)
STAMP="$VENV/.installed-$( (cat "$0" pyproject.toml; echo "$HAVE_LAUNCH") | sha256sum | cut -c1-16)"

bounded() {  # bounded SECONDS WHAT CMD...: run CMD, and name WHAT if it runs past SECONDS
  local limit=$1 what=$2
  shift 2
  local rc=0
  timeout "$limit" "$@" || rc=$?
  if [ "$rc" = 124 ]; then
    echo "== ROS venv: $what ran past ${limit} s (a busy machine or a slow package index) and was stopped;" \
         "run \`make test-ros\` again to resume, or raise ROS_INSTALL_TIMEOUT_S" >&2
  fi
  return "$rc"
}

if [ ! -f "$STAMP" ]; then
  echo "== ROS venv: installing into $VENV (first run only)"
  T0=$(date +%s)
  test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  # torch first, CPU build where there is no NVIDIA GPU (a bare requirement would pull CUDA wheels).
  if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    if ! command -v nvidia-smi >/dev/null 2>&1 && "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$TORCH_CPU_INDEX', timeout=5)" 2>/dev/null; then
      bounded "$INSTALL_LIMIT_S" "installing torch" "${PIP[@]}" "$TORCH" --index-url "$TORCH_CPU_INDEX"
    else
      bounded "$INSTALL_LIMIT_S" "installing torch" "${PIP[@]}" "$TORCH"
    fi
  fi
  bounded "$INSTALL_LIMIT_S" "installing robot_rl and the ROS 2 packages" "${PIP[@]}" -e ".[test,ros2]" \
    "${ROS_PACKAGES[@]}"
  if [ "$HAVE_LAUNCH" = yes ]; then
    bounded "$INSTALL_LIMIT_S" "installing ROS 2's launch stack" "$LAUNCH_SRC/install.sh" "$VENV"
  else echo "== $LAUNCH_SRC absent: the real \`ros2 launch\` tests will skip"; fi
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
  echo "== ROS venv ready in $(( $(date +%s) - T0 )) s"
fi

# Loopback only: no DDS traffic leaves this namespace, and no other machine's ROS graph leaks in. Multicast on lo
# lets Cyclone DDS and Fast DDS discover each other; Fast DDS additionally gets ROS's LOCALHOST range.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}" MUJOCO_GL="${MUJOCO_GL:-egl}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" WANDB_MODE=disabled
# launch_ros imports composition_interfaces at load time; the stand-in fails loudly if a composable node is used.
if [ "$HAVE_LAUNCH" = yes ]; then
  export ROBOT_RL_LAUNCH_STANDINS="$LAUNCH_SRC/stand-ins"
  export PYTHONPATH="$LAUNCH_SRC/stand-ins${PYTHONPATH:+:$PYTHONPATH}"
fi
exec timeout -k 10 "$LIMIT_S" unshare -n bash -c '
  ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo
  exec "$0" -m pytest -m ros -q -rsx -p no:cacheprovider "${@:-tests/ros2}"' "$VENV/bin/python" "$@"
