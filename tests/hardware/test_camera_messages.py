"""Camera messages the way robots send them: ``sensor_msgs/Image`` (rgb8, bgr8, mono8) and
``sensor_msgs/CompressedImage`` (JPEG, PNG) decoded by ``decode_image_msg`` into (H, W, 3) RGB, then cropped and
resized by the shared ``robot_rl.images.prepare_frame``. The messages are plain objects with the ROS field names
(the decoder reads only those fields); the ROS suite sends real ones over DDS."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from robot_rl.hardware.ros2.sensors import decode_image_msg
from robot_rl.images import prepare_frame


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth RGB test frame (JPEG keeps it close): red ramps across, green down, blue constant."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), np.full_like(x, 40)], -1).astype(np.uint8)


def _raw(image: np.ndarray, encoding: str) -> SimpleNamespace:
    h, w = image.shape[:2]
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=0,
                           step=image.strides[0], data=image.tobytes())


def test_raw_encodings_decode_to_rgb() -> None:
    rgb = _scene()
    assert np.array_equal(decode_image_msg(_raw(rgb, "rgb8")), rgb)
    assert np.array_equal(decode_image_msg(_raw(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")), rgb)
    mono = np.ascontiguousarray(rgb[..., 1])
    assert np.array_equal(decode_image_msg(_raw(mono, "mono8")), np.repeat(mono[..., None], 3, 2))
    with pytest.raises(ValueError, match="16UC1"):
        decode_image_msg(_raw(mono.astype(np.uint16), "16UC1"))


@pytest.mark.parametrize("fmt,ext,tolerance", [("rgb8; jpeg compressed bgr8", ".jpg", 12), ("png", ".png", 0)])
def test_compressed_images_decode_to_rgb(fmt: str, ext: str, tolerance: int) -> None:
    rgb = _scene()
    ok, payload = cv2.imencode(ext, rgb[..., ::-1])  # image_transport encodes BGR, as OpenCV does
    assert ok
    decoded = decode_image_msg(SimpleNamespace(format=fmt, data=payload.tobytes()))
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb).max() <= tolerance
    ok, mono_png = cv2.imencode(".png", rgb[..., 1])
    assert np.array_equal(decode_image_msg(SimpleNamespace(format="mono8; png compressed", data=list(
        mono_png.tobytes()))), np.repeat(rgb[..., 1:2], 3, 2))  # rclpy may hand sequences as lists


def test_corrupt_compressed_image_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a JPEG or PNG"):
        decode_image_msg(SimpleNamespace(format="jpeg", data=b"\xff\xd8 not really a jpeg"))
    with pytest.raises(ValueError, match="empty"):
        decode_image_msg(SimpleNamespace(format="jpeg", data=b""))


def test_decoded_frames_go_through_the_shared_crop_and_resize() -> None:
    rgb = _scene()
    ok, payload = cv2.imencode(".png", rgb[..., ::-1])
    frame = prepare_frame(decode_image_msg(SimpleNamespace(format="png", data=payload.tobytes())),
                          crop=(8, 0, 48, 48), size=(16, 16))
    assert frame.shape == (16, 16, 3)
    assert np.array_equal(frame, prepare_frame(rgb, crop=(8, 0, 48, 48), size=(16, 16)))
