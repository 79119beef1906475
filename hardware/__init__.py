"""robot_rl.hardware (see DESIGN.md)."""
