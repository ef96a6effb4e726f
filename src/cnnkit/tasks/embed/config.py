"""`embed train`'s options: classification's plus the embedding's size and metric-learning loss."""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.config import option
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.config import TrainConfig


@dataclass
class EmbedConfig(TrainConfig):
    """`embed train`: the training options plus the embedding's size and metric-learning loss (its model,
    batch, lr and warm-up are the ones its retrieval figures were measured with, not classification's)."""

    model: str = option("tiny_cnn", "model name: tiny_cnn, small_cnn, any timm model (resnet18, efficientnet_b0, …) or "
                        "tv:NAME for torchvision")
    batch: int = option(64, "global batch size (split across processes under torchrun)")
    lr: float | str = option(0.002, "peak learning rate, or auto: a learning-rate range test on the training data picks "
                             "it before training (plot in plots/lr_find.png)")
    warmup_epochs: float | None = option(1.0, "linear warm-up length in epochs")
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
        if self.balance not in ("none", "auto"):  # auto: nothing to balance in a metric-learning loss
            raise CnnkitError(f"--balance {self.balance} is for classification", "embed train balances its batches with --per-class")
        if self.tta in ("flip", "d8"):
            raise CnnkitError(f"--tta {self.tta} is for classification", "embeddings are compared one view per image: drop --tta")
        if self.dim < 1:
            raise CnnkitError(f"--dim must be at least 1, got {self.dim}")
        if self.per_class < 0 or self.per_class > self.batch:
            raise CnnkitError(f"--per-class must be between 0 and --batch ({self.batch}), got {self.per_class}")
        if self.temperature <= 0:
            raise CnnkitError(f"--temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.margin <= 2.0:
            raise CnnkitError(f"--margin must be between 0 and 2, got {self.margin}")
        return self
