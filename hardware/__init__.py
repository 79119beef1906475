"""robot_rl.hardware: ROS 2 robot and twin nodes, teleop, microcontroller export (see docs/architecture.md)."""
