"""CTC decoding against hand-made cases and an exhaustive search; CER/WER against jiwer; CRNN's shapes."""

from __future__ import annotations

import itertools
import math

import jiwer
import numpy as np
import pytest
import torch

from cnnkit.evaluate.text import line_errors, text_scores
from cnnkit.models.crnn import CRNN
from cnnkit.tasks.ocr.decode import beam_decode, greedy_decode


def one_hot_path(path: list[int], classes: int, p: float = 0.9) -> np.ndarray:
    probs = np.full((len(path), classes), (1 - p) / (classes - 1))
    probs[np.arange(len(path)), path] = p
    return np.log(probs)


def test_greedy_merges_repeats_and_drops_blanks():
    charset = "helo"
    # - h h - e - l l - l - o o   (0 is the blank)
    text, score = greedy_decode(one_hot_path([0, 1, 1, 0, 2, 0, 3, 3, 0, 3, 0, 4, 4], 5), charset)
    assert text == "hello"          # the blank between the l's keeps both
    assert score == pytest.approx(0.9)
    assert greedy_decode(one_hot_path([3, 3, 3], 5), charset)[0] == "l"
    assert greedy_decode(one_hot_path([0, 0], 5), charset)[0] == ""
    assert greedy_decode(np.zeros((0, 5)), charset) == ("", 0.0)


def test_beam_finds_the_labelling_whose_mass_is_spread_over_paths():
    # two columns, blank 0.6 / "a" 0.4 each: the best path is "--" (0.36), but "a" has 0.24 + 0.24 + 0.16 = 0.64
    log_probs = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    assert greedy_decode(log_probs, "a")[0] == ""
    text, score = beam_decode(log_probs, "a", beam=4)
    assert text == "a"
    assert score == pytest.approx(math.sqrt(0.64))


def labelling_probabilities(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """Every labelling's probability by summing over all paths (exponential: tiny cases only)."""
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(probs.shape[1]), repeat=len(probs)):
        merged = [s for k, s in enumerate(path) if (k == 0 or s != path[k - 1]) and s != 0]
        out[tuple(merged)] = out.get(tuple(merged), 0.0) + float(np.prod(probs[np.arange(len(path)), path]))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_beam_search_with_a_wide_beam_finds_the_most_probable_labelling(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(4) * 0.7, size=5)  # 5 columns, blank + 3 symbols
    exact = labelling_probabilities(probs)
    best = max(exact, key=exact.get)
    text, score = beam_decode(np.log(probs), "abc", beam=64, prune=-math.inf)
    assert text == "".join("abc"[i - 1] for i in best)
    assert score == pytest.approx(exact[best] ** (1 / 5), rel=1e-9)


def test_error_rates_match_jiwer():
    truths = ["the cat sat", "hello world", "nothing here", "abd def", "Total: $12.50"]
    predictions = ["the cat sat", "helo world", "", "abc def ghi", "Tota1: $12.5O"]
    scores = text_scores(predictions, truths)
    assert scores["cer"] == pytest.approx(jiwer.cer(truths, predictions))
    assert scores["wer"] == pytest.approx(jiwer.wer(truths, predictions))
    assert scores["line_accuracy"] == pytest.approx(1 / 5)
    errors = line_errors(predictions, truths)
    assert errors["char_errors"].tolist()[:2] == [0, 1]


@pytest.mark.parametrize("head", ["lstm", "conv"])
def test_crnn_gives_one_column_per_four_pixels_at_any_height(head):
    model = CRNN(num_classes=11, channels=(8, 8, 16, 16), head=head, hidden=16).eval()
    for height, width in ((32, 203), (48, 64), (16, 9)):
        out = model(torch.randn(2, 3, height, width))
        assert out.shape == (2, width // 4, 11)
    assert CRNN.output_lengths(torch.tensor([203, 8, 7])).tolist() == [50, 2, 1]
