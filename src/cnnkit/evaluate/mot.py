"""Multi-object tracking metrics by the reference implementation: TrackEval (HOTA, CLEAR MOT, Identity).

TrackEval reads MOTChallenge files from a fixed folder layout, so the ground truth and the results are laid out
in a temporary folder (copies of small text files) and scored with its ``MotChallenge2DBox`` dataset: the
MOTChallenge protocol, including its preprocessing (ground-truth rows with a zero "consider" flag, and results
matched to distractor classes, are not counted). Only class 1 rows are scored, as MOTChallenge does.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError

METRIC_KEYS = ("hota", "mota", "idf1", "id_switches")


def _summary(hota: dict, clear: dict, identity: dict, count: dict) -> dict[str, Any]:
    """The DESIGN keys plus the components a person reads beside them (detection and association accuracy,
    false positives and negatives, fragmentations)."""
    return {"hota": float(hota["HOTA"].mean()), "mota": float(clear["MOTA"]), "idf1": float(identity["IDF1"]),
            "id_switches": int(clear["IDSW"]), "deta": float(hota["DetA"].mean()), "assa": float(hota["AssA"].mean()),
            "motp": float(clear["MOTP"]), "false_positives": int(clear["CLR_FP"]), "false_negatives": int(clear["CLR_FN"]),
            "fragmentations": int(clear["Frag"]), "mostly_tracked": int(clear["MT"]), "mostly_lost": int(clear["ML"]),
            "gt_ids": int(count["GT_IDs"]), "ids": int(count["IDs"])}


def _parts(scored: dict) -> dict[str, dict]:
    return {"hota": scored["HOTA"], "clear": scored["CLEAR"], "identity": scored["Identity"], "count": scored["Count"]}


def evaluate_mot(gt_files: dict[str, Path], lengths: dict[str, int],
                 results: dict[str, dict[str, Path]]) -> dict[str, dict[str, Any]]:
    """Score tracker results against ground truth with TrackEval.

    ``gt_files``: sequence name -> its gt.txt; ``lengths``: sequence name -> number of frames; ``results``:
    tracker name -> {sequence name -> result file (MOTChallenge rows)}. Returns, for every tracker,
    ``{"hota", "mota", "idf1", "id_switches", …, "per_sequence": {seq: {…}}}`` (HOTA averaged over its
    localisation thresholds, as TrackEval reports it)."""
    try:
        import trackeval
    except ImportError:
        raise CnnkitError("TrackEval is not installed", "pip install --no-deps 'trackeval>=1.3' (scripts/setup.sh does)") from None
    if not gt_files:
        raise CnnkitError("no sequences to evaluate", "the data folder holds no SEQ/gt/gt.txt")
    with tempfile.TemporaryDirectory(prefix="cnnkit-trackeval-") as tmp:
        root = Path(tmp)
        for seq, path in gt_files.items():
            (root / "gt" / seq / "gt").mkdir(parents=True)
            shutil.copyfile(path, root / "gt" / seq / "gt" / "gt.txt")
        for tracker, per_seq in results.items():
            (root / "trackers" / tracker / "data").mkdir(parents=True)
            for seq in gt_files:
                if seq not in per_seq:
                    raise CnnkitError(f"tracker {tracker}: no result for sequence {seq}")
                shutil.copyfile(per_seq[seq], root / "trackers" / tracker / "data" / f"{seq}.txt")
        dataset_config = {"GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"),
                          "OUTPUT_FOLDER": str(root / "out"), "TRACKERS_TO_EVAL": list(results), "SKIP_SPLIT_FOL": True,
                          "SEQ_INFO": {seq: lengths[seq] for seq in gt_files}, "PRINT_CONFIG": False}
        eval_config = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
                       "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "LOG_ON_ERROR": None,
                       "BREAK_ON_ERROR": True}
        metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                   trackeval.metrics.Identity({"PRINT_CONFIG": False})]  # Count is always added by TrackEval
        # TrackEval prints its progress; cnnkit shows its own
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                output, _ = trackeval.Evaluator(eval_config).evaluate(
                    [trackeval.datasets.MotChallenge2DBox(dataset_config)], metrics)
            except trackeval.utils.TrackEvalException as err:
                raise CnnkitError(f"TrackEval could not score the results: {err}") from None
    scored = output["MotChallenge2DBox"]
    table: dict[str, dict[str, Any]] = {}
    for tracker in results:
        per_seq = scored[tracker]
        combined = per_seq["COMBINED_SEQ"]["pedestrian"]
        summary = _summary(**_parts(combined))
        summary["per_sequence"] = {seq: _summary(**_parts(per_seq[seq]["pedestrian"])) for seq in gt_files}
        table[tracker] = summary
    return table
