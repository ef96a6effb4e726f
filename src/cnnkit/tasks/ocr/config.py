"""`ocr train`'s options: the shared training options with a text recogniser's defaults."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import TrainOptions, option
from cnnkit.errors import CnnkitError

MODELS = ("crnn", "crnn_conv", "dbnet")
DETECTORS = ("dbnet",)


@dataclass
class OcrConfig(TrainOptions):
    """`ocr train`: a CRNN text-line recogniser trained with CTC on ROOT/train/labels.tsv (PATH<TAB>TEXT per line,
    paths relative to the labels file's folder) and ROOT/val/labels.tsv (else --val-split of train); or, with
    --model dbnet, a DBNet text detector on ROOT/train/det_labels.tsv (PaddleOCR's PATH<TAB>[{"transcription",
    "points"}])."""

    data: str = option("", "text lines: ROOT/train/labels.tsv and ROOT/val/labels.tsv (`cnnkit data synth text` writes them); "
                       "pages for dbnet: ROOT/train/det_labels.tsv (`cnnkit data synth text --task det`)")
    model: str = option("crnn", "crnn (CNN, bidirectional LSTM, CTC), crnn_conv (CNN, 1-D convolutions, CTC: faster on CPUs) "
                        "or dbnet (text detector: FPN, probability and threshold maps, differentiable binarisation)", MODELS)
    epochs: int = option(20, "number of epochs")
    batch: int | None = option(None, "global batch size (split across processes under torchrun); default 32 lines, 8 pages for dbnet")
    imgsz: int | None = option(None, "line height in pixels (default 32; each line keeps its aspect ratio, a batch is padded to "
                               "its widest); for dbnet the training crop side and the page's longer side at inference (default 640)")
    backbone: str | None = option(None, "dbnet backbone: cnnkit's light CNN (default) or any timm CNN with stride 4-32 stages "
                                  "(resnet18, mobilenetv3_large_100, …; --pretrained for its ImageNet weights)")
    lr: float | str = option(0.002, "peak learning rate, or auto: a learning-rate range test on the training lines picks it")
    weight_decay: float = option(1e-4, "weight decay (not applied to biases and norm layers)")
    warmup_epochs: float | None = option(0.5, "linear warm-up length in epochs")
    clip_grad: float = option(5.0, "clip the gradient norm to this value (CTC's gradients spike early on; 0 = off)")
    charset: str | None = option(None, "a file of the characters to read (UTF-8, one line or one per line); default: every "
                                 "character of the train and val labels")
    max_width: int = option(800, "a line wider than this many pixels at --imgsz height is squeezed to it")
    beam: int = option(0, "CTC decoding for the validation after training: beam width (0 = greedy)")

    @property
    def detector(self) -> bool:
        return self.model in DETECTORS

    def validate(self) -> OcrConfig:
        if self.imgsz is None:
            self.imgsz = 640 if self.detector else 32
        if self.batch is None:
            self.batch = 8 if self.detector else 32
        if self.backbone and not self.detector:
            raise CnnkitError(f"--backbone {self.backbone}: only dbnet takes a backbone", "leave --backbone out for crnn")
        if not self.data and not self.resume:  # --resume reads it from the run's config.yaml
            raise CnnkitError("ocr train needs --data", "a folder with train/labels.tsv (cnnkit data synth text --out DIR writes one)")
        for flip in ("fliplr", "flipud"):
            if getattr(self, flip):
                raise CnnkitError(f"--{flip} {getattr(self, flip)}: a flipped line is not text", "leave it out")
        if self.detector:
            if self.imgsz % 32 or not 128 <= self.imgsz <= 2048:
                raise CnnkitError(f"--imgsz {self.imgsz}: dbnet needs a multiple of 32 from 128 to 2048", "640 is usual")
            return super().validate()
        if not 16 <= self.imgsz <= 256:
            raise CnnkitError(f"--imgsz {self.imgsz}: out of range", "use a line height of 16 to 256 pixels (32 is usual)")
        if self.max_width < self.imgsz:
            raise CnnkitError(f"--max-width {self.max_width} is below the line height {self.imgsz}")
        if self.beam < 0:
            raise CnnkitError(f"--beam {self.beam}: must be 0 (greedy) or more")
        return super().validate()
