"""The OCR models cnnkit ships inside the package (src/cnnkit/weights/), trained by cnnkit's own commands on its
own synthetic data (docs/ocr.md records them), so that `cnnkit ocr predict page.png` works with no download."""

from __future__ import annotations

from pathlib import Path

from cnnkit.errors import CnnkitError

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
RECOGNIZER = WEIGHTS / "ocr_rec.safetensors"
DETECTOR = WEIGHTS / "ocr_det.safetensors"


def shipped_recognizer():
    from cnnkit.tasks.ocr.api import TextRecognizer

    if not RECOGNIZER.is_file():
        raise CnnkitError(f"{RECOGNIZER}: this install has no shipped recogniser", "pass --rec (or --weights) FILE of an `ocr train` run")
    return TextRecognizer.load(RECOGNIZER)


def shipped_detector():
    from cnnkit.tasks.ocr.detector import TextDetector

    if not DETECTOR.is_file():
        raise CnnkitError(f"{DETECTOR}: this install has no shipped text detector", "pass --det FILE of an `ocr train --model dbnet` run")
    return TextDetector.load(DETECTOR)
