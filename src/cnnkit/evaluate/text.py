"""OCR's metrics: character and word error rates and line accuracy, from Levenshtein edit distances.

    scores = text_scores(["the cat sat"], ["the cat sat"])   # {"cer": 0.0, "wer": 0.0, "line_accuracy": 1.0, ...}

CER is the edit distance between each predicted line and its truth, in characters (insertions, deletions and
substitutions), summed over the lines and divided by the truths' total length; WER the same over
whitespace-separated words; line_accuracy the share of lines read exactly. These are jiwer's definitions
(the speech and OCR field's reference; the tests check against it): an error rate can exceed 1 when a model
inserts more than the truth holds. The distances come from rapidfuzz (C++), one line at a time, so that
``line_errors`` can name the worst lines for the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def line_errors(predictions: Sequence[str], truths: Sequence[str]) -> dict[str, np.ndarray]:
    """Per line: ``char_errors``, ``chars`` (the truth's length), ``word_errors``, ``words`` and ``exact``."""
    from rapidfuzz.distance import Levenshtein

    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} truths")
    char_errors = np.array([Levenshtein.distance(p, t) for p, t in zip(predictions, truths)], dtype=np.int64)
    word_errors = np.array([Levenshtein.distance(p.split(), t.split()) for p, t in zip(predictions, truths)], dtype=np.int64)
    return {"char_errors": char_errors, "chars": np.array([len(t) for t in truths], dtype=np.int64),
            "word_errors": word_errors, "words": np.array([len(t.split()) for t in truths], dtype=np.int64),
            "exact": np.array([p == t for p, t in zip(predictions, truths)], dtype=bool)}


def scores_from_errors(errors: dict[str, np.ndarray]) -> dict[str, float]:
    """``cer wer line_accuracy`` (and the line count) from ``line_errors``' arrays, summed over the lines."""
    lines = len(errors["chars"])
    if lines == 0:
        return {"cer": 0.0, "wer": 0.0, "line_accuracy": 0.0, "lines": 0}
    return {"cer": float(errors["char_errors"].sum() / max(int(errors["chars"].sum()), 1)),
            "wer": float(errors["word_errors"].sum() / max(int(errors["words"].sum()), 1)),
            "line_accuracy": float(np.mean(errors["exact"])), "lines": lines}


def text_scores(predictions: Sequence[str], truths: Sequence[str]) -> dict[str, float]:
    """``cer wer line_accuracy lines`` of ``predictions`` against ``truths`` (one string per line)."""
    return scores_from_errors(line_errors(predictions, truths))
