"""node.progress.ProgressBatcher: how a job's generated tokens become Progress messages."""

from __future__ import annotations

import asyncio
import time

import pytest

from fleetwire.v1 import node_service_pb2 as nodes_pb2
from node.progress import ProgressBatcher
from tests.support.eventually import eventually


class Recorder:
    """A ``send`` that keeps what it was given, with the time it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sent: list[tuple[float, nodes_pb2.Progress]] = []
        self.delay = delay

    async def __call__(self, message: nodes_pb2.NodeStreamRequest) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.sent.append((time.monotonic(), message.progress))

    @property
    def progress(self) -> list[nodes_pb2.Progress]:
        return [p for _, p in self.sent]


def batcher(send: Recorder, window: float, max_tokens: int = 1000) -> ProgressBatcher:
    return ProgressBatcher("job-1", 2, send, window=window, max_tokens=max_tokens)


async def test_without_a_window_every_chunk_is_its_own_progress() -> None:
    send = Recorder()
    progress = batcher(send, window=0)
    for text in ("a", "b", "", "c"):
        await progress.add(text, 1)
    await progress.close()
    assert [(p.sequence, p.text, p.token_count) for p in send.progress] == [
        (1, "a", 1),
        (2, "b", 1),
        (3, "", 1),  # a token the detokenizer holds back still counts
        (4, "c", 1),
    ]
    assert {(p.job_id, p.attempt) for p in send.progress} == {("job-1", 2)}


async def test_chunks_are_coalesced_and_the_text_is_exact() -> None:
    send = Recorder()
    progress = batcher(send, window=0.05)
    texts = [f"t{i} " for i in range(40)]
    for text in texts:
        await progress.add(text, 1)
        await asyncio.sleep(0.002)  # tokens come over time, as an engine makes them
    await progress.close()
    sent = send.progress
    assert sent[0].text == "t0 "  # the first token goes at once
    assert 2 <= len(sent) < 20
    assert [p.sequence for p in sent] == list(range(1, len(sent) + 1))
    assert "".join(p.text for p in sent) == "".join(texts)
    assert sum(p.token_count for p in sent) == 40
    assert progress.sequence == len(sent)


async def test_waiting_tokens_go_out_after_the_window_without_more_tokens() -> None:
    send = Recorder()
    progress = batcher(send, window=0.03)
    await progress.add("first", 1)
    added = time.monotonic()
    await progress.add("second", 1)
    await asyncio.sleep(0.2)  # the engine stalls: nothing more comes
    assert [p.text for p in send.progress] == ["first", "second"]
    waited = send.sent[1][0] - added
    assert 0.02 <= waited < 0.15
    await progress.close()
    assert len(send.progress) == 2


async def test_enough_tokens_go_out_before_the_window() -> None:
    send = Recorder()
    progress = batcher(send, window=10.0, max_tokens=4)
    await progress.add("x", 1)
    for _ in range(4):
        await progress.add("y", 1)
    # Well before the 10 s window: only the token count can have sent them.
    await eventually(lambda: len(send.progress) == 2, within=5, what="the second Progress")
    assert [(p.text, p.token_count) for p in send.progress] == [("x", 1), ("yyyy", 4)]
    await progress.close()


async def test_close_sends_every_chunk_before_returning() -> None:
    send = Recorder(delay=0.01)  # a slow stream: chunks pile up behind each write
    progress = batcher(send, window=0.02)
    for i in range(30):
        await progress.add(str(i % 10), 1)
    await progress.close()
    assert "".join(p.text for p in send.progress) == "".join(str(i % 10) for i in range(30))
    await progress.close()  # idempotent
    await progress.stop()


async def test_stop_discards_what_waits_and_leaves_no_task() -> None:
    send = Recorder()
    progress = batcher(send, window=10.0)
    await progress.add("a", 1)
    await progress.add("b", 1)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "progress-job-1"]
    await progress.stop()
    assert [p.text for p in send.progress] == ["a"]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "progress-job-1"]
    with pytest.raises(RuntimeError):
        await progress.add("c", 1)


async def test_a_broken_stream_drops_progress_without_failing_the_job() -> None:
    calls = 0

    async def broken(message: nodes_pb2.NodeStreamRequest) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("stream closed")

    progress = ProgressBatcher("job-1", 1, broken, window=0.01, max_tokens=8)
    for _ in range(20):
        await progress.add("z", 1)
        await asyncio.sleep(0.002)  # tokens come over time, as an engine makes them
    await progress.close()
    assert calls == 1
