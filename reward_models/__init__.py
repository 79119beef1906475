"""robot_rl.reward_models (see DESIGN.md)."""
