"""`ssl train`'s options: the shared training options plus the method, its heads and the kNN monitor."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import TrainOptions, option
from cnnkit.errors import CnnkitError

# SimCLR's negatives are the batch's other images: below this the loss has too few to tell images apart
MIN_SIMCLR_BATCH = 16


@dataclass
class SSLConfig(TrainOptions):
    """`ssl train`: pretraining on unlabelled images (any folder, searched recursively; labels ignored)."""

    data: str = option("", "folder of images, searched recursively (subfolders and labels are ignored)")
    method: str = option("simclr", "simclr (contrastive, NT-Xent over two views; batch 16 or more), byol (momentum "
                         "teacher, no negatives), vicreg (variance-invariance-covariance, no negatives), masked (hide "
                         "random patches, reconstruct them: SparK-style for CNNs; judge it by fine-tuning), ae "
                         "(autoencoder)", ("simclr", "byol", "vicreg", "masked", "ae"))
    model: str = option("small_cnn", "backbone: small_cnn, tiny_cnn, any timm model (resnet18, …) or tv:NAME; "
                        "classify/detect/segment/embed train take it with --backbone-from and the same --model")
    epochs: int = option(100, "number of epochs")
    batch: int = option(128, "global batch size (SimCLR's negatives are the other images of the batch)")
    imgsz: int = option(64, "square image side after resize, in pixels")
    lr: float | str = option(0.002, "peak learning rate, or auto (a range test picks it)")
    warmup_epochs: float | None = option(None, "linear warm-up length in epochs (default 10% of --epochs)")
    augment: str = option("views", "views: each method's own (contrastive: crops down to 20% of the area, flips, "
                          "strong colour jitter, grey, blur; masked and ae: crops down to 50%, flips); or a preset; the "
                          "options below override one operation", ("views", "none", "light", "medium", "heavy"))
    val_split: float = option(0.05, "fraction of the images held out to report the validation loss on (without --eval-data)")
    eval_data: str | None = option(None, "a labelled ImageFolder (ROOT/train/CLASS/…, ROOT/val/…): kNN top-1 of its val "
                                   "images among its train images (cosine, --knn-k neighbours, frozen features) every "
                                   "epoch, which picks best.safetensors; linear_top1 at the end")
    knn_k: int = option(20, "neighbours of the kNN monitor")
    proj_dim: int = option(128, "output size of the projection head (simclr, byol, vicreg)")
    hidden_dim: int = option(512, "hidden size of the projection and prediction heads")
    temperature: float = option(0.5, "simclr: NT-Xent temperature")
    teacher_momentum: float = option(0.99, "byol: the teacher's starting momentum, rising to 1 on a cosine over the run")
    mask_ratio: float = option(0.6, "masked: share of the patches hidden (patches of the backbone's stride)")

    def validate(self) -> "SSLConfig":
        super().validate()
        if self.warmup_epochs is None:  # recorded in config.yaml, so --resume keeps it
            self.warmup_epochs = round(0.1 * self.epochs, 3)
        if not self.data and not self.resume:  # --resume reads it from the run's config.yaml
            raise CnnkitError("ssl train needs --data FOLDER, a folder of images (searched recursively)")
        if self.method == "simclr" and self.batch < MIN_SIMCLR_BATCH:
            raise CnnkitError(f"--batch {self.batch} is too small for simclr: each image's negatives are the other "
                              f"{2 * self.batch - 2} views of the batch", f"use --batch {MIN_SIMCLR_BATCH} or more, or "
                              "--method byol or vicreg, which need no negatives")
        if self.method == "vicreg" and self.batch < 2:
            raise CnnkitError("--batch must be at least 2 for vicreg: its variance and covariance terms are over the batch")
        if not 0.0 < self.mask_ratio < 1.0:
            raise CnnkitError(f"--mask-ratio must be between 0 and 1, got {self.mask_ratio}")
        if not 0.0 <= self.teacher_momentum < 1.0:
            raise CnnkitError(f"--teacher-momentum must be at least 0 and below 1, got {self.teacher_momentum}")
        if self.temperature <= 0:
            raise CnnkitError(f"--temperature must be positive, got {self.temperature}")
        for name in ("knn_k", "proj_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise CnnkitError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.transfer in ("linear", "gradual"):
            raise CnnkitError(f"--transfer {self.transfer}: pretraining trains the whole backbone",
                              "use finetune (with --backbone-from/--weights) or scratch")
        return self
