"""A model exported for one batch size, run on any batch (imported by runtime.py and by the edge runtimes' loaders,
which runtime.py itself imports)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError


class FixedBatch(nn.Module):
    """Runs a model exported for one batch size on any batch, a sample (or exported batch) at a time."""

    def __init__(self, inner: Any, batch: int):
        super().__init__()
        self.inner, self.batch = inner, batch

    def forward(self, x: torch.Tensor) -> Any:
        if x.shape[0] == self.batch:
            return self.inner(x)
        if self.batch != 1:
            raise CnnkitError(f"this model was exported for batch {self.batch}, got {x.shape[0]}",
                              "export it again with --dynamic-batch")
        parts = [self.inner(x[i:i + 1]) for i in range(x.shape[0])]
        if isinstance(parts[0], (tuple, list)):  # a detector's (boxes, scores, labels)
            return tuple(torch.cat(column) for column in zip(*parts))
        return torch.cat(parts)
