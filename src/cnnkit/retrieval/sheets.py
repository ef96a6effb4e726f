"""Contact sheets: a query beside its neighbours, or the members of a group, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cnnkit.engine.rundir import atomic_path

THUMB = 96


def _thumb(path: str | Path) -> np.ndarray:
    from cnnkit.data.images import load_image
    from cnnkit.errors import CnnkitError

    try:
        image = load_image(path)
    except CnnkitError:
        return np.full((THUMB, THUMB, 3), 200, np.uint8)  # a grey tile: the file vanished since indexing
    from PIL import Image

    scale = THUMB / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # small images (8x8 digits, icons) are enlarged with sharp pixels rather than blurred
    image = image.resize(size, Image.NEAREST if scale > 2 else Image.BILINEAR)
    tile = np.full((THUMB, THUMB, 3), 255, np.uint8)
    array = np.asarray(image)
    top, left = (THUMB - array.shape[0]) // 2, (THUMB - array.shape[1]) // 2
    tile[top:top + array.shape[0], left:left + array.shape[1]] = array
    return tile


def contact_sheet(rows: Sequence[Sequence[tuple[str, str, bool | None]]], path: str | Path, row_titles: Sequence[str] | None = None) -> Path:
    """One row per list of (image file, caption, match) cells; ``match`` True/False draws a green/red
    frame (a neighbour of the query's label or not), None no frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows = max(1, len(rows))
    n_cols = max(1, max((len(r) for r in rows), default=1))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.8 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (file, caption, match) in enumerate(row):
            ax = axes[r][c]
            ax.imshow(_thumb(file))
            ax.set_title(caption, fontsize=7)
            if match is not None:
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green" if match else "tab:red")
                    spine.set_linewidth(3)
        if row_titles:
            axes[r][0].text(-0.08, 0.5, row_titles[r], transform=axes[r][0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
