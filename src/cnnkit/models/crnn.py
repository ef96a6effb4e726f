"""CRNN (Shi et al. 2015, arXiv:1507.05717): a CNN that turns a text line into a sequence of column features,
a sequence head over them, and one distribution over the charset plus CTC's blank per column.

    model = CRNN(num_classes=1 + len(charset))          # blank is class 0
    logits = model(images)                              # images [B, 3, H, W] -> [B, W // 4, num_classes]
    lengths = model.output_lengths(widths)              # the columns of each line before padding

The backbone halves height and width twice, then height only (pooling (2, 1), as CRNN does), so a column
of the output covers 4 pixels of the line's width and a 32 px line yields 8 columns per 32 px: enough for
narrow letters (CTC needs at least one column per character, two for a doubled one). Any height of 16 px or
more works: what is left of the height is averaged away. The sequence head is a two-layer bidirectional LSTM
(``head="lstm"``, CRNN's) or a stack of 1-D convolutions (``head="conv"``, a little faster on CPUs), whose
receptive field of about 60 px reaches across a few letters either side.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class CRNN(nn.Module):
    STRIDE = 4  # input pixels of width per output column

    def __init__(self, num_classes: int, channels: tuple[int, int, int, int] = (32, 64, 128, 256), head: str = "lstm",
                 hidden: int = 128):
        super().__init__()
        if head not in ("lstm", "conv"):
            raise ValueError(f"CRNN head '{head}': use lstm or conv")
        c = list(channels)
        self.backbone = nn.Sequential(
            _block(3, c[0]), nn.MaxPool2d(2),
            _block(c[0], c[1]), nn.MaxPool2d(2),
            _block(c[1], c[2]), _block(c[2], c[2]), nn.MaxPool2d((2, 1)),
            _block(c[2], c[3]), _block(c[3], c[3]), nn.MaxPool2d((2, 1)),
        )
        self.head_kind = head
        if head == "lstm":
            self.sequence = nn.LSTM(c[3], hidden, num_layers=2, bidirectional=True, batch_first=True, dropout=0.1)
            features = 2 * hidden
        else:
            self.sequence = nn.Sequential(
                nn.Conv1d(c[3], 2 * hidden, 5, padding=2), nn.BatchNorm1d(2 * hidden), nn.ReLU(inplace=True),
                nn.Conv1d(2 * hidden, 2 * hidden, 5, padding=2), nn.BatchNorm1d(2 * hidden), nn.ReLU(inplace=True))
            features = 2 * hidden
        self.classifier = nn.Linear(features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, W // 4, channels]: the backbone's columns, height averaged away."""
        return self.backbone(images).mean(dim=2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images)
        if self.head_kind == "lstm":
            x, _ = self.sequence(x)
        else:
            x = self.sequence(x.transpose(1, 2)).transpose(1, 2)
        return self.classifier(x)

    @classmethod
    def output_lengths(cls, widths: torch.Tensor) -> torch.Tensor:
        """The output columns of lines ``widths`` pixels wide (two halvings with floor)."""
        return torch.div(torch.div(widths, 2, rounding_mode="floor"), 2, rounding_mode="floor")
