"""Dynamic batching: the requests for one model wait in its queue until ``max_batch`` images are there or the
oldest has waited ``max_wait_ms``, and run as one batch on the model's own inference thread, off the event loop.
A request that would push the queue past ``max_queue`` images is refused at once (QueueFull: the app answers
503), so latency cannot grow without bound. Only requests with the same parameters share a batch."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class QueueFull(Exception):
    """The model's queue holds ``max_queue`` images already."""


@dataclass
class Job:
    pictures: list[np.ndarray]
    names: list[str]
    params: dict[str, Any]
    overlay: bool
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0

    @property
    def key(self) -> tuple:
        return tuple(sorted(self.params.items())), self.overlay


@dataclass
class BatchStats:
    """What the batcher reports to the metrics (prometheus-client objects, or anything with the same methods)."""

    on_batch: Callable[[int, float], None] = lambda images, seconds: None
    on_depth: Callable[[int], None] = lambda depth: None


class Batcher:
    """One model's queue and inference thread. ``run(pictures, names, params, overlay)`` -> one row per picture."""

    def __init__(self, run: Callable[[list, list, dict, bool], list[dict[str, Any]]], max_batch: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 256, stats: BatchStats | None = None, name: str = "model"):
        self.run, self.max_batch, self.max_wait, self.max_queue = run, max(1, max_batch), max_wait_ms / 1000.0, max_queue
        self.stats = stats or BatchStats()
        self.jobs: deque[Job] = deque()
        self.waiting = 0  # images in the queue
        self.ready = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._loop, name=f"cnnkit-serve-{name}", daemon=True)
        self.thread.start()

    def submit(self, pictures: list[np.ndarray], names: list[str], params: dict[str, Any], overlay: bool) -> Job:
        """Queue one request; its ``future`` gets the rows (or the exception ``run`` raised)."""
        job = Job(pictures, names, params, overlay)
        with self.ready:
            if self.stopped:
                raise QueueFull("the server is stopping")
            if self.waiting + len(pictures) > self.max_queue and self.waiting > 0:
                raise QueueFull(f"{self.waiting} images are waiting (--max-queue {self.max_queue})")
            self.jobs.append(job)
            self.waiting += len(pictures)
            self.stats.on_depth(self.waiting)
            self.ready.notify()
        return job

    def close(self) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify()
        self.thread.join(timeout=5)

    def _take_batch(self) -> list[Job] | None:
        """The next batch: the oldest job and those queued behind it with the same parameters, up to max_batch images,
        once max_batch images are there or the oldest has waited max_wait."""
        with self.ready:
            while not self.jobs and not self.stopped:
                self.ready.wait()
            if self.stopped and not self.jobs:
                return None
            first = self.jobs[0]
            deadline = first.queued_at + self.max_wait
            while not self.stopped:
                same = sum(len(j.pictures) for j in self.jobs if j.key == first.key)
                remaining = deadline - time.perf_counter()
                if same >= self.max_batch or remaining <= 0:
                    break
                self.ready.wait(remaining)
            batch, count = [], 0
            for job in list(self.jobs):
                if job.key != first.key:
                    continue
                if batch and count + len(job.pictures) > self.max_batch:
                    break
                batch.append(job)
                count += len(job.pictures)
            for job in batch:
                self.jobs.remove(job)
            self.waiting -= count
            self.stats.on_depth(self.waiting)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            started = time.perf_counter()
            for job in batch:
                job.started_at = started
            try:
                rows = self._run([p for job in batch for p in job.pictures], [n for job in batch for n in job.names],
                                 batch[0].params, batch[0].overlay)
                self.stats.on_batch(sum(len(job.pictures) for job in batch), time.perf_counter() - started)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].future.set_exception(exc)
                    continue
                for job in batch:  # one request's bad image must not fail the others batched with it
                    try:
                        job.future.set_result(self._run(job.pictures, job.names, job.params, job.overlay))
                    except Exception as own:
                        job.future.set_exception(own)
                continue
            offset = 0
            for job in batch:
                job.future.set_result(rows[offset:offset + len(job.pictures)])
                offset += len(job.pictures)

    def _run(self, pictures: list, names: list, params: dict[str, Any], overlay: bool) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for start in range(0, len(pictures), self.max_batch):  # a request larger than max_batch: max_batch at a time
            rows += self.run(pictures[start:start + self.max_batch], names[start:start + self.max_batch], params, overlay)
        return rows
