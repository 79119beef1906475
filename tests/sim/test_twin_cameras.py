"""Per-camera crop/resize on the pick-cube twin (``env.cameras.<name>.crop/.size``) goes through the one image path
(:func:`robot_rl.images.prepare_frame`) that the ROS 2 node and dataset import use."""
from __future__ import annotations

import numpy as np
import pytest

from robot_rl.config import load_config
from robot_rl.images import ImageError, prepare_frame
from robot_rl.registry import ENVS


def test_twin_cameras_crop_and_resize_from_the_native_frame() -> None:
    cfg = load_config(["env.obs=pixels", "env.camera_native_size=[120,160]", "env.cameras.front.crop=[20,0,120,120]",
                       "env.cameras.front.size=[48,48]", "env.cameras.wrist.size=[30,40]"])
    env = ENVS.make("panda_pick_cube", cfg.env, seed=0)
    try:
        assert env.obs_spec.fields["images/front"].shape == (48, 48, 3)
        assert env.obs_spec.fields["images/wrist"].shape == (30, 40, 3)
        obs = env.reset(seed=3)
        assert obs["images/front"].shape == (48, 48, 3) and obs["images/wrist"].shape == (30, 40, 3)
        native = env.render("front", (120, 160))  # the same scene at the camera's native size
        np.testing.assert_array_equal(obs["images/front"], prepare_frame(native, (20, 0, 120, 120), (48, 48)))
        np.testing.assert_array_equal(obs["images/wrist"], prepare_frame(env.render("wrist", (120, 160)),
                                                                         None, (30, 40)))
        step = env.step(np.zeros(4, np.float32))
        assert step.obs["images/front"].shape == (48, 48, 3)
    finally:
        env.close()
    plain = load_config(["env.obs=pixels", "env.image_size=32"])  # no crop/size: image_size squares as before
    env = ENVS.make("panda_pick_cube", plain.env, seed=0)
    try:
        assert env.reset(seed=3)["images/front"].shape == (32, 32, 3)
    finally:
        env.close()


def test_twin_camera_config_errors_are_loud() -> None:
    cfg = load_config(["env.obs=pixels", "env.camera_native_size=[120,160]", "env.cameras.front.crop=[100,0,120,120]"])
    with pytest.raises(ImageError, match="does not fit the 160x120 frame"):
        ENVS.make("panda_pick_cube", cfg.env, seed=0)
