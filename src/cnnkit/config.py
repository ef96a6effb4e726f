"""Run options as flat dataclasses: field names are the CLI option names (``--clip-grad`` is
``clip_grad``), and a YAML file given with ``--config`` may set any of them."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from cnnkit.errors import CnnkitError

# segmentation models of the instance family (Mask R-CNN): their weights belong to the instance task
INSTANCE_MODELS = ("maskrcnn",)

# the default of --max-pixels: Pillow's Image.MAX_IMAGE_PIXELS (cnnkit.data.images.DEFAULT_MAX_PIXELS), written out
# so that reading the options does not import Pillow
MAX_PIXELS = 89_478_485


def option(default: Any, help: str, choices: tuple[str, ...] | None = None, short: str | None = None,
           aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field that carries its CLI help text (allowed values, a short flag such as -n, other
    long names such as --student for distillation's --model)."""
    return field(default=default, metadata={"help": help, "choices": choices, "short": short, "aliases": aliases})


class _Options:
    """What every run's options share: checks and a plain dict. The checks skip options a task's
    config leaves out (detection has no --balance or --label-smoothing)."""

    def validate(self):
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise CnnkitError(f"--{_flag(f.name)} {value!r} is not one of {', '.join(choices)}")
        for name in ("epochs", "batch", "imgsz", "accumulate"):
            if getattr(self, name) < 1:
                raise CnnkitError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("label_smoothing", "val_split", "ema_decay", "min_lr_ratio", "backbone_lr_mult", "mosaic", "close_mosaic") + PROBABILITIES:
            if getattr(self, name, None) is not None and not 0.0 <= getattr(self, name) <= 1.0:
                raise CnnkitError(f"--{_flag(name)} must be between 0 and 1, got {getattr(self, name)}")
        for name in ("weight_decay", "momentum", "clip_grad", "warmup_epochs", "patience", "focal_gamma", "precise_bn"):
            if getattr(self, name, 0) < 0:
                raise CnnkitError(f"--{_flag(name)} must be 0 or more, got {getattr(self, name)}")
        for name in ("degrees", "translate", "scale", "brightness", "contrast", "saturation", "mixup", "cutmix"):
            if getattr(self, name, None) is not None and getattr(self, name) < 0:
                raise CnnkitError(f"--{_flag(name)} must be 0 or more, got {getattr(self, name)}")
        if self.degrees is not None and self.degrees > 180:
            raise CnnkitError(f"--degrees must be between 0 and 180, got {self.degrees}")
        if self.translate is not None and self.translate > 1:
            raise CnnkitError(f"--translate must be between 0 and 1, got {self.translate}")
        if self.crop_scale is not None and not 0.0 < self.crop_scale <= 1.0:
            raise CnnkitError(f"--crop-scale must be above 0 and at most 1, got {self.crop_scale}")
        if self.hue is not None and self.hue > 0.5:
            raise CnnkitError(f"--hue must be between 0 and 0.5, got {self.hue}")
        if self.lr <= 0:
            raise CnnkitError(f"--lr must be positive, got {self.lr}")
        if self.workers < 0:
            raise CnnkitError(f"--workers must be 0 or more, got {self.workers}")
        if getattr(self, "max_pixels", 0) < 0:
            raise CnnkitError(f"--max-pixels must be 0 (no limit) or more, got {self.max_pixels}")
        self._check_intensity()
        return self

    def _check_intensity(self) -> None:
        """--normalize and --window agree (every task reads images through the same intensity settings)."""
        if getattr(self, "window", None) is not None:
            from cnnkit.data.medical import parse_window

            parse_window(self.window)
            if self.normalize not in ("auto", "window"):
                raise CnnkitError(f"--window sets a fixed intensity window, but --normalize is {self.normalize}",
                                  "drop one of them (--window implies --normalize window)")
        elif getattr(self, "normalize", "auto") == "window":
            raise CnnkitError("--normalize window needs --window LOW,HIGH",
                              "or use the DICOM files' own window: --normalize auto")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainOptions(_Options):
    """The training options every task shares: data, model, schedule, augmentation, intensity, device, run
    directory, transfer. Each task's config inherits them and adds its own (TrainConfig: classification's)."""

    data: str = option("digits", "dataset root (ImageFolder: ROOT/train/CLASS/*.png, ROOT/val/…), or a built-in name: digits")
    model: str = option("tiny_cnn", "model name: tiny_cnn, any timm model (resnet18, efficientnet_b0, …) or tv:NAME for torchvision")
    epochs: int = option(20, "number of epochs")
    batch: int = option(64, "global batch size (split across processes under torchrun)")
    imgsz: int = option(224, "square image side after resize, in pixels")
    lr: float = option(0.002, "peak learning rate")
    optimizer: str = option("adamw", "optimizer", ("adamw", "sgd"))
    momentum: float = option(0.9, "SGD momentum (AdamW beta1 is fixed at 0.9)")
    weight_decay: float = option(0.05, "weight decay (not applied to biases and norm layers)")
    scheduler: str = option("cosine", "learning-rate schedule after warm-up", ("cosine", "constant"))
    warmup_epochs: float = option(1.0, "linear warm-up length in epochs")
    min_lr_ratio: float = option(0.01, "final learning rate as a fraction of --lr (cosine)")
    accumulate: int = option(1, "gradient accumulation steps per optimizer step")
    clip_grad: float = option(0.0, "clip the gradient norm to this value (0 = off)")
    ema: bool = option(False, "keep an exponential moving average of the weights and evaluate/save it")
    ema_decay: float = option(0.998, "EMA decay per optimizer step")
    patience: int = option(0, "stop after this many epochs without improvement (0 = off)")
    precise_bn: int = option(0, "before each validation, recompute BatchNorm statistics over this many training batches "
                             "with the current weights (PreciseBN; short runs from scratch need it; 0 = off)")
    augment: str = option("light", "augmentation preset; the options below override one operation of it each "
                          "(`cnnkit augment preview` shows the result)", ("none", "light", "medium", "heavy"))
    fliplr: float | None = option(None, "horizontal flip probability (preset: 0.5; use 0 for digits and text)")
    flipud: float | None = option(None, "vertical flip probability (preset: 0)")
    degrees: float | None = option(None, "random rotation up to ± this many degrees (light 10, medium 15, heavy 25)")
    translate: float | None = option(None, "random shift up to this fraction of the side (light 0.1, heavy 0.2)")
    scale: float | None = option(None, "random zoom by up to ± this fraction (light 0.1, heavy 0.3)")
    crop_scale: float | None = option(None, "random resized crop keeping at least this fraction of the area; 1 = off "
                                      "(light 1, medium 0.5, heavy 0.25)")
    brightness: float | None = option(None, "colour jitter: brightness change up to ± this fraction (light 0.2, heavy 0.4)")
    contrast: float | None = option(None, "colour jitter: contrast change up to ± this fraction (light 0.2, heavy 0.4)")
    saturation: float | None = option(None, "colour jitter: saturation change up to ± this fraction (light 0.2, heavy 0.4)")
    hue: float | None = option(None, "colour jitter: hue shift up to ± this (0 to 0.5; light 0, heavy 0.05)")
    grayscale: float | None = option(None, "probability of turning the image grey (medium 0.05, heavy 0.1)")
    blur: float | None = option(None, "probability of a Gaussian blur, sigma 0.1 to 2 (medium 0.1, heavy 0.2)")
    noise: float | None = option(None, "probability of Gaussian pixel noise, sigma up to 0.1 (heavy 0.2)")
    erasing: float | None = option(None, "occlusion: probability of hiding 5-60% of the image under patches of noise, "
                                   "a colour or another part of the image (random erasing in pieces; medium 0.25, heavy 0.5)")
    illumination: float | None = option(None, "probability of a random lighting change: gamma, a shadow gradient, colour "
                                        "temperature (medium 0.2, heavy 0.5)")
    val_split: float = option(0.2, "fraction of train held out for validation when ROOT has no val/")
    normalize: str = option("auto", "intensity scaling of images deeper than 8 bits (16-bit PNG/TIFF, float, DICOM, NIfTI; "
                            "8-bit pictures are read as they are): auto (DICOM: its window; else per-image percentiles "
                            "0.5-99.5), percentile (every image, 8-bit too), range (by the type's range: 16-bit /65535), "
                            "window (--window); recorded in the weights for val and predict",
                            ("auto", "percentile", "range", "window"))
    window: str | None = option(None, "fixed intensity window LOW,HIGH in the files' units (CT: Hounsfield units, "
                                "e.g. -160,240 for soft tissue); values outside are clipped")
    device: str = option("auto", "auto (CUDA, then Apple MPS, then CPU), cpu, cuda or cuda:N, mps")
    amp: bool = option(False, "mixed precision: bf16 on CPU, fp16 (or --amp-dtype) on CUDA")
    amp_dtype: str = option("auto", "autocast dtype", ("auto", "bf16", "fp16"))
    channels_last: bool = option(False, "use the channels_last memory format (faster convs on recent CPUs and GPUs)")
    compile: bool = option(False, "torch.compile the model (slow first epoch, faster afterwards)")
    workers: int = option(2, "data-loading worker processes per training process")
    max_pixels: int = option(MAX_PIXELS, "refuse (skip, with a warning) images with more pixels than this, a guard "
                             "against decompression bombs; default Pillow's own limit; 0 = no limit, for genuine "
                             "large scans (segmentation: with --tile)")
    seed: int = option(0, "random seed (data order, augmentation, initialisation)")
    deterministic: bool = option(False, "use deterministic algorithms (slower on GPU)")
    out: str | None = option(None, "run directory (default: runs/TASK/NAME)")
    name: str | None = option(None, "run name under runs/TASK (default: exp, exp2, …)")
    resume: bool = option(False, "continue the interrupted run in --out / --name (default: the latest run)")
    weights: str | None = option(None, "initialise from this weights file (.safetensors from a cnnkit run)")
    pretrained: bool = option(False, "start from the library's published weights (needs the internet once)")
    backbone_from: str | None = option(None, "copy the backbone (all but the head) from this weights file: another dataset, task or pretraining")
    transfer: str = option("auto", "what trains: scratch, linear (frozen backbone; a lone head wants about 10x the fine-tuning --lr), "
                           "finetune (backbone at --backbone-lr-mult), "
                           "gradual (unfreeze top-down, a chunk an epoch); auto = finetune with a weights source, else scratch",
                           ("auto", "scratch", "linear", "finetune", "gradual"))
    backbone_lr_mult: float = option(0.1, "backbone learning rate as a fraction of --lr when fine-tuning")


@dataclass
class TrainConfig(TrainOptions):
    """`classify train`: the shared options plus classification's loss, class-imbalance handling and batch mixing."""

    label_smoothing: float = option(0.0, "label smoothing for the cross-entropy loss")
    loss: str = option("ce", "classification loss: cross-entropy, or focal (down-weights easy examples; see --focal-gamma)",
                       ("ce", "focal"))
    focal_gamma: float = option(2.0, "focusing exponent of --loss focal (0 = cross-entropy)")
    balance: str = option("none", "class imbalance: weights (loss weighted per class), oversample (every class as often "
                          "as the largest, per epoch), undersample (every class cut to the smallest, a new subset "
                          "each epoch), smote (the head alone, on SMOTE-balanced features of the frozen backbone: "
                          "needs --backbone-from, --weights or --pretrained; no augmentation applies)",
                          ("none", "weights", "oversample", "undersample", "smote"))
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


@dataclass
class EmbedConfig(TrainConfig):
    """`embed train`: the training options plus the embedding's size and metric-learning loss."""

    dim: int = option(128, "embedding size (the projection after the backbone's pooled features)")
    loss: str = option("supcon", "metric-learning loss (pytorch-metric-learning): supervised contrastive, triplet with "
                       "semi-hard mining, multi-similarity with its miner, or contrastive pairs",
                       ("supcon", "triplet", "multisimilarity", "contrastive"))
    margin: float = option(0.2, "margin of the triplet and contrastive losses (cosine similarity)")
    temperature: float = option(0.1, "temperature of the supervised contrastive loss")
    per_class: int = option(4, "images of one identity per batch, in groups (class-balanced batches give every "
                            "image positives to learn from); 0 = plainly shuffled batches")

    def validate(self) -> "EmbedConfig":
        super().validate()
        if self.balance != "none":
            raise CnnkitError(f"--balance {self.balance} is for classification", "embed train balances its batches with --per-class")
        if self.dim < 1:
            raise CnnkitError(f"--dim must be at least 1, got {self.dim}")
        if self.per_class < 0 or self.per_class > self.batch:
            raise CnnkitError(f"--per-class must be between 0 and --batch ({self.batch}), got {self.per_class}")
        if self.temperature <= 0:
            raise CnnkitError(f"--temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.margin <= 2.0:
            raise CnnkitError(f"--margin must be between 0 and 2, got {self.margin}")
        return self


@dataclass
class DistillConfig(TrainConfig):
    """`cnnkit distill`: train a student classifier from a frozen teacher (plus every training option)."""

    model: str = option("tiny_cnn", "the student: tiny_cnn, any timm model or tv:NAME (--model and --student are one option)",
                        aliases=("--student",))
    teacher: str | None = option(None, "the teacher: weights/best.safetensors of a `cnnkit classify train` run on the same classes")
    temperature: float = option(4.0, "softmax temperature of the soft targets (higher: more of the teacher's dark knowledge)")
    alpha: float = option(0.9, "weight of the soft-target (KL) term; the true labels' cross-entropy gets 1 - alpha")
    hint_layer: str | None = option(None, "feature distillation: the teacher layer whose output the student imitates (e.g. layer3)")
    student_layer: str | None = option(None, "feature distillation: the student layer regressed onto --hint-layer (e.g. features.6)")
    hint_weight: float = option(1.0, "weight of the feature (hint) loss")

    def validate(self) -> "DistillConfig":
        super().validate()
        check_distill_options(self, "cnnkit classify train --model resnet18 …")
        if self.balance == "smote":
            raise CnnkitError("--balance smote trains a head on cached features, which a teacher cannot distil into",
                              "use --balance weights or oversample")
        return self


def check_distill_options(cfg: Any, teacher_command: str) -> None:
    """The distillation options' checks, shared by the classifier's and the segmenter's configs."""
    if not cfg.teacher and not cfg.resume:  # a resumed run reads its teacher from the saved config.yaml
        raise CnnkitError("distill needs --teacher WEIGHTS", f"train one with `{teacher_command}`")
    if cfg.temperature <= 0:
        raise CnnkitError(f"--temperature must be positive, got {cfg.temperature}")
    if not 0.0 <= cfg.alpha <= 1.0:
        raise CnnkitError(f"--alpha must be between 0 and 1, got {cfg.alpha}")
    if bool(cfg.hint_layer) != bool(cfg.student_layer):
        raise CnnkitError("feature distillation needs both --hint-layer (teacher) and --student-layer")
    if cfg.hint_weight < 0:
        raise CnnkitError(f"--hint-weight must be 0 or more, got {cfg.hint_weight}")


# classification's own options, which the other tasks' configs do not have
CLASSIFY_ONLY = tuple(f.name for f in fields(TrainConfig) if f.name not in {g.name for g in fields(TrainOptions)})


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
    lr: float = option(0.001, "peak learning rate")
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


# augmentation options that are probabilities (checked to lie in [0, 1])
PROBABILITIES = ("fliplr", "flipud", "grayscale", "blur", "noise", "erasing", "illumination")


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


def _flag(name: str) -> str:
    return name.replace("_", "-")


def read_yaml_options(path: str | Path, config_type: type = TrainConfig) -> dict[str, Any]:
    """Options from a YAML mapping, with unknown keys rejected (and the nearest known key suggested)."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"{path}: no such config file")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CnnkitError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(loaded, dict):
        raise CnnkitError(f"{path}: expected a mapping of option: value")
    hints = get_type_hints(config_type)
    known = {f.name for f in fields(config_type)}
    options: dict[str, Any] = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean '{_flag(near[0])}'?" if near else "see --help for the options"
            raise CnnkitError(f"{path}: unknown option '{key}'", hint)
        options[name] = _coerce(value, hints[name], f"{path}: {key}")
    return options


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if value is None:
        return None
    args = [a for a in get_args(hint) if a is not type(None)]
    if len(args) == 1 and args[0] in (int, float):  # int | None, float | None
        hint = args[0]
    target = {int: int, float: float, bool: bool, str: str}.get(hint)
    if target is None:  # Optional[...] hints: keep strings and numbers as they are
        return value if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)
    if target is int and isinstance(value, float) and not value.is_integer():
        raise CnnkitError(f"{where}: expected a whole number, got {value!r}")
    if target is bool and not isinstance(value, bool):
        raise CnnkitError(f"{where}: expected true or false, got {value!r}")
    try:
        return target(value)
    except (TypeError, ValueError):
        raise CnnkitError(f"{where}: expected {target.__name__}, got {value!r}") from None


def write_yaml(path: str | Path, config: dict[str, Any]) -> None:
    from cnnkit.engine.rundir import write_text

    write_text(path, yaml.safe_dump(config, sort_keys=False))


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
    lr: float = option(0.001, "peak learning rate")
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


@dataclass
class SegmentDistillConfig(SegmentOptions):
    """`segment distill`: a semantic student segmenter trained from a frozen teacher segmenter."""

    model: str = option("unet", "the student: unet, fpn, pan, deeplabv3plus, fcn, with --encoder (--model and --student are "
                        "one option)", aliases=("--student",))
    teacher: str | None = option(None, "the teacher: weights/best.safetensors of a `cnnkit segment train` run of a "
                                 "semantic model on the same classes")
    temperature: float = option(4.0, "softmax temperature of the soft targets (higher: more of the teacher's dark knowledge)")
    alpha: float = option(0.9, "weight of the soft-target (per-pixel KL) term; the student's --loss on the masks gets 1 - alpha")
    hint_layer: str | None = option(None, "feature distillation: the teacher layer whose output the student imitates (e.g. layer3)")
    student_layer: str | None = option(None, "feature distillation: the student layer regressed onto --hint-layer (e.g. features.6)")
    hint_weight: float = option(1.0, "weight of the feature (hint) loss")

    def validate(self) -> "SegmentDistillConfig":
        if self.model in INSTANCE_MODELS:
            raise CnnkitError("segment distill trains a semantic student (unet, fpn, pan, deeplabv3plus, fcn), not maskrcnn",
                              "Mask R-CNN's outputs are per detected instance, with no per-pixel logits to match")
        super().validate()
        check_distill_options(self, "cnnkit segment train --model unet --encoder resnet34 …")
        return self
