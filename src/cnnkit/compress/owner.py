"""What compress needs from the task that owns a model. The caller passes it in (the task table,
``cnnkit.tasks.owner_of``), so compress never imports a task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol

from cnnkit.errors import CnnkitError


class ModelOwner(Protocol):
    metric: str  # the headline metric its val returns: top1, map, miou, mask_map ("" when it has none)
    val_options: Mapping[str, Any]  # extra options its val takes here (segmentation: hd95=False)

    def load(self, path: str | Path) -> Any:
        """The task's object for a weights or deployed file: ``.model``, and
        ``.val(data, split, out=, device=, workers=, **val_options)`` returning the metrics."""


def require_metric(owner: ModelOwner) -> str:
    """The owner's headline metric; a one-line error for a task without one (quantize and bench report it)."""
    if not owner.metric:
        raise CnnkitError(f"bench and quantize measure classify, detect and segment metrics, not {getattr(owner, 'name', 'this task')}")
    return owner.metric
