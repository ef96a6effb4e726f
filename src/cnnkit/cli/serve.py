"""`cnnkit serve`: weights files behind the HTTP API of cnnkit.serve, on uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from cnnkit.cli.options import Device, app
from cnnkit.errors import CnnkitError

API_KEY_ENV = "CNNKIT_API_KEY"


@app.command("serve")
def serve_command(
    weights: List[Path] = typer.Option(..., "--weights", help="a weights file (best.safetensors) or a deployed one (.onnx, "
                                       ".int8.pt, .ts, .pt2) of classify, detect, segment (semantic or Mask R-CNN), ocr or "
                                       "embed; repeat for more models"),
    name: Optional[List[str]] = typer.Option(None, "--name", help="endpoint name of each --weights, in order (default: the "
                                             "run's name, e.g. exp for runs/classify/exp/weights/best.safetensors)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind; 127.0.0.1 serves this machine only, 0.0.0.0 "
                             "every network it is on"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free one)"),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="most images run as one batch (1: no batching)"),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0.0, help="longest a request waits for others to batch with"),
    max_queue: int = typer.Option(256, "--max-queue", min=1, help="images a model's queue holds; past it requests get 503"),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001, help="largest request body, in MB (413 past it)"),
    max_files: int = typer.Option(16, "--max-files", min=1, help="most images in one request (413 past it)"),
    max_pixels: int = typer.Option(0, "--max-pixels", min=0, help="most pixels in one image, a guard against decompression "
                                   "bombs (0: Pillow's limit, about 89 MP)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help=f"require this key (header X-API-Key or Authorization: "
                                          f"Bearer) on every route but /health; default: the environment's {API_KEY_ENV}"),
    device: Device = "auto",
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level: critical, error, warning, info, debug"),
) -> None:
    """Serve models over HTTP: POST /predict/{model} (multipart field 'file'), GET /models, /health, /metrics (Prometheus),
    /docs (OpenAPI), and a web page at / to try them. Requests are batched dynamically (--max-batch, --max-wait-ms)."""
    import uvicorn

    from cnnkit.serve.app import Limits, create_app
    from cnnkit.serve.models import load_served

    names = list(name or [])
    if names and len(names) != len(weights):
        raise CnnkitError(f"{len(names)} --name for {len(weights)} --weights", "give one --name per --weights, or none")
    models = [load_served(path, names[k] if names else None, device) for k, path in enumerate(weights)]
    seen: dict[str, Path] = {}
    for served in models:
        if served.name in seen:
            raise CnnkitError(f"--weights {served.path} and {seen[served.name]} both serve as '{served.name}'",
                              "give each its own --name")
        seen[served.name] = served.path
    limits = Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, max_upload_mb=max_upload_mb,
                    max_files=max_files, **({"max_pixels": max_pixels} if max_pixels else {}))
    key = api_key or os.environ.get(API_KEY_ENV) or None
    app_ = create_app(models, limits, key)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    typer.echo(f"cnnkit serve: {', '.join(f'{m.name} ({m.task}, {m.format})' for m in models)} on http://{shown}:{port}/ "
               f"(API at /docs{', API key required' if key else ''})", err=True)
    uvicorn.run(app_, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
