"""`segment train`'s options: the shared training options with a segmenter's defaults, the pixel loss,
encoder, ignored pixels and tiling (SegmentOptions, which segmentation distillation shares), plus Mask
R-CNN's (SegmentConfig: `--model maskrcnn` trains the instance task)."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import INSTANCE_MODELS, TrainOptions, _flag, option
from cnnkit.errors import CnnkitError


@dataclass
class SegmentOptions(TrainOptions):
    """What every segmentation run has: the shared training options (with a segmenter's defaults), the pixel
    loss, the encoder, ignored pixels and tiling. SegmentConfig adds Mask R-CNN's options, SegmentDistillConfig
    the teacher's."""

    data: str = option("shapes", "dataset root: images/SPLIT/NAME.png with masks/SPLIT/NAME.png (class index per pixel, "
                       "255 = ignore) and classes.txt; DICOM (.dcm) and NIfTI (.nii.gz, one sample per slice) images too; "
                       "or a built-in: shapes (synthetic scenes, 800 train / 200 val at 256 px), cells (synthetic 16-bit "
                       "microscopy)")
    model: str = option("unet", "semantic: unet, fpn, pan, deeplabv3plus, fcn (with --encoder); instance: maskrcnn")
    epochs: int = option(20, "number of epochs")
    batch: int = option(8, "global batch size (split across processes under torchrun)")
    imgsz: int = option(256, "training side in pixels (a multiple of 32): whole images are resized to it, or with --tile "
                        "windows of this size are cut at the images' own resolution")
    lr: float | str = option(0.001, "peak learning rate, or auto: a learning-rate range test on the training data picks it before training (plot in plots/lr_find.png)")
    weight_decay: float = option(1e-4, "weight decay (not applied to biases and norm layers)")
    loss: str = option("ce_dice", "pixel loss: cross-entropy, Dice, their sum, or focal (segmentation_models_pytorch's Dice "
                       "and focal; pixels at --ignore-index left out)", ("ce", "dice", "ce_dice", "focal"))

    encoder: str | None = option(None, "encoder of unet/fpn/pan/deeplabv3plus/fcn: any timm CNN — resnet18 (default), "
                                 "resnet34, vgg16, densenet121, mobilenet_v3, efficientnet_b0, …; --pretrained loads its "
                                 "ImageNet weights, --backbone-from a cnnkit classifier's")
    ignore_index: int = option(255, "mask value that is not scored nor learnt from (borders, unlabelled pixels)")
    tile: bool = option(False, "train on random --imgsz windows at the images' own resolution and validate/predict "
                        "with overlapping sliding windows (microscopy, slides, scans larger than --imgsz)")
    tile_overlap: float = option(0.25, "overlap of neighbouring windows in tiled inference (fraction of the side)")
    hd95: bool = option(True, "measure the 95th-percentile Hausdorff distance per class in validation")
    focal_gamma: float = option(2.0, "focusing exponent of --loss focal (0 = cross-entropy)")

    def validate(self) -> "SegmentOptions":
        super().validate()
        from cnnkit.models.segmenters import check_input_size, parse_segmenter

        parse_segmenter(self.model, self.encoder)
        instance = self.model in INSTANCE_MODELS
        others = SEMANTIC_ONLY if instance else INSTANCE_ONLY
        wrong = [name for name, default in others.items() if getattr(self, name, default) != default]
        if wrong:
            kind = "semantic models" if instance else "instance segmentation (--model maskrcnn)"
            raise CnnkitError(f"--{_flag(wrong[0])} applies to {kind}, not to {self.model}")
        if instance and (not 0.0 <= self.conf <= 1.0 or not 0.0 < self.iou <= 1.0 or self.max_det < 1):
            raise CnnkitError(f"--conf must be in [0, 1], --iou in (0, 1] and --max-det at least 1; got {self.conf}, {self.iou}, "
                              f"{self.max_det}")
        if not instance:
            check_input_size(self.imgsz)
        if self.model == "pan" and self.imgsz < 128:
            raise CnnkitError(f"--model pan pools its stride-16 map down 8 times more: --imgsz must be at least 128, got {self.imgsz}")
        if not 0 <= self.ignore_index <= 255:
            raise CnnkitError(f"--ignore-index must be between 0 and 255, got {self.ignore_index}")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise CnnkitError(f"--tile-overlap must be at least 0 and below 1, got {self.tile_overlap}")
        return self


# options that only an instance model has, with their defaults (a semantic model refuses them changed)
INSTANCE_ONLY = {"anchors": "auto", "conf": 0.001, "iou": 0.5, "max_det": 100}
# options that only the semantic models have, with their defaults (maskrcnn refuses them changed)
SEMANTIC_ONLY = {"loss": "ce_dice", "tile": False, "ignore_index": 255, "normalize": "auto", "window": None}


@dataclass
class SegmentConfig(SegmentOptions):
    """`segment train`: the segmentation options plus Mask R-CNN's (instance segmentation)."""

    anchors: str = option("auto", "maskrcnn: anchor sizes, auto (spread over the training boxes' sizes at --imgsz) or "
                          "torchvision's defaults (32-512 px; the ones COCO-pretrained weights learnt)",
                          ("auto", "torchvision"))
    conf: float = option(0.001, "maskrcnn: keep instances scoring at least this in validation (low, so that mAP sees "
                         "the whole precision-recall curve)")
    iou: float = option(0.5, "maskrcnn: IoU threshold of the non-maximum suppression")
    max_det: int = option(100, "maskrcnn: at most this many instances per image")
