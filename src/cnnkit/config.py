"""Run options as flat dataclasses: field names are the CLI option names (``--clip-grad`` is
``clip_grad``), and a YAML file given with ``--config`` may set any of them. This module holds what every
task's options share (TrainOptions, the YAML reading and writing); each task's own config class lives in
its folder, tasks/<task>/config.py, beside the model checks that need the model table."""

from __future__ import annotations

import dataclasses
import difflib
import math
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


# augmentation options that are probabilities (checked to lie in [0, 1])
PROBABILITIES = ("fliplr", "flipud", "grayscale", "blur", "noise", "erasing", "illumination")



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
            if (getattr(self, name, 0) or 0) < 0:
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
        self.lr = _learning_rate(self.lr)
        if getattr(self, "save_every_steps", 0) < 0:
            raise CnnkitError(f"--save-every-steps must be 0 (epoch ends only) or more, got {self.save_every_steps}")
        if self.workers < 0:
            raise CnnkitError(f"--workers must be 0 or more, got {self.workers}")
        if getattr(self, "max_pixels", 0) < 0:
            raise CnnkitError(f"--max-pixels must be 0 (no limit) or more, got {self.max_pixels}")
        self._check_intensity()
        return self

    def _check_intensity(self) -> None:
        """--normalize and --window agree (every task reads images through the same intensity settings)."""
        if getattr(self, "window", None) is not None:
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
    lr: float | str = option(0.002, "peak learning rate, or auto: a learning-rate range test on the training data picks it before training (plot in plots/lr_find.png)")
    optimizer: str = option("adamw", "optimizer", ("adamw", "sgd"))
    momentum: float = option(0.9, "SGD momentum (AdamW beta1 is fixed at 0.9)")
    weight_decay: float = option(0.05, "weight decay (not applied to biases and norm layers)")
    scheduler: str = option("cosine", "learning-rate schedule after warm-up", ("cosine", "constant"))
    warmup_epochs: float | None = option(1.0, "linear warm-up length in epochs (null in a YAML file: 30% of --epochs)")
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
    amp: bool = option(False, "mixed precision: fp16 (or --amp-dtype) on CUDA; bf16 on a CPU with bf16 instructions (AVX-512, AMX), float32 on others unless --amp-dtype bf16")
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
    resume: bool = option(False, "continue the interrupted run in --out / --name (default: the latest run); under torchrun a "
                          "run whose directory holds a checkpoint continues by itself (--no-resume refuses instead), so "
                          "`torchrun --max-restarts N` recovers from a lost process")
    save_every_steps: int = option(0, "also write checkpoint.pt every N optimizer steps inside an epoch (0: at the end of each "
                                   "epoch only): a crash or preemption loses at most N steps; SIGTERM always writes one")
    weights: str | None = option(None, "initialise from this weights file (.safetensors from a cnnkit run)")
    pretrained: bool = option(False, "start from the library's published weights (needs the internet once)")
    backbone_from: str | None = option(None, "copy the backbone (all but the head) from this weights file: another dataset, task or pretraining")
    transfer: str = option("auto", "what trains: scratch, linear (frozen backbone; a lone head wants about 10x the fine-tuning --lr), "
                           "finetune (backbone at --backbone-lr-mult), "
                           "gradual (unfreeze top-down, a chunk an epoch); auto = finetune with a weights source, else scratch",
                           ("auto", "scratch", "linear", "finetune", "gradual"))
    backbone_lr_mult: float = option(0.1, "backbone learning rate as a fraction of --lr when fine-tuning")


def _learning_rate(value: float | str) -> float | str:
    """--lr: a positive number, or "auto" (the runner's range test replaces it before training)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise CnnkitError(f"--lr {value!r} is neither a number nor auto", "e.g. --lr 0.003, or --lr auto") from None
    if not lr > 0 or not math.isfinite(lr):
        raise CnnkitError(f"--lr must be positive, got {value}")
    return lr


def parse_window(text: str) -> tuple[float, float]:
    """Parse --window "LOW,HIGH" (e.g. "-160,240", a soft-tissue CT window in HU) into (low, high)."""
    hint = "give LOW,HIGH with LOW < HIGH, e.g. --window=-160,240 (the '=' lets a negative LOW through)"
    parts = str(text).split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:  # wrong count or not numbers
        raise CnnkitError(f"--window {text!r}: expected two numbers LOW,HIGH", hint) from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise CnnkitError(f"--window {text!r}: LOW must be below HIGH", hint)
    return low, high


def _flag(name: str) -> str:
    return name.replace("_", "-")


def read_yaml_options(path: str | Path, config_type: type) -> dict[str, Any]:
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
    if target is None and float in args and not isinstance(value, bool):  # a number or a keyword (--lr 0.002 or auto)
        try:
            return float(value)  # YAML reads 1e-3 as text
        except (TypeError, ValueError):
            if isinstance(value, str):
                return value  # the keyword, checked by validate()
            raise CnnkitError(f"{where}: expected float, got {value!r}") from None
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
