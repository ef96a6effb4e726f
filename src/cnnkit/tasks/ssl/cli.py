"""`cnnkit ssl train|val`."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.options import Batch, Device, Split, ValOut, Workers, config_command, pixel_limited
from cnnkit.tasks.ssl.config import SSLConfig

app = typer.Typer(help="Self-supervised pretraining on unlabelled images: train, val. The backbone goes into any "
                  "`train` with --backbone-from.", no_args_is_help=True)


@config_command(app, "train", SSLConfig, "Pretrain a backbone on a folder of unlabelled images (searched recursively): "
                "SimCLR, BYOL, VICReg, masked image modelling or an autoencoder; --eval-data LABELLED monitors kNN top-1.")
def ssl_train(cfg: SSLConfig, explicit: set[str]) -> None:
    from cnnkit.runner import train
    from cnnkit.tasks.ssl.api import SSL_RECIPE

    train(cfg, explicit, SSL_RECIPE)


@app.command("val")
@pixel_limited
def ssl_val(
    weights: Path = typer.Option(..., "--weights", help="an ssl weights file (runs/ssl/NAME/weights/best.safetensors)"),
    data: str = typer.Option(..., "--data", help="a labelled ImageFolder: ROOT/train/CLASS/… (the kNN bank and the linear "
                             "probe's training set) and the split to score"),
    split: Split = "val",
    knn_k: int = typer.Option(20, "--knn-k", min=1, help="neighbours of the kNN vote"),
    out: ValOut = None,
    batch: Batch = 64,
    device: Device = "auto",
    workers: Workers = 2,
) -> None:
    """Frozen-feature quality: knn_top1 (cosine, k neighbours) and linear_top1 (logistic regression) into metrics.json."""
    from cnnkit import tasks

    tasks.load(weights, "ssl").val(data, split, out, batch=batch, device=device, workers=workers, knn_k=knn_k)
