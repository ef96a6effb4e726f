"""Camera-motion estimation on a textured photo shifted by a known amount."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from cnnkit.errors import CnnkitError
from cnnkit.track.cmc import CameraMotion, estimate_camera_motion

SHIFT = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -4.0]])  # content moves 7 px right and 4 px up


@pytest.fixture(scope="module")
def rgb_pair():
    rgb = astronaut()
    h, w = rgb.shape[:2]
    return rgb, cv2.warpAffine(rgb, SHIFT, (w, h), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("method", ["sparse", "ecc"])
def test_recovers_a_translation_within_a_pixel(rgb_pair, method):
    prev, cur = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in rgb_pair)
    for downscale in (1, 2):
        warp = estimate_camera_motion(prev, cur, method=method, downscale=downscale)
        assert warp.shape == (2, 3)
        np.testing.assert_allclose(warp[:, 2], [7.0, -4.0], atol=1.0)
        np.testing.assert_allclose(warp[:, :2], np.eye(2), atol=0.01)


@pytest.mark.parametrize("method", ["sparse", "ecc"])
def test_identical_frames_give_the_identity(rgb_pair, method):
    gray = cv2.cvtColor(rgb_pair[0], cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(estimate_camera_motion(gray, gray, method=method), np.eye(2, 3), atol=1e-3)


def test_flat_frames_and_bad_arguments():
    flat = np.full((64, 64), 128, np.uint8)
    for method in ("sparse", "ecc"):  # nothing to lock onto: the identity, not an error
        np.testing.assert_array_equal(estimate_camera_motion(flat, flat, method=method), np.eye(2, 3))
    with pytest.raises(CnnkitError, match="sparse, ecc"):
        estimate_camera_motion(flat, flat, method="orb")
    with pytest.raises(CnnkitError, match="downscale"):
        estimate_camera_motion(flat, flat, downscale=0)


def test_camera_motion_remembers_the_previous_frame(rgb_pair):
    motion = CameraMotion("sparse")
    np.testing.assert_array_equal(motion(rgb_pair[0]), np.eye(2, 3))  # first frame: nothing to compare with
    np.testing.assert_allclose(motion(rgb_pair[1])[:, 2], [7.0, -4.0], atol=1.0)
    np.testing.assert_allclose(motion(rgb_pair[1]), np.eye(2, 3), atol=1e-3)
