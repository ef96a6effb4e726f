"""TrackEval through cnnkit.evaluate.mot: a perfect result and one whose two ids swap half-way, against the
values worked out by hand from the metrics' definitions."""

from __future__ import annotations

import math

import pytest

from cnnkit.errors import CnnkitError
from cnnkit.evaluate.mot import evaluate_mot


def _write(path, rows):
    path.write_text("".join(",".join(str(v) for v in row) + "\n" for row in rows))
    return path


@pytest.fixture
def two_walkers(tmp_path):
    """Two objects, 20 frames, walking towards each other without overlapping (boxes 30 px high, y apart)."""
    gt, perfect, swapped = [], [], []
    for frame in range(1, 21):
        for obj, x, y in ((1, 10 + 3 * frame, 40), (2, 200 - 3 * frame, 120)):
            gt.append((frame, obj, x, y, 30, 30, 1, 1, 1.0))
            perfect.append((frame, obj, x, y, 30, 30, 0.9, -1, -1, -1))
            swapped.append((frame, obj if frame <= 10 else 3 - obj, x, y, 30, 30, 0.9, -1, -1, -1))
    return (_write(tmp_path / "gt.txt", gt), _write(tmp_path / "perfect.txt", perfect),
            _write(tmp_path / "swapped.txt", swapped))


def test_perfect_and_swapped_results(two_walkers):
    gt, perfect, swapped = two_walkers
    table = evaluate_mot({"walk": gt}, {"walk": 20}, {"perfect": {"walk": perfect}, "swapped": {"walk": swapped}})
    ok = table["perfect"]
    assert (ok["hota"], ok["mota"], ok["idf1"], ok["id_switches"]) == (1.0, 1.0, 1.0, 0)
    bad = table["swapped"]
    # every box is found: detection accuracy 1; the swap at frame 11 is two ID switches out of 40 boxes
    assert bad["deta"] == pytest.approx(1.0) and bad["id_switches"] == 2 and bad["mota"] == pytest.approx(1 - 2 / 40)
    # the best one-to-one id mapping keeps 20 of the 40 boxes: IDF1 = 2*20 / (40 + 40)
    assert bad["idf1"] == pytest.approx(0.5)
    # each matched box's association accuracy: TPA 10 / (TPA 10 + FNA 10 + FPA 10) = 1/3; HOTA = sqrt(DetA * AssA)
    assert bad["assa"] == pytest.approx(1 / 3) and bad["hota"] == pytest.approx(math.sqrt(1 / 3))
    assert bad["per_sequence"]["walk"]["id_switches"] == 2


def test_missing_sequence_result_is_one_line(two_walkers):
    gt, perfect, _ = two_walkers
    with pytest.raises(CnnkitError, match="no result for sequence other"):
        evaluate_mot({"walk": gt, "other": gt}, {"walk": 20, "other": 20}, {"perfect": {"walk": perfect}})
