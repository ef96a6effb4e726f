"""A small VGG-style CNN for fast CPU runs (the demo trains it on digits in about a minute)."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit.registry import register


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Conv stages (each two 3x3 convs, BN, ReLU, then 2x2 max-pool), a global pool, linear head.

    ``global_pool`` is timm's pool type: ``avg``, or ``catavgmax`` (average and max pooling side by side,
    fast.ai's concat pooling, which doubles ``num_features``). Follows timm's interface where it is cheap
    to: ``forward_features``, ``forward_head``, ``num_features`` and ``reset_classifier``, so feature
    extraction treats it like any timm model.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128), drop_rate: float = 0.1,
                 global_pool: str = "avg"):
        super().__init__()
        stages: list[nn.Module] = []
        cin = in_chans
        for width in widths:
            stages += [_block(cin, width), nn.MaxPool2d(2)]
            cin = width
        self.features = nn.Sequential(*stages)
        from timm.layers import SelectAdaptivePool2d

        self.pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.num_features = cin * self.pool.feat_mult()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x)
        return x if pre_logits else self.fc(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


@register("tiny_cnn", task="classify", about="small VGG-style CNN for fast CPU runs (the demo)")
def tiny_cnn(num_classes: int, in_chans: int = 3, pretrained: bool = False) -> TinyCNN:
    if pretrained:
        from cnnkit.errors import CnnkitError

        raise CnnkitError("tiny_cnn has no published weights", "drop --pretrained, or pass --weights FILE")
    return TinyCNN(num_classes, in_chans)


@register("small_cnn", task="classify", about="VGG-style CNN, four stages of 32-256 channels, average and max pooling "
          "side by side (1.2M parameters): the default for training from scratch on small images")
def small_cnn(num_classes: int, in_chans: int = 3, pretrained: bool = False) -> TinyCNN:
    if pretrained:
        from cnnkit.errors import CnnkitError

        raise CnnkitError("small_cnn has no published weights", "drop --pretrained, or pass --weights FILE")
    return TinyCNN(num_classes, in_chans, widths=(32, 64, 128, 256), global_pool="catavgmax")
