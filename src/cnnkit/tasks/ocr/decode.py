"""From a recogniser's per-column scores to text: CTC's greedy and prefix beam search decodings.

A CTC model (Graves et al. 2006) outputs, for every column t of the line, a distribution over the charset
plus a blank (index 0). A labelling is read from a path by merging repeated symbols, then dropping blanks
("--hh-e-ll-lo" -> "hello": the blank between the two l's is what lets a doubled letter survive).

- ``greedy_decode``: the most probable symbol of every column, merged. Fast, and what training monitors.
- ``beam_decode``: the prefix beam search (Hannun et al. 2014, arXiv:1408.2873), which sums the probability
  of all the paths that give a prefix, keeping the ``beam`` most probable prefixes a column; it finds the
  labelling greedy decoding misses when its mass is spread over several paths.

Both take log-probabilities [T, C] of one line (its padded columns cut off) and return (text, score), the
score the mean probability of the symbols read (greedy) or the labelling's probability per column,
exp(log P / T) (beam): comparable between lines of different lengths, 1 for a certain reading.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

BLANK = 0


def greedy_decode(log_probs: np.ndarray, charset: Sequence[str]) -> tuple[str, float]:
    """(text, score) of one line's [T, C] log-probabilities (C = 1 + len(charset), blank first)."""
    if len(log_probs) == 0:
        return "", 0.0
    best = log_probs.argmax(axis=1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    keep &= best != BLANK
    if not keep.any():
        return "", float(np.exp(log_probs.max(axis=1)).mean())
    probs = np.exp(log_probs[np.flatnonzero(keep), best[keep]])
    return "".join(charset[i - 1] for i in best[keep]), float(probs.mean())


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def beam_decode(log_probs: np.ndarray, charset: Sequence[str], beam: int = 5, prune: float = -12.0) -> tuple[str, float]:
    """(text, score) of the most probable labelling found by a prefix beam search of width ``beam``;
    symbols whose log-probability in a column is below ``prune`` are not extended (they cannot matter)."""
    if len(log_probs) == 0:
        return "", 0.0
    # each prefix (a tuple of symbol indices): (log P(paths ending in blank), log P(paths ending in its last symbol))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, -math.inf)}
    for column in log_probs:
        candidates = np.flatnonzero(column >= prune)
        if BLANK not in candidates:
            candidates = np.append(candidates, BLANK)
        grown: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        for prefix, (p_blank, p_symbol) in beams.items():
            total = _logsumexp(p_blank, p_symbol)
            for s in candidates:
                p = float(column[s])
                if s == BLANK:
                    entry = grown[prefix]
                    entry[0] = _logsumexp(entry[0], total + p)
                    continue
                extended = prefix + (int(s),)
                entry = grown[extended]
                if prefix and prefix[-1] == s:
                    # a repeat needs a blank in between to be a new symbol; without one it continues the last
                    entry[1] = _logsumexp(entry[1], p_blank + p)
                    same = grown[prefix]
                    same[1] = _logsumexp(same[1], p_symbol + p)
                else:
                    entry[1] = _logsumexp(entry[1], total + p)
        ranked = sorted(grown.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)[:beam]
        beams = {prefix: (pb, ps) for prefix, (pb, ps) in ranked}
    prefix, (p_blank, p_symbol) = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))
    log_p = _logsumexp(p_blank, p_symbol)
    return "".join(charset[i - 1] for i in prefix), float(math.exp(log_p / len(log_probs)))
