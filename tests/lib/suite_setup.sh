# Shared by the test steps that need system tools (tests/hardware/mcu/run_suite.sh,
# tests/dashboard/run_browser_test.sh). Source it from the repository root.

# pick_python [PYTHON]: prints the interpreter a step runs: its argument, else $PYTHON, else the repo's
# .venv/bin/python, else python3.
pick_python() {
  local py="${1:-${PYTHON:-}}"
  if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
  fi
  printf '%s\n' "$py"
}

# apt_install STEP INSTALL_TIMEOUT_S PACKAGE...: installs the named Debian packages (the caller passes only the
# missing ones; nothing happens for none), bounded in time, as root or through passwordless sudo.
apt_install() {
  local step="$1" install_timeout="$2"
  shift 2
  [ "$#" -gt 0 ] || return 0
  echo "$step: installing $*"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
  DEBIAN_FRONTEND=noninteractive timeout 150 $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout "$install_timeout" $sudo apt-get install -y -qq --no-install-recommends \
    "$@" >/dev/null
}
