"""`classify train`'s options (TrainConfig) and `augment preview`'s (PreviewConfig), which takes the
same per-operation augmentation options."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

from cnnkit.config import TrainOptions, option
from cnnkit.errors import CnnkitError


# --balance auto adjusts the logits when the largest training class has at least this many times the
# images of the smallest: the long tail where plain cross-entropy left rare classes at recall near 0
# (objects_lt, 10:1, docs/recipes.md; the threshold itself is a judgement, no suite dataset sits near it)
AUTO_BALANCE_RATIO = 3.0


@dataclass
class TrainConfig(TrainOptions):
    """`classify train`: the shared options plus classification's loss, class-imbalance handling and batch mixing.
    Its defaults (model, batch, lr, warm-up, balance) are the recipe measured on the quality suite (docs/recipes.md)."""

    model: str = option("small_cnn", "model name: small_cnn (four stages, average and max pooling, 1.2M parameters), tiny_cnn (three, for the "
                        "fastest runs), any timm model (resnet18, efficientnet_b0, …) or tv:NAME for torchvision")
    batch: int = option(16, "global batch size (split across processes under torchrun)")
    lr: float | str = option(0.002, "peak learning rate, or auto: a learning-rate range test on the training data picks "
                             "it before training (plot in plots/lr_find.png)")
    warmup_epochs: float | None = option(None, "linear warm-up length in epochs; default 30% of --epochs (one-cycle's "
                                         "share: a long climb to the peak rate)")
    label_smoothing: float = option(0.0, "label smoothing for the cross-entropy loss")
    loss: str = option("ce", "classification loss: cross-entropy, or focal (down-weights easy examples; see --focal-gamma)",
                       ("ce", "focal"))
    focal_gamma: float = option(2.0, "focusing exponent of --loss focal (0 = cross-entropy)")
    balance: str = option("auto", "class imbalance: auto (logit_adjust when the largest training class has at least "
                          f"{AUTO_BALANCE_RATIO:g}x the images of the smallest, else none), logit_adjust (the loss sees each class's share of the training set, so "
                          "the model predicts as if the classes were balanced; Menon et al. 2021), weights (loss weighted "
                          "per class), oversample (every class as often as the largest, per epoch), undersample (every "
                          "class cut to the smallest, a new subset each epoch), smote (the head alone, on SMOTE-balanced "
                          "features of the frozen backbone: needs --backbone-from, --weights or --pretrained; no "
                          "augmentation applies)",
                          ("auto", "none", "logit_adjust", "weights", "oversample", "undersample", "smote"))
    tta: str = option("auto", "test-time augmentation whenever the model predicts (validation, test, val, predict): flip = "
                      "the mean of the logits of each image and its mirror image (twice the inference); d8 = of the 8 "
                      "symmetries of the square (8x; for images with no upright: textures, cells, aerial); auto = flip "
                      "when training mirrors images (--fliplr above 0, as every preset but none does), else none, then "
                      "d8 instead if it scores a higher val top1 after training; recorded in the weights, `val` and "
                      "`predict` take --tta to override it", ("auto", "flip", "d8", "none"))
    class_weights: str = option("inverse", "--balance weights: 1/count, or the effective number of samples "
                                "(Cui et al. 2019, beta 0.999)", ("inverse", "effective"))
    mixup: float | None = option(None, "classification: MixUp with Beta(alpha, alpha), this alpha; 0 = off (heavy 0.2)")
    cutmix: float | None = option(None, "classification: CutMix with this alpha; 0 = off (heavy 1.0; with --mixup, one of them per batch)")

    def validate(self) -> "TrainConfig":
        super().validate()
        if self.balance == "smote":
            self._check_smote()
        return self

    def _check_smote(self) -> None:
        """--balance smote trains the head alone on features computed once by a frozen, trained backbone."""
        if self.transfer not in ("auto", "linear"):
            raise CnnkitError(f"--balance smote trains the head alone on features of a frozen backbone, not with "
                              f"--transfer {self.transfer}", "use --transfer linear (auto becomes linear)")
        if not (self.backbone_from or self.weights or self.pretrained):
            raise CnnkitError("--balance smote needs a trained backbone to take features from",
                              "add --backbone-from FILE, --weights FILE or --pretrained")
        for name in ("mixup", "cutmix"):
            if getattr(self, name):
                raise CnnkitError(f"--{name} mixes images, but --balance smote trains on features computed once",
                                  f"drop --{name}")


# classification's own options, which the other tasks' configs do not have
CLASSIFY_ONLY = tuple(f.name for f in fields(TrainConfig) if f.name not in {g.name for g in fields(TrainOptions)})



@dataclass
class PreviewConfig:
    """`augment preview`: which images, which augmentation (a preset plus per-operation overrides)."""

    data: str = option("digits", "dataset root or built-in name (the images are drawn from --split)")
    preset: str = option("light", "augmentation preset", ("none", "light", "medium", "heavy"))
    task: str = option("classify", "whose preset: classification (with MixUp/CutMix) or detection/segmentation (boxes and "
                       "masks move with the pixels)", ("classify", "detect", "segment"))
    n: int = option(16, "number of images", short="-n")
    out: str = option("augment_preview.png", "output PNG")
    seed: int = option(0, "random seed: the same seed shows the same images and augmentations")
    imgsz: int = option(128, "image side in the preview, in pixels")
    split: str = option("train", "dataset split to draw from")

    def validate(self) -> "PreviewConfig":
        from cnnkit.augment.presets import augment_spec

        if self.n < 1 or self.imgsz < 8:
            raise CnnkitError(f"-n must be at least 1 and --imgsz at least 8, got {self.n} and {self.imgsz}")
        self.spec = augment_spec(self.preset, self.task, **{name: getattr(self, name) for name in PREVIEW_OPERATIONS})
        return self


# every per-operation augmentation option of TrainConfig, the same in `augment preview`
PREVIEW_OPERATIONS = ("fliplr", "flipud", "degrees", "translate", "scale", "crop_scale", "brightness", "contrast", "saturation",
                      "hue", "grayscale", "blur", "noise", "erasing", "illumination", "mixup", "cutmix")
PreviewConfig = dataclasses.make_dataclass(
    "PreviewConfig", [(f.name, f.type, field(default=None, metadata=f.metadata)) for f in fields(TrainConfig) if f.name in PREVIEW_OPERATIONS],
    bases=(PreviewConfig,))
PreviewConfig.__module__ = __name__
