"""Multi-object tracking on top of any detector: SORT, DeepSORT and ByteTrack, with camera-motion compensation.

    from cnnkit.track import CameraMotion, Detections, TrackerOptions, make_tracker

    tracker = make_tracker("bytetrack", TrackerOptions(max_age=30, det_threshold=0.5))
    motion = CameraMotion("sparse")                        # optional, for a moving camera
    for frame, (boxes, scores, classes) in zip(frames, detections):
        rows = tracker.update(Detections(boxes, scores, classes), warp=motion(frame))
        for x1, y1, x2, y2, track_id, score, cls in rows:
            ...

DeepSORT (``tracker.needs_appearance``) also wants ``Detections.embeddings``: [K, D] L2-normalised features of
the boxes from an appearance model.

Modules: ``kalman`` (vectorised constant-velocity Kalman filter on xyah boxes), ``association`` (IoU, cosine
distance, class masking, thresholded Hungarian assignment), ``state`` (detections, options, the track arrays),
``trackers`` (the tracking loop and the three association policies), ``cmc`` (camera motion).
The multi-object trackers use numpy, scipy and OpenCV only; sot.py (the Siamese single-object loop) also runs a
torch model, and is imported on its own (`from cnnkit.track.sot import SiamTracker`).
"""

from cnnkit.track.cmc import CameraMotion, estimate_camera_motion
from cnnkit.track.state import Detections, TrackerOptions
from cnnkit.track.trackers import ALGORITHMS, Tracker, make_tracker

__all__ = ["ALGORITHMS", "CameraMotion", "Detections", "Tracker", "TrackerOptions", "estimate_camera_motion",
           "make_tracker"]
