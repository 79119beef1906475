# The two commands a newcomer needs (README): `make train` and `make test`. Each creates .venv on a fresh
# machine, installing PyTorch first (the CPU build when no NVIDIA GPU is present) and then this project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH ?= torch==2.13.0
# No GPU and PyTorch's CPU index reachable: take the CPU build from there (PyPI's Linux wheel is CUDA).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu/
export MUJOCO_GL ?= egl

.PHONY: train test test-default test-slow test-ros test-mcu test-dashboard setup clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "robot_rl needs Python >= 3.10"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# setuptools >= 77 reads the SPDX `license` string of pyproject.toml (the venv seeds an older one, or none).
	$(PIP) install -q --upgrade pip "setuptools>=77"
	@# A bare `torch` requirement would pull a multi-GB CUDA build: install the right torch first.
	@if ! $(PY) -c 'import torch' 2>/dev/null; then \
	  if ! command -v nvidia-smi >/dev/null 2>&1 && $(PY) -c 'import urllib.request as u; u.urlopen("$(TORCH_CPU_INDEX)", timeout=5)' 2>/dev/null; \
	  then $(PIP) install -q "$(TORCH)" --index-url $(TORCH_CPU_INDEX); \
	  else $(PIP) install -q "$(TORCH)"; fi; fi
	$(PIP) install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# Main job: the whole RL loop on the embedded MuJoCo twin (extra overrides: make train ARGS="num_actors=2").
train: $(VENV)/.installed
	$(VENV)/bin/robot-rl train $(ARGS)

# Everything CI runs: the default suite (GPU tests skip with a reason when no GPU is present), then the ROS 2,
# the microcontroller and the dashboard (real browser) suites, each in its own bounded step that installs its own tools.
test: test-default test-ros test-mcu test-dashboard

# Default suite only (extra pytest arguments: make test-default ARGS="-k replay"). -rsx lists every skipped
# test and expected failure with its reason at the end, so a reader sees what did not run and why.
test-default: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -rsx $(ARGS)

# The long tests (`slow` marker: learning and end-to-end runs of several minutes each), in no other target.
test-slow: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -rsx -m slow $(ARGS)

# ROS 2 suite (`ros` marker): its own venv (.venv-ros: rclpy Jazzy + Fast DDS from PyPI, cyclonedds, rosbags,
# colcon, and the real `ros2 launch` from ../shared/ros2-launch when present), run inside a private network
# namespace (unshare -n, loopback only) under a hard time bound.
test-ros:
	tests/ros2/run_suite.sh $(ROS_ARGS)

# Microcontroller suite (`mcu` marker): installs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm
# from Debian when missing, cross-compiles the generated C and runs it under QEMU: Cortex-M4 (netduinoplus2, DSP
# kernel), Cortex-M3 (lm3s6965evb) and Cortex-M0 (microbit), the last two on the portable kernel.
test-mcu: $(VENV)/.installed
	tests/hardware/mcu/run_suite.sh $(PY)

# Dashboard in a real browser (`browser` marker): installs Debian's chromium + chromium-driver when missing and
# drives the operator page with Selenium against a short twin run (2 actors, virtual operator).
test-dashboard: $(VENV)/.installed
	tests/dashboard/run_browser_test.sh $(PY)

clean-venv:
	rm -rf $(VENV)
