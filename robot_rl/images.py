"""One camera-image path for every source: the twin, the ROS 2 node and dataset import.

A camera delivers frames at its native size (e.g. 640x480). Policies and reward models expect one fixed
size per camera. ``prepare_frame`` crops a region of interest and resizes with OpenCV, the same way
wherever the frame comes from, so a policy trained on the twin sees what it will see on the robot.

Conventions: frames are ``uint8`` arrays ``(H, W, 3)`` in RGB order (``(H, W)`` mono is expanded to
three channels); ``crop`` is ``(x, y, width, height)`` in pixels of the native frame; ``size`` is
``(height, width)`` of the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from robot_rl.config import ConfigNode


class ImageError(ValueError):
    """A frame that cannot be turned into the configured camera image (wrong dtype, channels, crop)."""


@dataclass
class CameraConfig(ConfigNode):
    """How one camera's native frames become the policy's image (``env.cameras.<name>``; a hydra structured
    config, read-only once loaded)."""

    crop: Optional[tuple[int, int, int, int]] = None
    """Region of interest ``(x, y, width, height)`` in native pixels, applied before resizing; None keeps
    the whole frame."""
    size: Optional[tuple[int, int]] = None
    """Output ``(height, width)``; None keeps the (cropped) size."""


def _as_rgb(frame: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"camera {name!r}: expected a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ImageError(f"camera {name!r}: expected uint8 pixels, got {frame.dtype}")
    if frame.ndim == 2:  # mono8: (H, W) -> (H, W, 3)
        return np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    if frame.ndim == 3 and frame.shape[2] == 4:  # RGBA: drop alpha
        return frame[:, :, :3]
    raise ImageError(f"camera {name!r}: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) image, "
                     f"got shape {tuple(frame.shape)}")


def prepare_frame(frame: np.ndarray, crop: Optional[Sequence[int]] = None,
                  size: Optional[Sequence[int]] = None, name: str = "camera") -> np.ndarray:
    """Crop and resize one native frame: ``(H, W[, C]) uint8 -> (size[0], size[1], 3) uint8`` RGB.

    Downscaling uses ``INTER_AREA`` (no aliasing of thin edges such as the gripper fingers); upscaling
    uses ``INTER_LINEAR``. A crop that leaves the frame is an error, never silently clipped: a
    mis-set region of interest would otherwise train the policy on the wrong part of the scene.
    """
    import cv2  # opencv-python-headless; imported here so state-only users never load it

    image = _as_rgb(frame, name)
    h, w = image.shape[:2]
    if crop is not None:
        if len(crop) != 4:
            raise ImageError(f"camera {name!r}: crop must be (x, y, width, height), got {list(crop)}")
        x, y, cw, ch = (int(v) for v in crop)
        if cw <= 0 or ch <= 0 or x < 0 or y < 0 or x + cw > w or y + ch > h:
            raise ImageError(f"camera {name!r}: crop (x={x}, y={y}, w={cw}, h={ch}) does not fit the "
                             f"{w}x{h} frame")
        image = image[y:y + ch, x:x + cw]
    if size is not None:
        if len(size) != 2 or int(size[0]) <= 0 or int(size[1]) <= 0:
            raise ImageError(f"camera {name!r}: size must be (height, width) > 0, got {list(size)}")
        out_h, out_w = int(size[0]), int(size[1])
        if image.shape[:2] != (out_h, out_w):
            shrinking = out_h * out_w < image.shape[0] * image.shape[1]
            image = cv2.resize(image, (out_w, out_h),
                               interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image)


def prepare_camera(frame: np.ndarray, camera: CameraConfig, name: str = "camera") -> np.ndarray:
    """``prepare_frame`` with one camera's configured crop and size."""
    return prepare_frame(frame, camera.crop, camera.size, name)
