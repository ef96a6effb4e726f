"""The vectorised Kalman filter against filterpy's reference one, track by track, and its gate and CMC move."""

from __future__ import annotations

import numpy as np
import pytest
from cnnkit.track import kalman

BOXES = np.array([[100.0, 50.0, 140.0, 150.0], [300.0, 200.0, 330.0, 260.0], [10.0, 10.0, 90.0, 50.0]])


def test_stacked_filter_matches_filterpy_over_several_steps():
    KalmanFilter = pytest.importorskip("filterpy.kalman").KalmanFilter  # the reference (a test-only dependency)
    rng = np.random.default_rng(0)
    mean, cov = kalman.initiate(kalman.xyxy_to_xyah(BOXES))
    refs = []
    for i in range(3):
        kf = KalmanFilter(dim_x=8, dim_z=4)
        kf.x, kf.P = mean[i].reshape(8, 1).copy(), cov[i].copy()
        kf.F, kf.H = kalman.TRANSITION.copy(), kalman.OBSERVATION.copy()
        refs.append(kf)
    velocity = np.array([[3.0, -1.0, 0.0, 0.5], [-2.0, 2.0, 0.01, -0.3], [0.0, 4.0, 0.0, 1.0]])
    truth = kalman.xyxy_to_xyah(BOXES)
    for step in range(6):
        q = kalman.process_noise(mean)  # the same Q, set per step (it scales with each track's height)
        mean, cov = kalman.predict(mean, cov)
        for i, kf in enumerate(refs):
            kf.Q = q[i]
            kf.predict()
            np.testing.assert_allclose(mean[i], kf.x.ravel(), rtol=0, atol=1e-8)
            np.testing.assert_allclose(cov[i], kf.P, rtol=0, atol=1e-8)
        truth = truth + velocity
        z = truth + rng.normal(0, 1.0, truth.shape) * [1, 1, 0.01, 1]
        r = kalman.measurement_noise(mean)
        mean, cov = kalman.update(mean, cov, z)
        for i, kf in enumerate(refs):
            kf.R = r[i]
            kf.update(z[i].reshape(4, 1))
            np.testing.assert_allclose(mean[i], kf.x.ravel(), rtol=0, atol=1e-8)
            np.testing.assert_allclose(cov[i], kf.P, rtol=0, atol=1e-8)
    # after six noisy updates the filter has picked up the velocities
    np.testing.assert_allclose(mean[:, 4:], velocity, atol=1.5)


def test_gating_distance_is_the_squared_mahalanobis_distance():
    # a diagonal state covariance makes S diagonal: d^2 = sum(diff^2 / (P_ii + R_ii)) by hand
    mean = np.array([[100.0, 200.0, 0.5, 80.0, 0, 0, 0, 0]])
    cov = np.diag([9.0, 16.0, 0.01, 4.0, 1, 1, 1e-4, 1])[None]
    r = np.array([4.0, 4.0, 0.1, 4.0]) ** 2  # (h / 20)^2 for h = 80, and 0.1^2 for the aspect
    z = np.array([[106.0, 192.0, 0.6, 83.0], [100.0, 200.0, 0.5, 80.0]])
    s = np.array([9.0, 16.0, 0.01, 4.0]) + np.array([16.0, 16.0, 0.01, 16.0])
    by_hand = [36 / s[0] + 64 / s[1] + 0.01 / s[2] + 9 / s[3], 0.0]
    assert np.allclose(kalman.measurement_noise(mean)[0].diagonal(), [16, 16, 0.01, 16])
    np.testing.assert_allclose(kalman.gating_distance(mean, cov, z)[0], by_hand, rtol=1e-12)
    np.testing.assert_allclose(kalman.gating_distance(mean, cov, z, only_position=True)[0],
                               [36 / s[0] + 64 / s[1], 0.0], rtol=1e-12)
    # a full covariance: the general formula diff^T S^-1 diff
    rng = np.random.default_rng(1)
    a = rng.normal(size=(8, 8))
    full = a @ a.T + 8 * np.eye(8)
    sfull = full[:4, :4] + np.diag(r)
    diff = z[0] - mean[0, :4]
    assert np.isclose(kalman.gating_distance(mean, full[None], z[:1])[0, 0], diff @ np.linalg.inv(sfull) @ diff)


def test_chi2_gates_are_the_95_percent_quantiles():
    assert kalman.chi2_gate(2) == pytest.approx(5.9915, abs=1e-4)
    assert kalman.chi2_gate(4) == pytest.approx(9.4877, abs=1e-4)


def test_apply_affine_translation_shifts_the_mean_and_keeps_the_covariance():
    mean, cov = kalman.initiate(kalman.xyxy_to_xyah(BOXES))
    mean[:, 4:6] = [[1.0, 2.0], [0, 0], [-3, 1]]
    warp = np.array([[1.0, 0.0, 7.0], [0.0, 1.0, -4.0]])
    moved, moved_cov = kalman.apply_affine(mean, cov, warp)
    np.testing.assert_allclose(moved - mean, np.tile([7.0, -4.0, 0, 0, 0, 0, 0, 0], (3, 1)), atol=1e-12)
    np.testing.assert_allclose(moved_cov, cov, atol=1e-12)


def test_apply_affine_rotation_and_zoom_turn_velocity_and_scale_height():
    mean = np.array([[10.0, 0.0, 0.5, 40.0, 2.0, 0.0, 0.0, 1.0]])
    cov = np.eye(8)[None]
    theta, zoom = np.pi / 2, 2.0
    a = zoom * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved, moved_cov = kalman.apply_affine(mean, cov, np.hstack([a, [[1.0], [2.0]]]))
    np.testing.assert_allclose(moved[0], [1.0, 22.0, 0.5, 80.0, 0.0, 4.0, 0.0, 2.0], atol=1e-9)
    np.testing.assert_allclose(moved_cov[0].diagonal(), [4, 4, 1, 4, 4, 4, 1, 4], atol=1e-9)


def test_box_conversions_round_trip():
    np.testing.assert_allclose(kalman.xyah_to_xyxy(kalman.xyxy_to_xyah(BOXES)), BOXES, atol=1e-9)
    np.testing.assert_allclose(kalman.xyxy_to_xyah(BOXES[:1]), [[120.0, 100.0, 0.4, 100.0]])
