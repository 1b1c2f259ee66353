"""Quorum queues in the topology: arguments, one queue per priority class, routing keys;
and the gate that keeps priority order across a route's class queues."""

from __future__ import annotations

import asyncio

import pytest

from fleetwire.messaging.amqp import amqp_urls, safe_url
from fleetwire.messaging.topology import CLASS_WORDS, QueueType, Topology, class_word
from scheduler.priority_gate import PriorityGate

CLASSIC = Topology("ns")
QUORUM = Topology("ns", queue_type=QueueType.QUORUM, delivery_limit=7, max_length=100)


def test_classic_routes_keep_one_priority_queue() -> None:
    assert CLASSIC.route_queues("mainnet.m") == ["ns.jobs.mainnet.m"]
    assert CLASSIC.publish_key("mainnet.m", 9) == "mainnet.m"
    assert CLASSIC.route_arguments()["x-max-priority"] == 10
    assert "x-queue-type" not in CLASSIC.route_arguments()


def test_quorum_routes_have_a_queue_per_class_highest_first() -> None:
    assert QUORUM.route_queues("mainnet.m") == [
        "ns.jobs.mainnet.m._urgent",
        "ns.jobs.mainnet.m._normal",
        "ns.jobs.mainnet.m._bulk",
        "ns.jobs.mainnet.m._test",
    ]
    assert [QUORUM.publish_key("mainnet.m", p) for p in (9, 5, 1, 0)] == [
        "mainnet.m._urgent",
        "mainnet.m._normal",
        "mainnet.m._bulk",
        "mainnet.m._test",
    ]
    # A subcloud's route: the class word comes last, never taken for the subcloud.
    assert QUORUM.publish_key("mainnet.m.lab", 5) == "mainnet.m.lab._normal"
    assert QUORUM.route_of_key("mainnet.m.lab._normal") == "mainnet.m.lab"
    assert QUORUM.route_of_key("mainnet.m.lab") == "mainnet.m.lab"


@pytest.mark.parametrize(("priority", "word"), [(10, "_urgent"), (6, "_normal"), (2, "_bulk")])
def test_a_priority_between_classes_goes_to_the_class_below(priority: int, word: str) -> None:
    assert class_word(priority) == word
    assert [w for w, _ in CLASS_WORDS] == ["_urgent", "_normal", "_bulk", "_test"]


def test_quorum_route_arguments() -> None:
    arguments = QUORUM.route_arguments()
    assert arguments["x-queue-type"] == "quorum"
    assert "x-max-priority" not in arguments  # refused by 3.10 quorum queues
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    assert arguments["x-overflow"] == "reject-publish"  # what at-least-once requires
    assert arguments["x-delivery-limit"] == 7
    assert arguments["x-max-length"] == 100
    assert arguments["x-dead-letter-exchange"] == "ns.dlx"
    assert arguments["x-expires"] > 0


def test_amqp_urls_split_a_list_and_hide_credentials() -> None:
    urls = amqp_urls(" amqp://u:p@a:5681/, amqp://u:p@b:5682/ ,")
    assert urls == ["amqp://u:p@a:5681/", "amqp://u:p@b:5682/"]
    assert safe_url(urls[0]) == "amqp://a:5681"
    with pytest.raises(ValueError, match="no AMQP URL"):
        amqp_urls(" , ")


async def test_the_gate_admits_the_highest_priority_waiter_first() -> None:
    gate = PriorityGate(1)
    order: list[str] = []
    release = asyncio.Event()

    async def holder(name: str, priority: int) -> None:
        async with gate.admitted(priority):
            order.append(name)
            if name == "first":
                await release.wait()

    first = asyncio.create_task(holder("first", 1))
    await asyncio.sleep(0)
    waiters = [
        asyncio.create_task(holder(name, priority))
        for name, priority in (("bulk-a", 1), ("bulk-b", 1), ("urgent", 9), ("normal", 5))
    ]
    await asyncio.sleep(0)
    assert gate.waiting == 4
    release.set()
    await asyncio.gather(first, *waiters)
    assert order == ["first", "urgent", "normal", "bulk-a", "bulk-b"]


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    gate = PriorityGate(1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with gate.admitted(0):
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await held.wait()
    cancelled = asyncio.create_task(gate.admitted(9).__aenter__())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    release.set()
    await holder
    async with asyncio.timeout(1), gate.admitted(0):
        pass  # not blocked by the cancelled waiter
