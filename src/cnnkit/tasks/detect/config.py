"""`detect train`'s options: the shared training options with a detector's defaults, plus the detector's."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import TrainOptions, option
from cnnkit.errors import CnnkitError


@dataclass
class DetectConfig(TrainOptions):
    """`detect train`: the shared training options (with a detector's defaults) plus the detector's."""

    data: str = option("shapes", "dataset root in COCO (annotations/SPLIT.json), YOLO (data.yaml) or Pascal VOC (Annotations/, "
                       "ImageSets/Main/) layout, auto-detected; or the built-in: shapes (synthetic, 800 train / 200 val at 320 px)")
    model: str = option("fasterrcnn", "detector: fasterrcnn (two-stage: FPN, region proposal network, RoI heads; see --backbone), "
                        "ssd (VGG16), ssdlite (MobileNetV3-Large), or cnnkit's own single-stage anchor-free yolo_n, yolo_s, "
                        "yolo_m (nano to medium; fastest on a CPU: see docs/detection.md)")
    epochs: int = option(11, "number of epochs")
    batch: int = option(8, "global batch size (split across processes under torchrun)")
    imgsz: int = option(320, "longer image side after resize, in pixels (ssd/ssdlite: square side)")
    lr: float | str = option(0.001, "peak learning rate, or auto: a learning-rate range test on the training data picks it before training (plot in plots/lr_find.png)")
    optimizer: str = option("adamw", "optimizer (AdamW learnt faster from scratch on the shapes benchmark)", ("adamw", "sgd"))
    weight_decay: float = option(1e-4, "weight decay (not applied to biases and norm layers)")
    precise_bn: int = option(16, "before each validation, recompute BatchNorm statistics over this many training batches "
                             "with the current weights (PreciseBN: without it a detector trained from scratch for minutes "
                             "finds next to nothing in eval mode; 0 = off)")
    clip_grad: float = option(10.0, "clip the gradient norm to this value (0 = off); keeps early detector training stable")

    backbone: str | None = option(None, "fasterrcnn backbone: mobilenet_v3_large (default), resnet50, or any timm CNN "
                                  "(resnet18, efficientnet_b0, convnext_tiny, …) through a feature pyramid; yolo_*: "
                                  "cnnkit's CSP backbone (default) or any timm CNN with stride 8/16/32 stages")
    anchors: str = option("auto", "anchor sizes: auto (spread over the training boxes' sizes at --imgsz) or torchvision's "
                          "defaults (32-512 px; the ones COCO-pretrained weights learnt)", ("auto", "torchvision"))
    conf: float = option(0.001, "keep detections scoring at least this (validation: low, so that mAP sees the whole "
                         "precision-recall curve)")
    iou: float = option(0.5, "IoU threshold of the non-maximum suppression")
    max_det: int = option(100, "at most this many detections per image")
    classes: str | None = option(None, "train on (and detect) only these classes: comma-separated names or "
                                 "dataset ids; other objects count as background")
    strict: bool = option(False, "refuse boxes outside the image instead of clipping them with a warning")
    mosaic: float | None = option(None, "probability that a training image is a mosaic of four (boxes follow); "
                                  "default 1 for yolo_*, 0 for torchvision's detectors")
    close_mosaic: float = option(0.15, "turn mosaic off for this fraction of the last epochs (training ends on "
                                 "whole images)")
    dfl: bool = option(True, "yolo_*: box sides as distributions over 16 bins with distribution focal loss; "
                       "--no-dfl regresses one value per side")
    box_loss: str = option("ciou", "yolo_*: IoU loss of the boxes", ("ciou", "giou"))
    cls_loss: str = option("bce", "yolo_*: classification loss against the task-aligned targets: binary "
                           "cross-entropy, or varifocal", ("bce", "varifocal"))

    def validate(self) -> "DetectConfig":
        super().validate()
        from cnnkit.models.detectors import parse_model

        parse_model(self.model, self.backbone)
        if not 0.0 <= self.conf <= 1.0 or not 0.0 < self.iou <= 1.0:
            raise CnnkitError(f"--conf must be between 0 and 1 and --iou above 0 and at most 1, got {self.conf} and {self.iou}")
        if self.max_det < 1:
            raise CnnkitError(f"--max-det must be at least 1, got {self.max_det}")
        if self.imgsz < 64:
            raise CnnkitError(f"--imgsz must be at least 64 for a detector, got {self.imgsz}")
        from cnnkit.models.detectors import YOLO_MODELS

        yolo_only = [flag for flag, changed in (("--no-dfl", not self.dfl), ("--box-loss", self.box_loss != "ciou"),
                                                ("--cls-loss", self.cls_loss != "bce")) if changed]
        if yolo_only and self.model not in YOLO_MODELS:
            raise CnnkitError(f"{yolo_only[0]} applies to the YOLO-style detectors ({', '.join(YOLO_MODELS)}), not {self.model}",
                              "torchvision's detectors keep their own losses")
        return self
