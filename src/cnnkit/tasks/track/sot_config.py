"""`track sot train`'s options: the shared training options with a Siamese tracker's defaults, plus how the
training pairs are drawn and augmented."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import TrainOptions, option
from cnnkit.errors import CnnkitError

# the shared options of image augmentation that pairs do not use (they have --shift, --scale-jitter, --color)
IMAGE_AUGMENTATIONS = ("fliplr", "flipud", "degrees", "translate", "scale", "crop_scale", "brightness", "contrast",
                       "saturation", "hue", "grayscale", "blur", "noise", "erasing", "illumination")


@dataclass
class SotConfig(TrainOptions):
    """`track sot train`: a SiamFC-style tracker trained on pairs of crops of one object: two frames of a
    sequence (MOTChallenge layout: every id of a multi-object sequence is an object) no more than --max-gap
    apart, or one image of a detection dataset (COCO, YOLO, VOC) twice, augmentation standing in for motion."""

    data: str = option("", "MOTChallenge sequences (ROOT/train/SEQ/…, a folder of sequences or one; multi-object "
                       "sequences give a pair source per id) or a detection dataset (COCO, YOLO, VOC)")
    model: str = option("siamfc", "siamfc (cnnkit's small backbone: 63/127 px crops, for CPUs), siamfc_alexnet "
                        "(the paper's: 127/255 px) or siamfc:TIMM_NAME (a timm CNN's stride-8 features, 127/255 px)")
    epochs: int = option(10, "number of epochs")
    batch: int = option(32, "global batch size in pairs (split across processes under torchrun)")
    imgsz: int = option(0, "search crop side; fixed by the model (siamfc 127, the others 255): leave it at 0")
    lr: float | str = option(0.003, "peak learning rate, or auto: a learning-rate range test on the training pairs picks it")
    weight_decay: float = option(5e-4, "weight decay (SiamFC's; not applied to biases and norm layers)")
    warmup_epochs: float | None = option(0.5, "linear warm-up length in epochs")
    channels_last: bool = option(True, "use the channels_last memory format (a third faster on CPUs for these small convolutions)")
    workers: int = option(2, "data-loading worker processes per training process (each reads two frames a pair)")
    val_split: float = option(0.2, "fraction of the training sequences (or images) held out for validation when the "
                              "data has no val/ split")
    pairs: int = option(4000, "training pairs drawn per epoch (new ones every epoch)")
    val_pairs: int = option(256, "validation pairs (drawn once, the same every epoch)")
    max_gap: int = option(100, "frames between the exemplar's and the search's frame, at most (SiamFC's T)")
    min_visibility: float = option(0.5, "use a ground-truth box only when at least this share of the object is seen "
                                   "(MOTChallenge's visibility column)")
    min_size: float = option(8.0, "use a box only when its width and height are at least this many pixels")
    context: float = option(0.5, "context around the exemplar: the square side is sqrt((w + p)(h + p)), p = context * (w + h)")
    radius: float = option(16.0, "response cells within this many search-crop pixels of the target's centre are positives")
    shift: float = option(24.0, "move the target up to this many search-crop pixels off the search crop's centre "
                          "(in each direction)")
    scale_jitter: float = option(0.05, "resize each crop by up to exp(+-this), SiamFC's stretch (detection images: "
                                 "2.5x this)")
    color: float = option(0.2, "colour jitter of each crop: brightness, contrast and saturation by up to +-this")
    eval_sequences: int = option(8, "after training, track at most this many val and test sequences (OTB success "
                                 "and precision; 0 = none)")
    augment: str = option("light", "none turns every pair augmentation off (--shift, --scale-jitter, --color); "
                          "any other value keeps them", ("none", "light", "medium", "heavy"))

    def validate(self) -> "SotConfig":
        from cnnkit.models.siamese import spec_of

        if not self.data:
            raise CnnkitError("sot train needs --data", "MOTChallenge sequences (ROOT/train/SEQ/img1, gt/gt.txt) or a "
                              "detection dataset (COCO, YOLO, VOC)")
        search = spec_of(self.model).search
        if self.imgsz not in (0, search):
            raise CnnkitError(f"--imgsz {self.imgsz}: the model {self.model} searches {search} px crops",
                              "leave --imgsz out: the model fixes the crop sizes")
        self.imgsz = search
        super().validate()
        given = [name for name in IMAGE_AUGMENTATIONS if getattr(self, name) is not None]
        if given:
            raise CnnkitError(f"--{given[0].replace('_', '-')} augments single images; sot train augments pairs",
                              "use --shift, --scale-jitter and --color")
        for name in ("pairs", "val_pairs"):
            if getattr(self, name) < 1:
                raise CnnkitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.max_gap < 0 or self.eval_sequences < 0:
            raise CnnkitError(f"--max-gap and --eval-sequences must be 0 or more, got {self.max_gap} and {self.eval_sequences}")
        if not 0 <= self.min_visibility <= 1:
            raise CnnkitError(f"--min-visibility must be between 0 and 1, got {self.min_visibility}")
        for name in ("min_size", "context", "radius", "shift", "scale_jitter", "color"):
            if getattr(self, name) < 0:
                raise CnnkitError(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(self, name)}")
        if self.color > 0.9:
            raise CnnkitError(f"--color must be at most 0.9, got {self.color}")
        return self
