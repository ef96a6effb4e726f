"""Serving: does dynamic batching pay, is cnnkit's server as fast as LitServe's, and does it stay correct and flat under
a long mixed load? (issue: serving)

    python benchmarks/serve.py [--clients 16] [--requests 25] [--soak 2000] [--only batching,litserve,soak]

1. The model: resnet18 for 10 classes at 224 px (weights initialised with seed 0 and saved as a cnnkit classify
   weights file: no download; speed does not depend on the values). The images: 32 photos from scikit-image's
   bundled data, cropped and resized to 320x240 JPEGs (what a client uploads).
2. Throughput and latency: the server runs as its own process on 127.0.0.1; --clients threads each send --requests
   requests of one image (multipart, as DESIGN's contract says) and wait for the answer, so the load is bounded and
   the script stops by itself. Images per second over the whole load, and p50/p99 of the request latencies seen
   by the clients. Three servers, one after another, in this one run:
   - `cnnkit serve --max-batch 16 --max-wait-ms 5`;
   - `cnnkit serve --max-batch 1` (no batching);
   - LitServe (pip litserve) serving the same network with the same preprocessing, its own batching at
     max_batch_size 16 and batch_timeout 5 ms, one inference worker.
3. Soak: --soak requests against `cnnkit serve --api-key` from the same clients, a mix of good requests and bad
   ones (not an image, an upload over --max-upload-mb, a wrong key, an unknown model): every good one must come
   back with the label the model gives that image (asked once before the soak), every bad one with its 4xx; the
   server's resident memory is read from /proc after the first tenth of the requests and at the end.

Targets: batching >= 1.5x the throughput of batch 1; cnnkit >= LitServe; no request fails. Rows go to --results
(JSON lines); the table is printed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MODEL, CLASSES = "resnet18", [f"class_{k}" for k in range(10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_weights(work: Path, imgsz: int) -> Path:
    import torch

    from cnnkit.augment.presets import IMAGENET_MEAN, IMAGENET_STD
    from cnnkit.engine.checkpoint import save_weights
    from cnnkit.models.backbones import build_classifier

    path = work / "resnet18.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        save_weights(build_classifier(MODEL, len(CLASSES)), path,
                     {"task": "classify", "model": MODEL, "class_names": CLASSES, "imgsz": imgsz, "mean": list(IMAGENET_MEAN),
                      "std": list(IMAGENET_STD)})
    return path


def make_images(count: int = 32) -> list[bytes]:
    """JPEGs of 320x240 cut from scikit-image's photos (random crops, seed 0)."""
    from PIL import Image
    from skimage import data

    photos = [getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "coins",
                                                 "camera", "moon")]
    rng = random.Random(0)
    out = []
    for k in range(count):
        photo = photos[k % len(photos)]
        photo = np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3]
        h, w = photo.shape[:2]
        side_h, side_w = int(h * rng.uniform(0.5, 0.9)), int(w * rng.uniform(0.5, 0.9))
        top, left = rng.randrange(h - side_h + 1), rng.randrange(w - side_w + 1)
        image = Image.fromarray(photo[top:top + side_h, left:left + side_w]).resize((320, 240))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


class Server:
    """A server process on 127.0.0.1, stopped on exit."""

    def __init__(self, command: list[str], port: int, health: str = "/health"):
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.log = tempfile.TemporaryFile()
        # a session of its own: LitServe's inference workers are child processes, stopped with the group
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait(health)

    def wait(self, health: str, seconds: float = 300) -> None:
        import httpx

        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.process.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"the server exited ({self.process.returncode}):\n{self.log.read().decode()[-3000:]}")
            try:
                if httpx.get(self.url + health, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise SystemExit("the server did not become ready")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        time.sleep(1)  # the group's other processes exit after their parent
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_threads(threads: list[threading.Thread]) -> float:
    """Start the client threads together, wait for all; the seconds they took."""
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def drive(url: str, clients: int, requests: int, images: list[bytes], check=None) -> dict:
    """``clients`` threads, each sending ``requests`` one-image requests to ``url`` one after another."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as session:
            for j in range(requests):
                index = (k * requests + j) % len(images)
                started = time.perf_counter()
                try:
                    answer = session.post(url, files={"file": (f"{index}.jpg", images[index], "image/jpeg")})
                    problem = None if answer.status_code == 200 else f"{answer.status_code} {answer.text[:200]}"
                    if problem is None and check is not None:
                        problem = check(index, answer.json())
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if problem:
                        failures.append(problem)

    seconds = run_threads([threading.Thread(target=client, args=(k,)) for k in range(clients)])
    ms = sorted(1000 * v for v in latencies)
    return {"requests": len(latencies), "images_per_s": len(latencies) / seconds, "p50_ms": ms[len(ms) // 2],
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "failed": len(failures), "first_failure": failures[:1],
            "seconds": seconds}


def cnnkit_command(weights: Path, port: int, max_batch: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnkit", "serve", "--weights", str(weights), "--name", "m", "--port", str(port),
            "--max-batch", str(max_batch), "--max-wait-ms", "5", "--device", "cpu", "--log-level", "warning", *extra]


try:  # LitServe pickles its API into a worker process: the class lives at the top of the module
    import litserve as ls
except ImportError:  # pip install litserve (or cnnkit[bench]) to compare against it
    ls = None

if ls is not None:
    class ClassifierAPI(ls.LitAPI):
        """The same network with cnnkit's preprocessing, as a LitServe user would write it."""

        def __init__(self, weights: str, **options):
            super().__init__(**options)
            self.weights = weights

        def setup(self, device):
            from cnnkit.augment.presets import classify_transforms
            from cnnkit.tasks.classify.api import Classifier

            self.clf = Classifier.load(self.weights)
            self.model = self.clf.model.eval()
            self.transform = classify_transforms(self.clf.imgsz, train=False, mean=self.clf.mean, std=self.clf.std)

        def decode_request(self, request):
            from PIL import Image

            return self.transform(Image.open(io.BytesIO(request["file"].file.read())).convert("RGB"))

        def batch(self, inputs):
            import torch

            return torch.stack(inputs)

        def predict(self, x):
            import torch

            with torch.inference_mode():
                probs = torch.softmax(self.model(x if x.dim() == 4 else x[None]).float(), dim=1)
            scores, indices = probs.topk(5, dim=1)
            return [{"label": self.clf.class_names[i[0]], "score": s[0]} for s, i in zip(scores.tolist(), indices.tolist())]

        def unbatch(self, output):
            return output

        def encode_response(self, output):
            return [output] if isinstance(output, dict) else output


def litserve_worker(weights: Path, port: int, max_batch: int) -> None:
    """LitServe serving the same network (run in its own process by --litserve-worker)."""
    if ls is None:
        raise SystemExit("pip install litserve to compare against it (or --only batching,soak)")
    api = ClassifierAPI(str(weights), max_batch_size=max_batch, batch_timeout=0.005)
    ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120).run(
        host="127.0.0.1", port=port, generate_client_file=False, log_level="warning", num_api_servers=1)


def soak(weights: Path, images: list[bytes], clients: int, total: int) -> dict:
    import httpx

    key, port = "soak-key", free_port()
    with Server(cnnkit_command(weights, port, 16, "--api-key", key, "--max-upload-mb", "1"), port) as server:
        headers = {"X-API-Key": key}
        expected = [httpx.post(f"{server.url}/predict/m", files={"file": ("x.jpg", im, "image/jpeg")}, headers=headers,
                               timeout=60).json()[0]["label"] for im in images]
        rng = random.Random(1)
        plan = [rng.choices(["good", "not_image", "oversize", "wrong_key", "unknown_model"], [0.8, 0.05, 0.05, 0.05, 0.05])[0]
                for _ in range(total)]
        want = {"good": 200, "not_image": 400, "oversize": 413, "wrong_key": 401, "unknown_model": 404}
        outcomes: dict[str, list[int]] = {kind: [0, 0] for kind in want}  # right, wrong
        memory: list[float] = []
        lock = threading.Lock()
        counter = iter(range(total))
        big = os.urandom(2 * 1024 * 1024)

        def client() -> None:
            with httpx.Client(timeout=120) as session:
                for k in counter:
                    kind, index = plan[k], k % len(images)
                    url = f"{server.url}/predict/{'nope' if kind == 'unknown_model' else 'm'}"
                    body = {"not_image": b"this is not an image", "oversize": big}.get(kind, images[index])
                    sent = headers if kind != "wrong_key" else {"X-API-Key": "wrong"}
                    try:
                        answer = session.post(url, files={"file": (f"{index}.jpg", body, "image/jpeg")}, headers=sent)
                        right = answer.status_code == want[kind] and (
                            kind != "good" and set(answer.json()) == {"error"} or
                            kind == "good" and answer.json()[0]["label"] == expected[index])
                    except httpx.HTTPError:
                        right = False
                    with lock:
                        outcomes[kind][0 if right else 1] += 1
                        if k == total // 10:
                            memory.append(server.rss_mb())

        seconds = run_threads([threading.Thread(target=client) for _ in range(clients)])
        memory.append(server.rss_mb())
    return {"requests": total, "seconds": seconds, "outcomes": outcomes, "wrong": sum(w for _, w in outcomes.values()),
            "rss_mb_after_tenth": memory[0], "rss_mb_end": memory[-1]}


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=25, help="requests per client in each throughput run")
    parser.add_argument("--soak", type=int, default=2000, help="requests of the soak run")
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--only", default="batching,litserve,soak")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cnnkit_serve_bench")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "serve.jsonl")
    parser.add_argument("--litserve-worker", nargs=3, metavar=("WEIGHTS", "PORT", "MAX_BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.litserve_worker:
        weights, port, max_batch = args.litserve_worker
        litserve_worker(Path(weights), int(port), int(max_batch))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    weights, images = make_weights(args.work, args.imgsz), make_images()
    only = set(args.only.split(","))
    base = {"date": time.strftime("%Y-%m-%d"), "clients": args.clients, "requests_per_client": args.requests, "imgsz": args.imgsz,
            "model": MODEL, "cpus": os.cpu_count()}
    rows = {}
    servers = []
    if "batching" in only:
        servers += [("cnnkit max-batch 16", lambda p: cnnkit_command(weights, p, 16)), ("cnnkit max-batch 1", lambda p: cnnkit_command(weights, p, 1))]
    if "litserve" in only:
        servers.append(("litserve max_batch_size 16", lambda p: [sys.executable, __file__, "--litserve-worker", str(weights), str(p), "16"]))
    for name, command in servers:
        port = free_port()
        with Server(command(port), port) as server:
            url = f"{server.url}/predict/m" if name.startswith("cnnkit") else f"{server.url}/predict"
            drive(url, args.clients, 2, images)  # warm-up: every client once or twice
            rows[name] = drive(url, args.clients, args.requests, images)
        append(args.results, {**base, "kind": "throughput", "server": name, **rows[name]})
    if "soak" in only:
        result = soak(weights, images, args.clients, args.soak)
        append(args.results, {**base, "kind": "soak", **result})
        print(f"soak: {result['requests']} requests in {result['seconds']:.0f} s, {result['wrong']} answered wrongly; "
              f"resident memory {result['rss_mb_after_tenth']:.0f} MB after a tenth, {result['rss_mb_end']:.0f} MB at the end")
    print(f"\n{'server':28s} {'img/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'failed':>7s}")
    for name, r in rows.items():
        print(f"{name:28s} {r['images_per_s']:8.1f} {r['p50_ms']:8.0f} {r['p99_ms']:8.0f} {r['failed']:7d}")
    if {"cnnkit max-batch 16", "cnnkit max-batch 1"} <= set(rows):
        ratio = rows["cnnkit max-batch 16"]["images_per_s"] / rows["cnnkit max-batch 1"]["images_per_s"]
        print(f"batching: {ratio:.2f}x the throughput of batch 1 (target 1.5)")
    if {"cnnkit max-batch 16", "litserve max_batch_size 16"} <= set(rows):
        ratio = rows["cnnkit max-batch 16"]["images_per_s"] / rows["litserve max_batch_size 16"]["images_per_s"]
        print(f"cnnkit against LitServe: {ratio:.2f}x (target 1.0)")


if __name__ == "__main__":
    main()
