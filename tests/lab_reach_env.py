"""LabReach: another lab's Gymnasium env, as robot_rl meets it (nested Dict obs, info["succeed"], kwargs).

Move the gripper to the target and close it there. Reward: minus the distance (dense); success: within
``tolerance`` with the gripper closed. render() returns one frame per camera: [front, wrist].
"""
import gymnasium as gym
import numpy as np
from gymnasium.spaces import Box, Dict


class LabReach(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, horizon=60, goal=(1.0, 0.0, 0.0), tolerance=0.15, start_spread=0.5, pixels=False,
                 image_size=32, render_mode=None):
        self.horizon, self.goal, self.tolerance = horizon, np.asarray(goal, np.float64), tolerance
        self.start_spread, self.pixels, self.size, self.render_mode = start_spread, pixels, image_size, render_mode
        spaces = {"robot": Dict({"pos": Box(-1, 1, (3,)), "gripper": Box(0, 1, (1,))}), "target": Box(-1, 1, (3,))}
        if pixels:
            image = Box(0, 255, (image_size, image_size, 3), np.uint8)
            spaces["pixels"] = Dict({"front": image, "wrist": image})
        self.observation_space = Dict(spaces)
        self.action_space = Box(-1, 1, (4,))  # dx, dy, dz, grip (> 0 closes)

    def _frame(self, view):
        frame = np.full((self.size, self.size, 3), 40, np.uint8)
        for point, color in ((self.goal, (0, 200, 0)), (self.pos, (220, 60, 60) if self.closed else (60, 60, 220))):
            x, y = point[:2] if view == "front" else (point - self.pos)[:2] * 0.5
            row, col = (np.clip((np.array([y, x]) + 1) / 2 * (self.size - 1), 0, self.size - 1)).astype(int)
            frame[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = color
        return frame

    def _obs(self):
        obs = {"robot": {"pos": self.pos.astype(np.float32), "gripper": np.array([self.closed], np.float32)},
               "target": self.goal.astype(np.float32)}
        if self.pixels:
            obs["pixels"] = {"front": self._frame("front"), "wrist": self._frame("wrist")}
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.closed, self.t = self.np_random.uniform(-1, 1, 3) * self.start_spread, False, 0
        return self._obs(), {}

    def step(self, action):
        self.pos = np.clip(self.pos + 0.1 * np.asarray(action[:3]), -1, 1)
        self.closed, self.t = bool(action[3] > 0), self.t + 1
        distance = float(np.linalg.norm(self.pos - self.goal))
        succeed = distance < self.tolerance and self.closed
        return self._obs(), -distance, succeed, self.t >= self.horizon, {"succeed": succeed}

    def render(self):
        if self.render_mode == "rgb_array":
            return [self._frame("front"), self._frame("wrist")]
        return None


class ReachExpert:
    """Scripted expert (``env.expert=lab_reach_env:ReachExpert``): head for the target, close when there."""

    def __init__(self, env):
        self.env = env.unwrapped

    def act(self, obs):
        delta = obs["target"] - obs["robot"]["pos"]
        grip = 1.0 if np.linalg.norm(delta) < self.env.tolerance * 0.8 else -1.0
        return np.append(np.clip(delta / 0.1, -1, 1), grip).astype(np.float32)


gym.register(id="LabReach-v0", entry_point=LabReach)
