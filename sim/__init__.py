"""Simulated twins and env adapters (imported as ``robot_rl.sim``). Importing registers the built-in envs.

Heavy simulators (mujoco) are imported by the modules that need them, when an env is built.
"""
from robot_rl.sim import point_reach  # noqa: F401  (registers point_reach)
from robot_rl.sim import panda_config  # noqa: F401  (registers panda_pick_cube, panda_pick_place_cube)
from robot_rl.sim import gym_adapter  # noqa: F401  (registers gym)
