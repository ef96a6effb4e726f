"""SORT, ByteTrack and DeepSORT on synthetic scenes where the right answer is known: constant motion,
crossings, occlusions, identity swaps, low-score frames and a camera jump."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.errors import CnnkitError
from cnnkit.track import Detections, TrackerOptions, make_tracker


def box(cx: float, cy: float, w: float = 40.0, h: float = 100.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def frame(boxes, scores=None, classes=None, embeddings=None) -> Detections:
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9) if scores is None else np.array(scores, dtype=float)
    classes = np.zeros(len(boxes), dtype=int) if classes is None else np.array(classes)
    return Detections(boxes, scores, classes, None if embeddings is None else np.atleast_2d(embeddings))


def id_at(rows: np.ndarray, xyxy) -> int | None:
    """The id of the reported row whose box is ``xyxy`` (reported boxes are the detections' own)."""
    hit = np.flatnonzero(np.abs(rows[:, :4] - np.asarray(xyxy)).max(axis=1) < 1e-9)
    return int(rows[hit[0], 4]) if len(hit) else None


FEATURES = np.linalg.qr(np.random.default_rng(0).normal(size=(128, 4)))[0].T  # 4 orthonormal 128-d features


def feature(i: int, rng: np.random.Generator) -> np.ndarray:
    f = FEATURES[i] + 0.02 * rng.normal(size=128)
    return f / np.linalg.norm(f)


def test_sort_keeps_ids_of_two_boxes_moving_at_constant_velocity():
    tracker = make_tracker("sort")
    seen = []
    for t in range(50):
        a, b = box(100 + 3 * t, 100), box(600 - 2 * t, 300 + t)
        rows = tracker.update(frame([a, b]))
        assert rows.shape == (2, 7)
        seen.append((id_at(rows, a), id_at(rows, b)))
    assert set(seen) == {(1, 2)}  # reported from frame 1 (SORT's start-up rule), ids from 1, never changed


def test_sort_deletes_a_track_missed_for_more_than_max_age_frames():
    def run(gap: int) -> list[int | None]:
        tracker = make_tracker("sort", TrackerOptions(max_age=5, min_hits=3))
        ids = []
        for t in range(10 + gap + 5):
            visible = not 10 <= t < 10 + gap
            rows = tracker.update(frame([box(200, 200)] if visible else []))
            ids.append(id_at(rows, box(200, 200)) if visible else None)
        return ids[10 + gap:]

    assert run(gap=5) == [1] * 5                # missed max_age frames: kept, and reported again at once
    assert run(gap=6) == [None, None, 2, 2, 2]  # missed one more: deleted; a new id, reported after min_hits


def test_sort_keeps_ids_of_crossing_boxes_moving_in_opposite_directions():
    tracker = make_tracker("sort")
    for t in range(60):  # they cross at t = 25, nearly on top of each other
        a, b = box(100 + 4 * t, 100), box(300 - 4 * t, 106)
        rows = tracker.update(frame([a, b]))
        assert (id_at(rows, a), id_at(rows, b)) == (1, 2), f"frame {t}"


@pytest.mark.parametrize("name", ["sort", "deepsort"])
def test_identity_survives_a_ten_frame_occlusion(name):
    rng = np.random.default_rng(1)
    tracker = make_tracker(name, TrackerOptions(max_age=30))
    ids = []
    for t in range(45):
        a = box(100 + 3 * t, 200 + 1 * t)
        if 20 <= t < 30:  # occluded: no detection at all
            assert len(tracker.update(frame([], embeddings=np.zeros((0, 128))))) == 0
            continue
        rows = tracker.update(frame([a], embeddings=[feature(0, rng)]))
        ids.append(id_at(rows, a))
    assert ids == [1] * 35  # reported again in the first frame it reappears


def swap_scene(name: str) -> tuple[list, list]:
    """Two people standing side by side; while hidden for 10 frames they swap places. -> the ids reported at
    the two places after they reappear (left place, right place)."""
    rng = np.random.default_rng(2)
    tracker = make_tracker(name)
    left, right = box(100, 200), box(140, 200)
    after = []
    for t in range(40):
        if t < 20:
            rows = tracker.update(frame([left, right], embeddings=[feature(0, rng), feature(1, rng)]))
            assert (id_at(rows, left), id_at(rows, right)) == (1, 2)
        elif t < 30:
            tracker.update(frame([], embeddings=np.zeros((0, 128))))
        else:  # person 0 (id 1) now stands on the right
            rows = tracker.update(frame([left, right], embeddings=[feature(1, rng), feature(0, rng)]))
            after.append((id_at(rows, left), id_at(rows, right)))
    return after


def test_deepsort_reassigns_swapped_objects_by_appearance_where_sort_does_not():
    assert swap_scene("deepsort") == [(2, 1)] * 10
    assert (2, 1) not in swap_scene("sort")  # IoU alone keeps the places: a swap of identities


@pytest.mark.parametrize("name", ["sort", "bytetrack", "deepsort"])
def test_a_flickering_false_detection_is_never_reported(name):
    """A false positive that shows up every other frame: its unconfirmed track dies at its first miss, so it
    never reaches min_hits matches, while a real object beside it keeps being reported."""
    rng = np.random.default_rng(5)
    tracker = make_tracker(name)
    for t in range(30):
        real, ghost = box(100 + 2 * t, 200), box(400, 300)
        dets = [real, ghost] if t >= 2 and t % 2 == 0 else [real]  # after the start-up frames, which report at once
        rows = tracker.update(frame(dets, embeddings=[feature(k, rng) for k in range(len(dets))]))
        assert id_at(rows, ghost) is None, f"frame {t}"
        assert id_at(rows, real) == 1, f"frame {t}"


def test_deepsort_does_not_hand_a_detection_to_a_neighbour_when_its_own_track_missed_one_frame():
    """Two look-alikes side by side. A's detector misses it in frame 10 and B's in frame 11. Deep SORT's cascade
    matched tracks seen last frame first, so in frame 11 B (seen) took A's detection, which overlaps B's
    prediction, before A (missed once) was considered. Every confirmed track competes in one IoU round."""
    rng = np.random.default_rng(3)
    tracker = make_tracker("deepsort")
    ids = []
    for t in range(20):
        a, b = box(100 + 4 * t, 200), box(115 + 4 * t, 210)  # IoU about 0.4
        dets = {10: [b], 11: [a]}.get(t, [a, b])
        rows = tracker.update(frame(dets, embeddings=[feature(0, rng) for _ in dets]))
        if t != 10:
            ids.append(id_at(rows, a))
    assert ids == [1] * 19


def test_deepsort_finds_an_object_that_comes_back_larger_than_it_was_last_seen():
    """Half hidden, the object's box was its visible half; it comes back whole after 8 frames. Its centre is
    where the track predicts and it looks like the track: the same id, although the box's height is far out
    of a four-coordinate Mahalanobis gate."""
    rng = np.random.default_rng(4)
    tracker = make_tracker("deepsort")
    ids = []
    for t in range(40):
        cx = 100 + 3 * t
        if t < 15:
            dets = [box(cx, 200, h=100)]
        elif t < 20:
            dets = [box(cx, 200, h=45)]  # the top half only, before it disappears
        elif t < 28:
            dets = []
        else:
            dets = [box(cx + 12, 200, h=100)]  # whole again, slightly ahead of the prediction
        rows = tracker.update(frame(dets, embeddings=[feature(2, rng)] * len(dets) or np.zeros((0, 128))))
        if t >= 28:
            ids.append(id_at(rows, dets[0]))
    assert ids == [1] * 12


def test_bytetrack_keeps_an_occluded_low_score_object_that_sort_loses():
    def run(name):
        tracker = make_tracker(name, TrackerOptions(det_threshold=0.5))
        out = []
        for t in range(40):
            a, b = box(100 + 3 * t, 200), box(500, 300)
            score = 0.2 if 20 <= t < 30 else 0.9  # partly hidden: the detector is unsure
            rows = tracker.update(frame([a, b], scores=[score, 0.9]))
            out.append((id_at(rows, a), rows[rows[:, 4] == 1, 5].tolist()))
        return out

    byte = run("bytetrack")
    assert [i for i, _ in byte] == [1] * 40
    assert [s for _, s in byte[20:30]] == [[0.2]] * 10  # reported in those frames, with the detection's score
    sort = run("sort")
    assert [i for i, _ in sort[20:30]] == [None] * 10   # SORT ignores them: nothing reported


def test_bytetrack_never_starts_a_track_from_a_low_score_detection():
    tracker = make_tracker("bytetrack")
    o = tracker.options
    assert o.low_threshold < o.det_threshold < o.new_track_threshold < 0.7
    for score in (o.det_threshold - 0.05, (o.det_threshold + o.new_track_threshold) / 2):  # low; high but below new_track_threshold
        for _ in range(10):
            assert len(tracker.update(frame([box(200, 200)], scores=[score]))) == 0
        assert len(tracker.tracks) == 0
    assert id_at(tracker.update(frame([box(200, 200)], scores=[0.7])), box(200, 200)) is None  # tentative
    assert len(tracker.tracks) == 1


def test_class_aware_matching_never_crosses_classes():
    for aware, expected in ((True, [1, 2]), (False, [1, 1])):
        tracker = make_tracker("sort", TrackerOptions(class_aware=aware, min_hits=1))
        first = tracker.update(frame([box(200, 200)], classes=[0]))
        second = tracker.update(frame([box(201, 200)], classes=[3]))
        assert [int(first[0, 4]), int(second[0, 4])] == expected
        assert second[0, 6] == 3  # the class reported is the detection's


def test_camera_warp_keeps_ids_through_a_sudden_pan():
    for warp_known, expected in ((True, 1), (False, 2)):
        tracker = make_tracker("sort", TrackerOptions(min_hits=1))
        for t in range(15):
            shift = 60.0 if t >= 10 else 0.0  # the camera jumps 60 px left at frame 10: the scene moves right
            warp = np.array([[1.0, 0, 60.0], [0, 1.0, 0]]) if (t == 10 and warp_known) else None
            rows = tracker.update(frame([box(200 + shift, 200, 30, 30)]), warp=warp)
        assert int(rows[0, 4]) == expected


def test_ids_start_at_one_are_never_reused_and_reset_restarts_them():
    tracker = make_tracker("bytetrack", TrackerOptions(max_age=0, min_hits=1))
    seen = []
    for t in range(6):
        rows = tracker.update(frame([box(100 + 200 * (t % 2), 200)]))  # alternating places: a new track each time
        seen.append(int(rows[0, 4]))
    assert seen == [1, 2, 3, 4, 5, 6]
    assert tracker.update(frame([])).shape == (0, 7)
    tracker.reset()
    assert int(tracker.update(frame([box(100, 200)]))[0, 4]) == 1


def test_make_tracker_rejects_unknown_names_and_bad_input():
    with pytest.raises(CnnkitError) as err:
        make_tracker("bytetrak")
    assert all(name in str(err.value) for name in ("sort", "deepsort", "bytetrack"))
    assert "did you mean 'bytetrack'" in str(err.value)
    assert make_tracker("deepsort").needs_appearance and not make_tracker("sort").needs_appearance
    with pytest.raises(CnnkitError, match="embeddings"):
        make_tracker("deepsort").update(frame([box(1, 1)]))
    with pytest.raises(CnnkitError, match="scores"):
        make_tracker("sort").update(Detections(np.zeros((2, 4)), np.zeros(3), np.zeros(2)))
    with pytest.raises(CnnkitError, match="max_age"):
        make_tracker("sort", TrackerOptions(max_age=-1))
    with pytest.raises(CnnkitError, match="2x3"):
        tracker = make_tracker("sort")
        tracker.update(frame([box(1, 1)]))
        tracker.update(frame([box(1, 1)]), warp=np.eye(3))


@pytest.mark.parametrize("name", ["sort", "bytetrack", "deepsort"])
def test_a_busy_random_scene_keeps_the_bookkeeping_consistent(name):
    """Objects entering and leaving, jitter, false positives, missed detections and degenerate boxes: every
    frame reports unique ids, each row is one of the frame's detections, and ids only grow."""
    rng = np.random.default_rng(3)
    tracker = make_tracker(name, TrackerOptions(max_age=5))
    start, velocity = rng.uniform(0, 800, (30, 2)), rng.uniform(-4, 4, (30, 2))
    born, died = rng.integers(0, 80, 30), rng.integers(20, 120, 30)
    highest = 0
    for t in range(120):
        alive = np.flatnonzero((born <= t) & (t < died) & (rng.random(30) > 0.1))
        centres = start[alive] + velocity[alive] * t + rng.normal(0, 1.5, (len(alive), 2))
        boxes = [box(x, y, 30, 60) for x, y in centres] + [box(*rng.uniform(0, 800, 2), 20, 20) for _ in range(2)]
        boxes.append([50.0, 50.0, 50.0, 50.0])  # an empty box
        k = len(boxes)
        embeddings = np.vstack([FEATURES[i % 4] + 0.3 * rng.normal(size=128) for i in alive] + [rng.normal(size=(3, 128))])
        dets = frame(boxes, scores=rng.uniform(0.05, 1.0, k), classes=rng.integers(0, 2, k), embeddings=embeddings)
        rows = tracker.update(dets)
        assert rows.shape[1] == 7 and len(np.unique(rows[:, 4])) == len(rows)
        assert all(np.abs(np.asarray(boxes) - r).max(axis=1).min() < 1e-9 for r in rows[:, :4])
        if len(rows):
            assert rows[:, 4].min() >= 1
            highest = max(highest, rows[:, 4].max())
    assert highest >= 30 - 5  # most objects got a track
    assert (np.diff(tracker.tracks.ids) > 0).all() and len(tracker.tracks.galleries) == len(tracker.tracks)


def test_a_nan_box_is_a_cnnkit_error():
    with pytest.raises(CnnkitError, match="box 1"):
        make_tracker("sort").update(frame([box(1, 1), [0, 0, np.nan, 1]]))
