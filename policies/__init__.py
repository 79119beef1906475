"""Policies (imported as ``robot_rl.policies``). Importing this package registers the built-in policies."""
from robot_rl.policies import encoders, gaussian  # noqa: F401  (registers the gaussian policy)
from robot_rl.policies import diffusion, flow  # noqa: F401  (registers the diffusion and flow policies)
from robot_rl.policies import pretrained_vla, vla  # noqa: F401  (registers the compact and pretrained VLAs)
from robot_rl.policies.base import Policy

__all__ = ["Policy"]
