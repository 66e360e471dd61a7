"""The micro-batcher of `mt serve` (pipeline/serving_batch.py): which requests share a batch.

The worker is held inside the model while requests queue, so which of them share the next batch
is decided by the rules alone, not by timing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from pipeline.serving_batch import BatchLimits, BatchRecord, PendingRequest, RequestBatcher

WAIT_S = 30


@dataclass
class HeldModel:
    """A model that upper-cases and can hold the worker inside its first call."""

    name: str = "v1"
    calls: list[tuple[str, list[str], int]] = field(default_factory=list)
    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    fail_on: str | None = None

    def predict(self, texts: list[str], beam: int) -> list[str]:
        self.calls.append((self.name, list(texts), beam))
        self.entered.set()
        assert self.release.wait(WAIT_S)
        if self.fail_on in texts:
            raise RuntimeError(f"cannot decode {self.fail_on!r}")
        return [f"{self.name}:{text.upper()}" for text in texts]


@dataclass
class Served:
    """The slot the batcher reads the model from."""

    model: HeldModel


def start_batcher(
    served: Served, limits: BatchLimits, records: list[BatchRecord]
) -> RequestBatcher[HeldModel]:
    return RequestBatcher(
        lambda: served.model,
        lambda model, texts, beam: model.predict(texts, beam),
        limits,
        on_batch=records.append,
    ).start()


@pytest.fixture
def served() -> Iterator[Served]:
    holder = Served(HeldModel())
    yield holder
    holder.model.release.set()


def answer(request: PendingRequest) -> tuple[str, list[str]]:
    model, outputs = request.done.result(WAIT_S)
    return model.name, outputs


def hold_first(batcher: RequestBatcher[HeldModel], served: Served) -> PendingRequest:
    """Submit one request and wait until the worker is inside the model with it."""
    first = batcher.submit(["first"], 1, 1)
    assert served.model.entered.wait(WAIT_S)
    return first


LIMITS = BatchLimits(max_rows=4, max_work=10, window_s=0.0)


def test_requests_queued_while_the_model_works_share_the_next_batch(served: Served) -> None:
    records: list[BatchRecord] = []
    batcher = start_batcher(served, LIMITS, records)
    first = hold_first(batcher, served)
    second = batcher.submit(["a", "b"], 1, 2)
    third = batcher.submit(["c"], 1, 1)
    served.model.release.set()
    assert answer(first) == ("v1", ["v1:FIRST"])
    assert answer(second) == ("v1", ["v1:A", "v1:B"])
    assert answer(third) == ("v1", ["v1:C"])
    batcher.stop()
    assert served.model.calls == [("v1", ["first"], 1), ("v1", ["a", "b", "c"], 1)]
    assert [(r.requests, r.rows) for r in records] == [(1, 1), (2, 3)]


@pytest.mark.parametrize(
    ("waiting", "batches"),
    [
        # another beam size: a batch decodes at one beam
        ([(["a"], 1, 1), (["b"], 2, 2), (["c"], 1, 1)], [["a", "c"], ["b"]]),
        # rows: 3 + 2 > max_rows 4
        (
            [(["a", "b", "c"], 1, 3), (["d", "e"], 1, 2), (["f"], 1, 1)],
            [["a", "b", "c", "f"], ["d", "e"]],
        ),
        # work: 6 + 5 > max_work 10
        ([(["a"], 1, 6), (["b"], 1, 5), (["c"], 1, 4)], [["a", "c"], ["b"]]),
    ],
    ids=["beam", "rows", "work"],
)
def test_a_batch_holds_one_beam_and_no_more_than_one_request_may(
    served: Served, waiting: list[tuple[list[str], int, int]], batches: list[list[str]]
) -> None:
    batcher = start_batcher(served, LIMITS, [])
    first = hold_first(batcher, served)
    requests = [batcher.submit(*request) for request in waiting]
    served.model.release.set()
    for request, (texts, _, _) in zip(requests, waiting, strict=True):
        assert answer(request) == ("v1", [f"v1:{text.upper()}" for text in texts])
    answer(first)
    batcher.stop()
    assert [texts for _, texts, _ in served.model.calls[1:]] == batches


def test_batching_off_decodes_each_request_alone(served: Served) -> None:
    batcher = start_batcher(served, BatchLimits(4, 10, window_s=0.0, max_requests=1), [])
    hold_first(batcher, served)
    waiting = [batcher.submit([text], 1, 1) for text in "abc"]
    served.model.release.set()
    assert [answer(request)[1] for request in waiting] == [["v1:A"], ["v1:B"], ["v1:C"]]
    batcher.stop()
    assert [texts for _, texts, _ in served.model.calls] == [["first"], ["a"], ["b"], ["c"]]


def test_a_switch_of_model_lands_between_batches(served: Served) -> None:
    """Requests in a batch that started on v1 are answered by v1, the next batch by v2."""
    batcher = start_batcher(served, LIMITS, [])
    first = hold_first(batcher, served)
    queued = batcher.submit(["queued"], 1, 1)
    served.model, old = HeldModel("v2"), served.model
    served.model.release.set()
    old.release.set()
    assert answer(first) == ("v1", ["v1:FIRST"])
    assert answer(queued) == ("v2", ["v2:QUEUED"])
    batcher.stop()


def test_a_model_error_fails_its_batch_only(served: Served) -> None:
    served.model.fail_on = "bad"
    batcher = start_batcher(served, LIMITS, [])
    first = hold_first(batcher, served)
    bad, neighbour = batcher.submit(["bad"], 1, 1), batcher.submit(["ok"], 1, 1)
    other_beam = batcher.submit(["later"], 3, 3)
    served.model.release.set()
    assert answer(first) == ("v1", ["v1:FIRST"])
    for request in (bad, neighbour):
        with pytest.raises(RuntimeError, match="cannot decode 'bad'"):
            request.done.result(WAIT_S)
    assert answer(other_beam) == ("v1", ["v1:LATER"])
    batcher.stop()


def test_after_a_shared_batch_the_next_one_waits_the_window_for_more(served: Served) -> None:
    """A lone request starts at once; once requests came together, the next batch waits up to
    window_s for more: a request sent well inside the window joins it."""
    batcher = start_batcher(served, BatchLimits(4, 10, window_s=5.0), [])
    first = hold_first(batcher, served)
    together = [batcher.submit([text], 1, 1) for text in "ab"]
    served.model.release.set()
    for request in (first, *together):
        answer(request)
    late: list[PendingRequest] = []
    early = batcher.submit(["early"], 1, 1)
    threading.Timer(0.2, lambda: late.append(batcher.submit(["late"], 1, 1))).start()
    assert answer(early) == ("v1", ["v1:EARLY"])
    assert answer(late[0]) == ("v1", ["v1:LATE"])
    batcher.stop()
    assert [texts for _, texts, _ in served.model.calls] == [
        ["first"], ["a", "b"], ["early", "late"],
    ]  # fmt: skip


def test_stop_answers_what_is_queued_first(served: Served) -> None:
    batcher = start_batcher(served, LIMITS, [])
    first = hold_first(batcher, served)
    queued = batcher.submit(["queued"], 2, 2)
    stopping = threading.Thread(target=batcher.stop)
    stopping.start()
    served.model.release.set()
    stopping.join(WAIT_S)
    assert answer(first) == ("v1", ["v1:FIRST"])
    assert answer(queued) == ("v1", ["v1:QUEUED"])
