#!/usr/bin/env bash
# Browser step of the test run: installs Debian's chromium + chromium-driver when missing (bounded, idempotent, a
# no-op when present), then runs the `browser`-marked dashboard test under a hard time bound. One browser run:
# the machine is shared. Screenshots land under pytest's tmp dir; the path is printed.
#   tests/dashboard/run_browser_test.sh [PYTHON]      (PYTHON defaults to .venv/bin/python, then python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib/suite_setup.sh
PY="$(pick_python "${1:-}")"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
apt_install "browser test" 400 ${need[@]+"${need[@]}"}
"$PY" -c 'import selenium, starlette, uvicorn' 2>/dev/null || "$PY" -m pip install -q "selenium>=4.20" "starlette>=0.37" "uvicorn>=0.29"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec timeout 300 "$PY" -m pytest tests/dashboard -m browser -q -s -p no:cacheprovider
