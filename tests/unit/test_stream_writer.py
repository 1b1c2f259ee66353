"""fleetwire.rpc.stream_writer: one write at a time, in order; messages that wait during a
write go out together, as one batch only once batching is on, and never beyond the size
bound."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fleetwire.rpc import stream_writer
from fleetwire.rpc.stream_writer import StreamWriter
from fleetwire.v1 import node_service_pb2 as nodes_pb2


def heartbeat(n: int) -> nodes_pb2.NodeStreamRequest:
    return nodes_pb2.NodeStreamRequest(heartbeat=nodes_pb2.Heartbeat(free_slots=n))


def batch(messages: Sequence[nodes_pb2.NodeStreamRequest]) -> nodes_pb2.NodeStreamRequest:
    return nodes_pb2.NodeStreamRequest(batch=nodes_pb2.NodeStreamRequestBatch(messages=messages))


class SlowStream:
    """Records writes; each takes a moment, during which others queue up."""

    def __init__(self) -> None:
        self.writes: list[nodes_pb2.NodeStreamRequest] = []
        self.in_flight = 0

    async def write(self, message: nodes_pb2.NodeStreamRequest) -> None:
        self.in_flight += 1
        assert self.in_flight == 1, "two writes at once"
        await asyncio.sleep(0.01)
        self.writes.append(message)
        self.in_flight -= 1

    def slots_in_order(self) -> list[int]:
        found: list[int] = []
        for write in self.writes:
            inner = write.batch.messages if write.HasField("batch") else [write]
            found += [m.heartbeat.free_slots for m in inner]
        return found


async def test_waiting_messages_go_out_as_one_batch_in_order() -> None:
    stream = SlowStream()
    writer = StreamWriter(stream.write, name="test")
    writer.batch_with(batch)
    first = asyncio.create_task(writer.send(heartbeat(1)))
    await asyncio.sleep(0.001)  # its write is under way
    await asyncio.gather(first, *(writer.send(heartbeat(n)) for n in range(2, 6)))

    assert stream.slots_in_order() == [1, 2, 3, 4, 5]
    assert not stream.writes[0].HasField("batch")  # the first went at once, alone
    assert len(stream.writes) == 2
    assert len(stream.writes[1].batch.messages) == 4


async def test_without_batching_every_message_is_a_write_of_its_own() -> None:
    stream = SlowStream()
    writer = StreamWriter(stream.write, name="test")
    await asyncio.gather(*(writer.send(heartbeat(n)) for n in range(1, 6)))

    assert stream.slots_in_order() == [1, 2, 3, 4, 5]
    assert not any(write.HasField("batch") for write in stream.writes)


async def test_a_batch_stays_under_the_size_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    one = heartbeat(1).ByteSize()
    monkeypatch.setattr(stream_writer, "MAX_BATCH_BYTES", 2 * one)
    stream = SlowStream()
    writer = StreamWriter(stream.write, name="test")
    writer.batch_with(batch)
    await asyncio.gather(*(writer.send(heartbeat(1)) for _ in range(6)))

    sizes = [len(w.batch.messages) if w.HasField("batch") else 1 for w in stream.writes]
    assert sum(sizes) == 6
    assert max(sizes) == 2


async def test_a_failed_write_fails_the_senders_it_carried() -> None:
    async def broken(message: nodes_pb2.NodeStreamRequest) -> None:
        raise ConnectionError("stream gone")

    writer = StreamWriter(broken, name="test")
    with pytest.raises(ConnectionError):
        await writer.send(heartbeat(1))
