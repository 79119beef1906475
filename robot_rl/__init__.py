"""robot_rl: reinforcement learning on real robots (see README.md and docs/architecture.md).

Importing the package is light: no torch, mujoco, rclpy or device library is imported here.
"""
from robot_rl.specs import ActionSpec, ArraySpec, ObsSpec, spec_hash
from robot_rl.types import Batch, Episode, Transition

__version__ = "0.1.0"
__all__ = ["ActionSpec", "ArraySpec", "ObsSpec", "spec_hash", "Batch", "Episode", "Transition", "__version__"]
