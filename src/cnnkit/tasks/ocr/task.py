"""The engine's view of text-line recognition: CTC loss in training; in validation the loss and each line's
edit distances after greedy decoding, summed into cer, wer and line_accuracy (evaluate/text.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.evaluate.text import line_errors, scores_from_errors
from cnnkit.models.crnn import CRNN
from cnnkit.tasks.ocr.decode import beam_decode, greedy_decode


def ctc_loss(logits: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """CTC loss of logits [B, T, C] for lines ``widths`` pixels wide; ``mean`` divides each line's loss by its
    target length first (torch's convention). A line too short for its text (fewer columns than CTC needs)
    contributes zero instead of infinity."""
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # [T, B, C]
    columns = CRNN.output_lengths(widths).clamp(max=logits.shape[1])
    return F.ctc_loss(log_probs, targets, columns, lengths, blank=0, reduction=reduction, zero_infinity=True)


def decode_batch(logits: torch.Tensor, widths: torch.Tensor, charset: list[str], beam: int = 0) -> list[tuple[str, float]]:
    """(text, score) of every line of a batch of logits [B, T, C]."""
    log_probs = logits.float().log_softmax(-1).cpu().numpy()
    columns = CRNN.output_lengths(widths.cpu()).clamp(max=logits.shape[1]).tolist()
    if beam > 0:
        return [beam_decode(lp[:n], charset, beam) for lp, n in zip(log_probs, columns)]
    return [greedy_decode(lp[:n], charset) for lp, n in zip(log_probs, columns)]


def split_targets(targets: torch.Tensor, lengths: torch.Tensor, charset: list[str]) -> list[str]:
    """The batch's concatenated target indices back to one string per line."""
    out, start = [], 0
    flat = targets.tolist()
    for n in lengths.tolist():
        out.append("".join(charset[i - 1] for i in flat[start:start + n]))
        start += n
    return out


@dataclass
class OcrTask:
    charset: list[str]
    primary_metric: str = "char_accuracy"  # 1 - CER: higher is better, as the engine wants
    training_only: tuple = field(default=())

    def train_loss(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, widths, targets, lengths = batch
        return {"loss": ctc_loss(model(images), widths, targets, lengths)}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        images, widths, targets, lengths = batch
        logits = model(images)
        loss = ctc_loss(logits, widths, targets, lengths, reduction="none") / lengths.clamp(min=1).to(logits.device)
        predictions = [text for text, _ in decode_batch(logits, widths, self.charset)]
        errors = line_errors(predictions, split_targets(targets, lengths, self.charset))
        return {"loss": loss, **{k: torch.from_numpy(np.asarray(v)) for k, v in errors.items()}}

    def metrics(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if not outputs:
            return {"char_accuracy": 0.0, "cer": 1.0, "wer": 1.0, "line_accuracy": 0.0, "val_loss": 0.0}
        scores = scores_from_errors({k: outputs[k] for k in ("char_errors", "chars", "word_errors", "words", "exact")})
        return {"char_accuracy": round(1.0 - scores["cer"], 5), "cer": round(scores["cer"], 5), "wer": round(scores["wer"], 5),
                "line_accuracy": round(scores["line_accuracy"], 5), "val_loss": round(float(outputs["loss"].mean()), 4)}
