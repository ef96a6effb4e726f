"""`ocr train`'s options: the shared training options with a text recogniser's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import TrainOptions, option
from cnnkit.errors import CnnkitError

MODELS = ("crnn", "crnn_conv")


@dataclass
class OcrConfig(TrainOptions):
    """`ocr train`: a CRNN text-line recogniser trained with CTC on ROOT/train/labels.tsv (PATH<TAB>TEXT per line,
    paths relative to the labels file's folder) and ROOT/val/labels.tsv (else --val-split of train)."""

    data: str = option("", "text lines: ROOT/train/labels.tsv and ROOT/val/labels.tsv (`cnnkit data synth text` writes them)")
    model: str = option("crnn", "crnn (CNN, bidirectional LSTM, CTC) or crnn_conv (CNN, 1-D convolutions, CTC: a little faster on CPUs)",
                        MODELS)
    epochs: int = option(20, "number of epochs")
    batch: int = option(32, "global batch size in lines (split across processes under torchrun)")
    imgsz: int = option(32, "line height in pixels; each line keeps its aspect ratio and a batch is padded to its widest")
    lr: float | str = option(0.002, "peak learning rate, or auto: a learning-rate range test on the training lines picks it")
    weight_decay: float = option(1e-4, "weight decay (not applied to biases and norm layers)")
    warmup_epochs: float | None = option(0.5, "linear warm-up length in epochs")
    clip_grad: float = option(5.0, "clip the gradient norm to this value (CTC's gradients spike early on; 0 = off)")
    charset: str | None = option(None, "a file of the characters to read (UTF-8, one line or one per line); default: every "
                                 "character of the train and val labels")
    max_width: int = option(800, "a line wider than this many pixels at --imgsz height is squeezed to it")
    beam: int = option(0, "CTC decoding for the validation after training: beam width (0 = greedy)")

    def validate(self) -> "OcrConfig":
        if not self.data:
            raise CnnkitError("ocr train needs --data", "a folder with train/labels.tsv (cnnkit data synth text --out DIR writes one)")
        for flip in ("fliplr", "flipud"):
            if getattr(self, flip):
                raise CnnkitError(f"--{flip} {getattr(self, flip)}: a flipped line is not text", "leave it out")
        if not 16 <= self.imgsz <= 256:
            raise CnnkitError(f"--imgsz {self.imgsz}: out of range", "use a line height of 16 to 256 pixels (32 is usual)")
        if self.max_width < self.imgsz:
            raise CnnkitError(f"--max-width {self.max_width} is below the line height {self.imgsz}")
        if self.beam < 0:
            raise CnnkitError(f"--beam {self.beam}: must be 0 (greedy) or more")
        return super().validate()
