"""A constant-velocity Kalman filter on boxes, vectorised over tracks.

State, per track: ``(x, y, a, h, vx, vy, va, vh)`` — box centre, aspect ratio w/h, height, and their
velocities in pixels (or ratio) per frame; the measurement is ``(x, y, a, h)``. This is the xyah
parameterisation of Deep SORT (Wojke et al. 2017) and ByteTrack (Zhang et al. 2022), chosen over SORT's
``(cx, cy, s, r)`` because the measurement is linear in it (no square root to turn scale and ratio back into a
box, no negative areas to clamp) and because the noise can then be set proportional to the box height, so a
far (small) object gets a tight gate and a near (large) one a loose gate. The noise model (standard
deviations of 1/20 of the height for positions and 1/160 for velocities) follows ByteTrack's MIT-licensed
``yolox/tracker/kalman_filter.py``; the code here is our own and works on stacks of tracks at once:

    mean [N, 8], cov [N, 8, 8]          N tracks
    measurements [N, 4] (update) or [K, 4] (gating), xyah

    mean, cov = initiate(xyxy_to_xyah(boxes))
    mean, cov = predict(mean, cov)
    d2 = gating_distance(mean, cov, xyxy_to_xyah(det_boxes))   # [N, K]; > chi2_gate(4) is out of the gate
    mean, cov = update(mean, cov, xyxy_to_xyah(matched_boxes))

``apply_affine`` moves every track by a camera-motion warp (BoT-SORT's GMC, Aharon et al. 2022).
"""

from __future__ import annotations

from functools import cache

import numpy as np

STD_POSITION = 1.0 / 20   # position noise, as a fraction of the box height
STD_VELOCITY = 1.0 / 160  # velocity noise, as a fraction of the box height
MIN_NOISE_HEIGHT = 1.0    # noise is scaled by max(height, 1 px): a degenerate box must not make S singular

# x_t = F x_{t-1}: each of the four coordinates moves by its velocity once per frame
TRANSITION = np.eye(8)
TRANSITION[:4, 4:] = np.eye(4)
# z = H x: the measurement is the first four state entries
OBSERVATION = np.eye(4, 8)


@cache
def chi2_gate(dof: int) -> float:
    """The 95 % quantile of the chi-square distribution with ``dof`` degrees of freedom: the largest squared
    Mahalanobis distance a measurement of that many coordinates passes (2 -> 5.99, 4 -> 9.49)."""
    from scipy.stats import chi2  # scipy.stats costs ~0.3 s to import: only when a gate is asked for

    return float(chi2.ppf(0.95, dof))


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """[K, 4] xyxy pixels -> [K, 4] (centre x, centre y, width / height, height)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w = boxes[:, 2] - boxes[:, 0]
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)  # a zero-height box would give an infinite aspect
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """[K, >=4] (x, y, a, h, ...) -> [K, 4] xyxy pixels (only the first four columns are read)."""
    x, y, a, h = xyah[:, 0], xyah[:, 1], xyah[:, 2], xyah[:, 3]
    w = a * h
    return np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], axis=1)


def _diag(std: np.ndarray) -> np.ndarray:
    """[N, D] standard deviations -> [N, D, D] diagonal covariances."""
    out = np.zeros(std.shape + (std.shape[1],))
    idx = np.arange(std.shape[1])
    out[:, idx, idx] = std**2
    return out


def process_noise(mean: np.ndarray) -> np.ndarray:
    """Q [N, 8, 8] for a prediction from ``mean`` [N, 8] (scaled by each track's current height)."""
    h = np.maximum(mean[:, 3:4], MIN_NOISE_HEIGHT)
    p, v = STD_POSITION * h, STD_VELOCITY * h
    one = np.ones_like(h)
    return _diag(np.hstack([p, p, 1e-2 * one, p, v, v, 1e-5 * one, v]))


def measurement_noise(mean: np.ndarray) -> np.ndarray:
    """R [N, 4, 4] for measuring tracks whose (predicted) state is ``mean`` [N, 8]."""
    h = np.maximum(mean[:, 3:4], MIN_NOISE_HEIGHT)
    p = STD_POSITION * h
    return _diag(np.hstack([p, p, 1e-1 * np.ones_like(h), p]))


def initiate(xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements [N, 4] xyah: zero velocity, wide uncertainty (twice the position noise,
    ten times the velocity noise) -> mean [N, 8], cov [N, 8, 8]."""
    xyah = np.asarray(xyah, dtype=np.float64).reshape(-1, 4)
    mean = np.hstack([xyah, np.zeros_like(xyah)])
    h = np.maximum(xyah[:, 3:4], MIN_NOISE_HEIGHT)
    p, v = 2 * STD_POSITION * h, 10 * STD_VELOCITY * h
    one = np.ones_like(h)
    return mean, _diag(np.hstack([p, p, 1e-2 * one, p, v, v, 1e-5 * one, v]))


def predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: mean [N, 8], cov [N, 8, 8] -> the predicted mean and covariance (new arrays)."""
    q = process_noise(mean)
    return mean @ TRANSITION.T, TRANSITION @ cov @ TRANSITION.T + q


def project(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The predicted measurement and its covariance S = H P H^T + R: ([N, 4], [N, 4, 4])."""
    return mean[:, :4], cov[:, :4, :4] + measurement_noise(mean)


def update(mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct N tracks with one measurement each, xyah [N, 4] -> the posterior mean [N, 8], cov [N, 8, 8]."""
    z, s = project(mean, cov)
    # K = P H^T S^-1; S and P are symmetric, so K^T = S^-1 (H P) = solve(S, P[:, :4, :])
    gain = np.linalg.solve(s, cov[:, :4, :]).transpose(0, 2, 1)            # [N, 8, 4]
    innovation = np.asarray(xyah, dtype=np.float64).reshape(-1, 4) - z
    new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    new_cov = cov - gain @ cov[:, :4, :]                                     # P - K S K^T = P - K H P
    return new_mean, new_cov


def gating_distance(mean: np.ndarray, cov: np.ndarray, xyah: np.ndarray, only_position: bool = False) -> np.ndarray:
    """Squared Mahalanobis distance of K measurements xyah [K, 4] to each of N tracks -> [N, K].

    With ``only_position`` only the centre (x, y) is compared (2 degrees of freedom, gate ``chi2_gate(2)``);
    otherwise all four coordinates (gate ``chi2_gate(4)``)."""
    dof = 2 if only_position else 4
    z, s = project(mean, cov)
    z, s = z[:, :dof], s[:, :dof, :dof]
    diff = np.asarray(xyah, dtype=np.float64).reshape(1, -1, 4)[..., :dof] - z[:, None, :]   # [N, K, dof]
    solved = np.linalg.solve(s, diff.transpose(0, 2, 1))                                     # [N, dof, K]
    return np.einsum("nkd,ndk->nk", diff, solved)


def affine_transform(warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 state map T and 8-vector offset b for a 2x3 affine ``warp`` (previous -> current pixels).

    The centre and its velocity go through the warp's linear part A (the centre also through its translation);
    the height and its velocity scale by sqrt(|det A|); the aspect ratio is kept (exact for a similarity,
    approximate for a general affine, which cameras rarely produce between two frames)."""
    warp = np.asarray(warp, dtype=np.float64).reshape(2, 3)
    a, t = warp[:, :2], warp[:, 2]
    scale = np.sqrt(abs(np.linalg.det(a)))
    transform = np.eye(8)
    transform[0:2, 0:2] = a
    transform[4:6, 4:6] = a
    transform[3, 3] = transform[7, 7] = scale
    offset = np.zeros(8)
    offset[:2] = t
    return transform, offset


def apply_affine(mean: np.ndarray, cov: np.ndarray, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-motion compensation: move N tracks, mean [N, 8] and cov [N, 8, 8], by a 2x3 affine ``warp``
    from the previous frame's pixels to the current frame's (mean' = T mean + b, cov' = T cov T^T)."""
    transform, offset = affine_transform(warp)
    return mean @ transform.T + offset, transform @ cov @ transform.T
