"""The engine's view of text detection (DBNet): DB's loss in training; in validation each page's quadrilaterals
from the probability map, matched to the truth at IoU 0.5 (ICDAR 2015's protocol), summed into precision,
recall and hmean."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.evaluate.text import line_errors
from cnnkit.tasks.ocr.detect_post import boxes_from_prob, detection_scores, match_pairs

OHEM_RATIO = 3  # negatives kept per positive in the probability loss (DBNet's balanced BCE)
BINARY_WEIGHT, THRESH_WEIGHT = 1.0, 10.0  # DBNet's alpha and beta


@dataclass(frozen=True)
class PostOptions:
    """How a probability map becomes quadrilaterals (detect_post.boxes_from_prob)."""

    bin_thresh: float = 0.3
    box_thresh: float = 0.6
    # the region above bin_thresh already reaches past the kernel, so the exact inverse (1.0) overshoots: boxes
    # 1.31x the ink's height, median IoU 0.73; 0.7 gives 1.10x and 0.83, and the lowest end-to-end CER (0.55: too tight)
    unclip_ratio: float = 0.7
    # pieces of a line split at a wide space (after a full stop, in a monospaced face), joined when their ends are
    # under one height apart. Both measured on the page benchmark's validation pages (fonts of training), not its test
    join_gap: float = 1.0


def balanced_bce(prob: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE over every text pixel and the hardest non-text pixels, three for each text pixel."""
    positive = gt * mask
    negative = (1 - gt) * mask
    n_pos = int(positive.sum())
    n_neg = min(int(negative.sum()), max(n_pos, 1) * OHEM_RATIO)
    loss = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), gt, reduction="none")
    hardest = torch.topk((loss * negative).flatten(), n_neg).values if n_neg else loss.new_zeros(0)
    return ((loss * positive).sum() + hardest.sum()) / (n_pos + n_neg + 1e-6)


def dice_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    inter = (pred * gt * mask).sum()
    return 1 - 2 * inter / ((pred * mask).sum() + (gt * mask).sum() + 1e-6)


def db_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prob, thresh = out["prob"][:, 0].float(), out["thresh"][:, 0].float()
    binary = torch.sigmoid(50.0 * (prob - thresh))  # recomputed in float32: bf16 blurs P - T near zero
    gt, mask = targets["gt"], targets["mask"]
    prob_loss = balanced_bce(prob, gt, mask)
    thresh_loss = ((thresh - targets["thresh"]).abs() * targets["thresh_mask"]).sum() / (targets["thresh_mask"].sum() + 1e-6)
    binary_loss = dice_loss(binary, gt, mask)
    return {"loss": prob_loss + BINARY_WEIGHT * binary_loss + THRESH_WEIGHT * thresh_loss, "prob": prob_loss.detach(),
            "binary": binary_loss.detach(), "thresh": thresh_loss.detach()}


def score_page(quads: np.ndarray, polygons, ignore: list[bool], readings: list[str] | None = None,
               texts: list[str] | None = None) -> dict[str, int]:
    """One page's counts: detections matched one-to-one to the truth at IoU 0.5 (a detection on an ignored,
    "###" region counts for nothing, as in ICDAR 2015); with ``readings`` (one per quad) and the truth's
    ``texts``, the end-to-end character errors: each matched line's edit distance, all the characters of a
    missed line, all that a false detection reads."""
    cared = [k for k, skip in enumerate(ignore) if not skip]
    skipped = [k for k, skip in enumerate(ignore) if skip]
    pairs = match_pairs(quads, [polygons[k] for k in cared]) if cared else []
    matched = {i for i, _ in pairs}
    rest = [i for i in range(len(quads)) if i not in matched]
    dont_care = {rest[i] for i, _ in match_pairs(quads[rest], [polygons[k] for k in skipped])} if skipped and rest else set()
    counts = {"tp": len(pairs), "predicted": len(quads) - len(dont_care), "truths": len(cared), "char_errors": 0, "chars": 0}
    if readings is not None and texts is not None:
        found = {cared[j]: readings[i] for i, j in pairs}
        truth_texts = [texts[k] for k in cared]
        missed_or_read = line_errors([found.get(k, "") for k in cared], truth_texts)["char_errors"] if cared else []
        false_chars = sum(len(readings[i]) for i in rest if i not in dont_care)
        counts["char_errors"] = int(np.sum(missed_or_read)) + false_chars
        counts["chars"] = sum(len(t) for t in truth_texts)
    return counts


@dataclass
class TextDetectionTask:
    post: PostOptions = field(default_factory=PostOptions)
    primary_metric: str = "hmean"
    training_only: tuple = field(default=())

    def train_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        return db_loss(model(images), targets)

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, polygons, ignore = batch
        probs = model(images)[:, 0].float().cpu().numpy()
        counts = []
        for prob, polys, skip in zip(probs, polygons, ignore):
            quads, _ = boxes_from_prob(prob, self.post.bin_thresh, self.post.box_thresh, self.post.unclip_ratio, self.post.join_gap)
            page = score_page(quads, polys, skip)
            counts.append((page["tp"], page["predicted"], page["truths"]))
        counts = np.asarray(counts, np.int64)
        return {"tp": torch.from_numpy(counts[:, 0]), "predicted": torch.from_numpy(counts[:, 1]),
                "truths": torch.from_numpy(counts[:, 2])}

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if not outputs:
            return {"hmean": 0.0, "precision": 0.0, "recall": 0.0}
        scores = detection_scores(int(outputs["tp"].sum()), int(outputs["predicted"].sum()), int(outputs["truths"].sum()))
        return {k: round(v, 5) for k, v in scores.items()} | {"pages": len(outputs["tp"])}
