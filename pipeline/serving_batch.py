"""Concurrent requests decoded together: the served model's micro-batcher.

The decoder costs about the same per step for one sentence as for sixteen (it is a batched
search, pipeline/model/decoding.py), so a server that decodes one request at a time leaves
most of the CPU's throughput unused when many clients each send one sentence. `RequestBatcher`
queues checked requests and one worker thread runs them through the model: each batch is every
queued request that fits (same beam size, at most `max_batch_rows` rows and `max_request_work`
units of work together, the limits one request has), so a batch is never more than one
request could have been.

When to wait for more: a batch starts at once when the previous one held one request (one
client, or a quiet server: no added latency), and waits up to `window_s` for more when the
previous one held several (clients are many, and those whose answers just went out are about to
send again). `window_s = 0` with `max_requests = 1` turns batching off (benchmarks compare).

Every request is answered on the model that its batch started with: the model is read once per
batch, so a switch of the served version (serving_follow.py) takes effect between batches and
requests in flight finish on their version.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Model = TypeVar("Model")
# What the batcher calls: the model of this batch, the texts of all its requests, the beam.
PredictFn = Callable[[Any, list[str], int], list[str]]


@dataclass(frozen=True)
class BatchLimits:
    """What one batch may hold: the served model's per-request limits, and the wait."""

    max_rows: int
    max_work: int
    window_s: float
    max_requests: int = 1_000_000  # 1: every request decoded alone (batching off)


@dataclass
class PendingRequest:
    """A checked request waiting for its batch; `done` gets (model, outputs) or an error."""

    texts: list[str]
    beam_size: int
    work: int
    done: Future[tuple[Any, list[str]]] = field(default_factory=Future)


@dataclass(frozen=True)
class BatchRecord:
    """One batch the worker ran, for the metrics (serving_metrics.py)."""

    requests: int
    rows: int
    seconds: float


class RequestBatcher(Generic[Model]):
    """Queue of checked requests and the one thread that decodes them in batches."""

    def __init__(
        self,
        current_model: Callable[[], Model],
        predict: PredictFn,
        limits: BatchLimits,
        on_batch: Callable[[BatchRecord], None] = lambda record: None,
    ) -> None:
        self._current_model = current_model
        self._predict = predict
        self._limits = limits
        self._on_batch = on_batch
        self._queue: queue.Queue[PendingRequest | None] = queue.Queue()
        self._held: list[PendingRequest] = []  # taken from the queue, not fitting the last batch
        self._last_batch_requests = 1
        self._thread = threading.Thread(target=self._run, name="request-batcher", daemon=True)

    def start(self) -> RequestBatcher[Model]:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30) -> None:
        """Finish what is queued, then end the worker thread."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def submit(self, texts: list[str], beam_size: int, work: int) -> PendingRequest:
        """Queue a request already checked against the limits; its `done` future answers."""
        request = PendingRequest(texts, beam_size, work)
        self._queue.put(request)
        return request

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._decode(batch)

    def _next_batch(self) -> list[PendingRequest] | None:
        """The oldest request and every later one that fits beside it; None to stop."""
        first = self._held.pop(0) if self._held else self._queue.get()
        if first is None:
            self._fail_held("the server is stopping")
            return None
        batch, rows, work = [first], len(first.texts), first.work
        deadline = time.monotonic() + (self._limits.window_s if self._waits() else 0.0)
        for candidate in self._candidates(deadline):
            if candidate is None:
                self._queue.put(None)  # stop after this batch
                break
            if self._fits(candidate, first.beam_size, len(batch), rows, work):
                batch.append(candidate)
                rows, work = rows + len(candidate.texts), work + candidate.work
            else:
                self._held.append(candidate)
            if len(batch) >= self._limits.max_requests:
                break
        self._last_batch_requests = len(batch)
        return batch

    def _waits(self) -> bool:
        return self._last_batch_requests > 1 and self._limits.max_requests > 1

    def _candidates(self, deadline: float) -> Any:
        """Held requests, then queued ones until the deadline (at once when it has passed)."""
        held, self._held = self._held, []
        yield from held
        while True:
            remaining = deadline - time.monotonic()
            try:
                yield (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return

    def _fits(self, request: PendingRequest, beam: int, count: int, rows: int, work: int) -> bool:
        return (
            count < self._limits.max_requests
            and request.beam_size == beam
            and rows + len(request.texts) <= self._limits.max_rows
            and work + request.work <= self._limits.max_work
        )

    def _decode(self, batch: Sequence[PendingRequest]) -> None:
        model = self._current_model()  # once per batch: a switch lands between batches
        texts = [text for request in batch for text in request.texts]
        started = time.monotonic()
        try:
            outputs = self._predict(model, texts, batch[0].beam_size)
            if len(outputs) != len(texts):
                raise RuntimeError(f"the model gave {len(outputs)} outputs for {len(texts)} texts")
        except Exception as error:  # every request of the batch gets the model's error
            for request in batch:
                request.done.set_exception(error)
            return
        finally:
            self._on_batch(BatchRecord(len(batch), len(texts), time.monotonic() - started))
        start = 0
        for request in batch:
            request.done.set_result((model, outputs[start : start + len(request.texts)]))
            start += len(request.texts)

    def _fail_held(self, reason: str) -> None:
        for request in self._held:
            request.done.set_exception(RuntimeError(reason))
        self._held = []
