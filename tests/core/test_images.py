"""The shared camera path: crop, resize, channel handling and clear refusals."""

import numpy as np
import pytest

from robot_rl.images import CameraConfig, ImageError, prepare_camera, prepare_frame


def _gradient(h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=2).astype(np.uint8)


def test_crop_takes_the_region_of_interest_exactly():
    frame = _gradient(480, 640)
    out = prepare_frame(frame, crop=(100, 50, 64, 32))
    assert out.shape == (32, 64, 3)
    np.testing.assert_array_equal(out, frame[50:82, 100:164])


def test_resize_from_native_to_policy_size_keeps_the_mean_colour():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 320:] = 200  # right half bright
    out = prepare_camera(frame, CameraConfig(crop=None, size=(128, 128)))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert abs(float(out.mean()) - float(frame.mean())) < 1.0
    assert out[:, :60].max() == 0 and out[:, 68:].min() == 200  # the edge stays where it was


def test_mono_and_rgba_become_rgb():
    mono = np.full((10, 12), 7, np.uint8)
    assert prepare_frame(mono).shape == (10, 12, 3)
    rgba = np.full((10, 12, 4), 9, np.uint8)
    assert prepare_frame(rgba, size=(5, 6)).shape == (5, 6, 3)


@pytest.mark.parametrize("frame, kwargs, match", [
    (np.zeros((8, 8, 3), np.float32), {}, "uint8"),
    (np.zeros((8, 8, 2), np.uint8), {}, "shape"),
    (np.zeros((8, 8, 3), np.uint8), {"crop": (4, 4, 8, 8)}, "does not fit"),
    (np.zeros((8, 8, 3), np.uint8), {"size": (0, 4)}, "size"),
])
def test_bad_frames_and_settings_are_refused_with_a_reason(frame, kwargs, match):
    with pytest.raises(ImageError, match=match):
        prepare_frame(frame, name="front", **kwargs)
