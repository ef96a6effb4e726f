"""The HTTP API (FastAPI): DESIGN's serve contract.

    GET  /                  the web page (page.html: plain HTML, CSS and JavaScript, nothing from a CDN)
    GET  /health            {"status": "ready"} once every model is loaded and warmed up, else 503 {"status": "starting"}
    GET  /models            [{"name", "task", "format", "file", "imgsz", "classes", "parameters"}]
    POST /predict/{model}   multipart field "file" (one or more images) -> predict's rows; ?overlay=true adds each
                            row's "overlay" (a PNG, base64); ?conf= ?iou= ?topk= where the task has them
    GET  /metrics           Prometheus text (prometheus-client)
    GET  /docs              OpenAPI

Errors are JSON {"error": "..."}: 400 not an image or not a multipart upload, 401 API key, 404 model, 413 too large
(bytes, pixels or files), 422 bad parameter, 503 queue full or still starting. Uploads are read into memory
(never a temporary file) and decoded there; no route reads a path from the request.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from importlib.resources import files as package_files
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from cnnkit.data.decode import DEFAULT_MAX_PIXELS
from cnnkit.errors import CnnkitError
from cnnkit.serve.batching import Batcher, BatchStats, QueueFull
from cnnkit.serve.models import ServedModel, check_parameters

PUBLIC_PATHS = ("/health",)


@dataclass(frozen=True)
class Limits:
    """What one server accepts (the `cnnkit serve` options of the same names)."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_upload_mb: float = 20.0
    max_files: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS or 89_478_485

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


# ------------------------------------------------------------------------------------------- uploads
async def read_body(request: Any, limit: int) -> bytes:
    """The request body in memory, refused (413) past ``limit`` bytes. An oversize body is read on (and dropped) up to
    twice the limit, so that the client, still sending, gets the 413 instead of a broken connection."""
    declared = request.headers.get("content-length")
    too_large = ApiError(413, f"the upload is larger than the limit of {limit / 2**20:g} MB (--max-upload-mb)")
    if declared is not None and declared.isdigit() and int(declared) > 2 * limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        elif size > 2 * limit:
            break
    if size > limit:
        raise too_large
    return b"".join(chunks)


def upload_parts(body: bytes, content_type: str, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each multipart field named "file", parsed in memory by the standard library."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, f"expected a multipart/form-data upload with field 'file', got content type '{content_type or 'none'}'")
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ApiError(400, "the multipart body cannot be parsed (no boundary, or no parts)")
    parts = []
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") != "file":
            continue
        parts.append((part.get_filename() or f"upload_{len(parts) + 1}", part.get_payload(decode=True) or b""))
    if not parts:
        raise ApiError(400, "no field named 'file' in the upload (send the image as multipart field 'file')")
    if len(parts) > max_files:
        raise ApiError(413, f"{len(parts)} files in one request; the limit is {max_files} (--max-files)")
    return parts


def decode_picture(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An uploaded image as HxWx3 uint8 RGB, upright (EXIF orientation applied), decoded in memory; 400 when it is not
    an image, 413 when it has more than ``max_pixels`` (checked from the header, before anything is decoded)."""
    from PIL import Image

    from cnnkit.data.decode import open_image, orientation, to_rgb, upright

    if not data:
        raise ApiError(400, f"{name}: empty file")
    try:
        with open_image(io.BytesIO(data), name, check_limit=False) as image:
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise ApiError(413, f"{name}: {width}x{height} pixels exceed the limit of {max_pixels / 1e6:.3g} MP (--max-pixels)")
            turn = orientation(image)
            image.load()
            return np.asarray(to_rgb(upright(image, turn)))
    except ApiError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, CnnkitError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if reason.startswith("cannot identify image file"):  # Pillow names the BytesIO object, which says nothing
            reason = "no image format recognised"
        raise ApiError(400, f"{name}: not an image Pillow can read ({reason[:160]})") from None


# ------------------------------------------------------------------------------------------- the app
class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps may live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("cnnkit_requests", "predict requests by model and HTTP status", ["model", "status"],
                                registry=self.registry)
        self.latency = Histogram("cnnkit_request_seconds", "predict request latency, upload read to response", ["model"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.batch_images = Histogram("cnnkit_batch_images", "images per inference batch", ["model"],
                                      buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.batch_seconds = Histogram("cnnkit_batch_seconds", "inference time of one batch", ["model"],
                                       buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.queue = Gauge("cnnkit_queue_images", "images waiting in the model's queue", ["model"], registry=self.registry)

    def stats(self, model: str) -> BatchStats:
        def on_batch(images: int, seconds: float) -> None:
            self.batch_images.labels(model).observe(images)
            self.batch_seconds.labels(model).observe(seconds)

        return BatchStats(on_batch=on_batch, on_depth=self.queue.labels(model).set)


def warm_picture(served: ServedModel) -> np.ndarray:
    size = int(getattr(served.model, "imgsz", 0) or 64)
    width = size * 4 if served.task == "ocr" else size  # a text line is wide
    return np.full((size, width, 3), 127, dtype=np.uint8)


def create_app(models: list[ServedModel], limits: Limits = Limits(), api_key: str | None = None, warm_up: bool = True):
    """The FastAPI app serving ``models`` (names unique). Each model gets its queue and inference thread at start-up,
    then one warm-up batch; /health says ready after that."""
    by_name = {m.name: m for m in models}
    if len(by_name) != len(models):
        raise CnnkitError("two models share an endpoint name", "give each --weights its own --name")
    metrics = Metrics()
    state: dict[str, Any] = {"ready": False, "batchers": {}}

    def warm() -> None:
        from cnnkit.console import warn

        for served in models:
            try:
                state["batchers"][served.name].run([warm_picture(served)], ["warm-up"], {}, False)
            except Exception as exc:  # say so, and serve: the first request gets the model's own error
                warn(f"{served.name}: the warm-up batch failed: {type(exc).__name__}: {exc}")
        state["ready"] = True

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for served in models:
            state["batchers"][served.name] = Batcher(served.predict, limits.max_batch, limits.max_wait_ms, limits.max_queue,
                                                     metrics.stats(served.name), served.name)
        if warm_up:
            threading.Thread(target=warm, name="cnnkit-serve-warm-up", daemon=True).start()
        else:
            state["ready"] = True
        yield
        for batcher in state["batchers"].values():
            batcher.close()

    app = FastAPI(title="cnnkit serve", version=_version(), lifespan=lifespan,
                  description="cnnkit models over HTTP: POST an image to /predict/{model}. Errors are JSON {\"error\": ...}.")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def require_key(request: Request, call_next):
        if api_key and request.url.path not in PUBLIC_PATHS:
            given = request.headers.get("x-api-key") or ""
            auth = request.headers.get("authorization") or ""
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not given and request.url.path == "/":  # the page: a browser's first request cannot carry a header
                given = request.query_params.get("api_key", "")
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                if request.url.path.startswith("/predict/"):
                    metrics.requests.labels(_model_label(request.url.path, by_name), "401").inc()
                return error(401, "missing or wrong API key (send it as header X-API-Key or Authorization: Bearer KEY)")
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(package_files("cnnkit.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health", summary="ready once every model is loaded and warmed up")
    async def health():
        if not state["ready"]:
            return JSONResponse({"status": "starting", "models": list(by_name)}, status_code=503)
        return {"status": "ready", "models": list(by_name)}

    @app.get("/models", summary="the models served: name, task, format, input size, classes, query parameters")
    async def list_models():
        return [m.info() for m in models]

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    upload_schema = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}},
        "parameters": [
            {"name": "overlay", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
             "description": "add each result drawn on its image, as a base64 PNG in 'overlay'"},
            {"name": "conf", "in": "query", "required": False, "schema": {"type": "number"}, "description": "detect, instance"},
            {"name": "iou", "in": "query", "required": False, "schema": {"type": "number"}, "description": "detect, instance"},
            {"name": "topk", "in": "query", "required": False, "schema": {"type": "integer"}, "description": "classify"}]}

    @app.post("/predict/{model}", openapi_extra=upload_schema,
              summary="predict's JSON rows for one or more uploaded images (the JSON of `TASK predict --save-json`)")
    async def predict(model: str, request: Request):
        started = time.perf_counter()
        status, label = 200, model if model in by_name else "unknown"
        try:
            served = by_name.get(model)
            if served is None:
                raise ApiError(404, f"no model named '{model}'; this server has {', '.join(by_name)}")
            if not state["ready"]:
                raise ApiError(503, "the models are still warming up; retry when GET /health says ready")
            try:
                params = check_parameters(served, dict(request.query_params))
            except CnnkitError as exc:
                raise ApiError(422, exc.message) from None
            overlay = _flag(request.query_params.get("overlay", "false"))
            body = await read_body(request, limits.max_upload_bytes)
            parts = upload_parts(body, request.headers.get("content-type", ""), limits.max_files)
            prepare = served.prepare if not overlay else None  # an overlay is drawn on the picture itself

            def decode_all() -> list[Any]:
                pictures = [decode_picture(data, name, limits.max_pixels) for name, data in parts]
                return [prepare(p) for p in pictures] if prepare is not None else pictures

            pictures = await asyncio.to_thread(decode_all)
            try:
                job = state["batchers"][model].submit(pictures, [name for name, _ in parts], params, overlay)
            except QueueFull as exc:
                raise ApiError(503, f"the queue of {model} is full: {exc}; retry later") from None
            try:
                rows = await asyncio.wrap_future(job.future)
            except CnnkitError as exc:  # the model refused an image (a text line too thin, …)
                raise ApiError(422, str(exc)) from None
            done = time.perf_counter()
            timing = (f"queue;dur={1000 * (job.started_at - job.queued_at):.2f}, "
                      f"infer;dur={1000 * (done - job.started_at):.2f}, total;dur={1000 * (done - started):.2f}")
            return Response(json.dumps(rows, allow_nan=False, default=_json_default), media_type="application/json",
                            headers={"Server-Timing": timing})
        except ApiError as exc:
            status = exc.status
            return error(exc.status, exc.message)
        except Exception:
            status = 500
            raise
        finally:
            metrics.requests.labels(label, str(status)).inc()
            metrics.latency.labels(label).observe(time.perf_counter() - started)

    return app


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ApiError(422, f"parameter 'overlay' must be true or false, got '{text}'")


def _model_label(path: str, by_name: dict[str, ServedModel]) -> str:
    name = path.removeprefix("/predict/").strip("/")
    return name if name in by_name else "unknown"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _version() -> str:
    from cnnkit.version import __version__

    return __version__
