"""Camera-motion compensation: the 2x3 affine map from the previous frame's pixels to the current frame's.

    motion = CameraMotion("sparse")
    for frame in frames:                    # HxWx3 RGB uint8
        warp = motion(frame)                # identity on the first frame and on failure
        rows = tracker.update(dets, warp=warp)

Two methods, both on frames downscaled by an integer factor (the translation is scaled back up):
- "sparse": Shi-Tomasi corners (``cv2.goodFeaturesToTrack``) tracked by pyramidal Lucas-Kanade optical flow,
  then a rotation + uniform scale + translation fitted with RANSAC (``cv2.estimateAffinePartial2D``); fast, and
  the RANSAC step ignores moving objects as long as the background dominates.
- "ecc": enhanced correlation coefficient maximisation (``cv2.findTransformECC``, Evangelidis & Psarakis 2008)
  with a Euclidean motion model and a capped iteration count.
Both follow the global motion compensation of BoT-SORT (Aharon et al. 2022, arXiv:2206.14651, MIT), rewritten.
"""

from __future__ import annotations

import cv2
import numpy as np

from cnnkit.errors import CnnkitError

METHODS = ("sparse", "ecc")
ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)  # at most 50 iterations (~60 ms at 960x540)


def identity() -> np.ndarray:
    """The 2x3 identity warp (no camera motion)."""
    return np.eye(2, 3)


def _gray(image: np.ndarray) -> np.ndarray:
    """HxW or HxWx3 RGB (or HxWx1) -> HxW uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise CnnkitError(f"camera motion needs a gray (HxW) or RGB (HxWx3) frame, got shape {image.shape}",
                          "pass the decoded frame")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (the frame is cropped to a multiple of the factor first)."""
    if factor == 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    return cv2.resize(image[:h, :w], (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def _sparse(prev: np.ndarray, cur: np.ndarray) -> np.ndarray | None:
    points = cv2.goodFeaturesToTrack(prev, maxCorners=500, qualityLevel=0.01, minDistance=3, blockSize=3)
    if points is None or len(points) < 4:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(prev, cur, points, None)
    ok = status.reshape(-1) == 1
    if ok.sum() < 4:
        return None
    warp, _ = cv2.estimateAffinePartial2D(points[ok], moved[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
    return warp


def _ecc(prev: np.ndarray, cur: np.ndarray) -> np.ndarray | None:
    warp = np.eye(2, 3, dtype=np.float32)
    # the warp maps template (previous frame) coordinates onto input (current frame) coordinates
    _, warp = cv2.findTransformECC(prev, cur, warp, cv2.MOTION_EUCLIDEAN, ECC_CRITERIA, None, 3)
    return warp


def estimate_camera_motion(prev_gray: np.ndarray, gray: np.ndarray, method: str = "sparse",
                           downscale: int = 2) -> np.ndarray:
    """The 2x3 float affine warp mapping previous-frame pixel coordinates (x, y) to current-frame ones, from two
    gray HxW frames (RGB is converted); the identity when the estimate fails. ``method``: "sparse" or "ecc";
    ``downscale``: integer factor the frames are shrunk by before estimating (speed)."""
    if method not in METHODS:
        raise CnnkitError(f"unknown camera-motion method '{method}'", "valid methods: " + ", ".join(METHODS))
    factor = int(downscale)
    if factor < 1:
        raise CnnkitError(f"camera-motion downscale={downscale} is below 1", "use an integer >= 1")
    prev, cur = _gray(prev_gray), _gray(gray)
    if prev.shape != cur.shape:
        return identity()
    small_prev, small_cur = _shrink(prev, factor), _shrink(cur, factor)
    try:
        warp = (_ecc if method == "ecc" else _sparse)(small_prev, small_cur)
    except cv2.error:  # ECC does not converge on flat or unrelated frames
        return identity()
    if warp is None or not np.isfinite(warp).all():
        return identity()
    # small pixel centre u maps to full-resolution pixel centre x = f u + c with c = (f - 1) / 2, so the full warp
    # is x' = A x + f t + (I - A) c
    warp = np.asarray(warp, dtype=np.float64)
    a, t = warp[:, :2], warp[:, 2]
    centre = np.full(2, (factor - 1) / 2)
    return np.hstack([a, (factor * t + (np.eye(2) - a) @ centre)[:, None]])


class CameraMotion:
    """Remembers the previous frame: ``motion(frame)`` -> the 2x3 warp from the previous frame to ``frame``
    (identity for the first frame, or when the frame size changes)."""

    def __init__(self, method: str = "sparse", downscale: int = 2):
        if method not in METHODS:
            raise CnnkitError(f"unknown camera-motion method '{method}'", "valid methods: " + ", ".join(METHODS))
        self.method, self.downscale = method, downscale
        self.previous: np.ndarray | None = None

    def reset(self) -> None:
        self.previous = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        gray = _gray(frame)
        prev, self.previous = self.previous, gray
        if prev is None or prev.shape != gray.shape:
            return identity()
        return estimate_camera_motion(prev, gray, self.method, self.downscale)
