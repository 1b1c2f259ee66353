"""The bridge's asynchronous jobs API over HTTP (issue 18): ``/v1/jobs`` and ``/v1/batches``
against the in-process bridge and scheduler on this run's RabbitMQ, Redis and PostgreSQL,
with scripted nodes in subclouds of their own (so no other test's node takes a job):
202 + Location only once the broker holds the job, polling to a terminal state with the
signature verified offline, idempotency, authentication and tenant isolation, bad fields
named, admission refusals with Retry-After, a backing service down, cancel, events that
resume after a disconnect without a repeat or a gap (across a retry, too), batches, and
X-Request-Id on every answer and log line."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import asyncpg
import httpx
import pytest
import structlog
from google.protobuf import json_format
from pydantic import SecretStr
from structlog.testing import capture_logs

from broker_bridge.server import BridgeServer
from fleetwire.messaging.topology import Topology
from fleetwire.process.settings import Settings
from fleetwire.protocol import signing
from fleetwire.protocol.facts import verify_job
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2, job_service_pb2
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import bearer, running_bridge, stub_of, with_bridge
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running
from tests.support.sse import Event, events_of

STREAM = ["one ", "two ", "three ", "four ", "five"]


async def new_tenant(pool: asyncpg.Pool, *, rate: float | None = None) -> tuple[str, str]:
    """A new tenant and its API key."""
    tenants = TenantStore(pool)
    tenant = f"gw-{uuid.uuid4().hex[:8]}"
    key = (await tenants.create_key(tenant)).secret
    if rate is not None:
        await tenants.set_limits(tenant, rate_per_second=rate, burst=1)
    return tenant, key


async def new_key(pool: asyncpg.Pool, *, rate: float | None = None) -> str:
    return (await new_tenant(pool, rate=rate))[1]


def http_client(bridge: BridgeServer, key: str | None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{bridge.http_port}", headers=headers, timeout=30
    )


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    return await new_key(pool)


@pytest.fixture
async def client(bridge: BridgeServer, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(bridge, key) as c:
        yield c


@pytest.fixture
def subcloud() -> str:
    return f"gw-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def node(scheduler: SchedulerServer, subcloud: str) -> AsyncIterator[ScriptedNode]:
    scripted = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"gw-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "ok",
        subclouds=[subcloud],
        stream=lambda _d: STREAM,
    )
    async with running(scripted):
        yield scripted


def body(subcloud: str, prompt: str = "hello", **fields: Any) -> dict[str, Any]:
    return {
        "model": "scripted",
        "prompt": prompt,
        "sampling": {"max_tokens": 5, "temperature": 0},
        "subcloud": subcloud,
        **fields,
    }


async def finished(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    """Polls ``location`` until the job is done; the last view."""

    async def done() -> dict[str, Any] | None:
        view: dict[str, Any] = (await client.get(location)).json()
        return view if view["done"] else None

    return await eventually(done, within=20, what=f"{location} done")


async def test_202_and_location_only_once_the_broker_holds_the_job(
    client: httpx.AsyncClient, settings: Settings, pool: asyncpg.Pool, subcloud: str
) -> None:
    # No node serves this subcloud: the job waits in a queue of its own.
    answer = await client.post("/v1/jobs", json=body(subcloud, model="tiny-llama"))
    assert answer.status_code == 202, answer.text
    view = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{view['id']}" == view["links"]["self"]
    assert view["state"] == "QUEUED"
    assert view["done"] is False
    # At the moment of the answer the message was in RabbitMQ (confirmed) and the row says so.
    route = Topology(settings.mesh.namespace).route_key("mainnet", "tiny-llama", subcloud)
    connection = await aiormq.connect(settings.rabbitmq.url.get_secret_value())
    try:
        channel = await connection.channel()
        queue = Topology(settings.mesh.namespace).route_queue(route)
        declared = await channel.queue_declare(queue, passive=True)
        assert declared.message_count == 1
    finally:
        await connection.close()
    row = await pool.fetchrow(
        "SELECT state, publish_due_at FROM jobs WHERE job_id = $1", uuid.UUID(view["id"])
    )
    assert row is not None
    assert row["state"] == "QUEUED"
    assert row["publish_due_at"] is None
    await client.delete(answer.headers["location"])


async def test_polling_to_success_with_a_signature_that_verifies_offline(
    client: httpx.AsyncClient, node: ScriptedNode, subcloud: str
) -> None:
    answer = await client.post("/v1/jobs", json=body(subcloud))
    assert answer.status_code == 202
    view = await finished(client, answer.headers["location"])
    assert view["state"] == "SUCCEEDED"
    assert view["output"] == "scripted output 1"
    assert view["finish_reason"] == "length"
    assert view["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert view["attempts"] == 1
    assert view["error"] is None
    signature = view["signature"]
    assert signature["node_id"] == node.node_id
    assert signature["key_id"] == signing.key_id(bytes(node.key.verify_key))
    # Offline, two ways: the job rebuilt from its protobuf JSON, and the signed bytes.
    job = json_format.ParseDict(view["job"], job_pb2.Job())
    assert verify_job(job, bytes(node.key.verify_key))
    assert signing.verify(
        bytes(node.key.verify_key),
        base64.b64decode(signature["signed_bytes"]),
        base64.b64decode(signature["signature"]),
    )
    assert job.spec.mode == job_pb2.INFERENCE_MODE_POLLING
    assert job.spec.constraints.subcloud == subcloud


async def test_one_idempotency_key_twice_is_one_job_and_another_body_409(
    client: httpx.AsyncClient, node: ScriptedNode, subcloud: str
) -> None:
    headers = {"idempotency-key": f"gw-{uuid.uuid4().hex}"}
    first = await client.post("/v1/jobs", json=body(subcloud), headers=headers)
    await finished(client, first.headers["location"])
    second = await client.post("/v1/jobs", json=body(subcloud), headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.headers["location"] == first.headers["location"]
    assert second.json()["state"] == "SUCCEEDED"  # the original job, as it is now
    assert len(node.dispatches) == 1
    other = await client.post("/v1/jobs", json=body(subcloud, "other"), headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"


async def test_a_bad_key_is_401(bridge: BridgeServer) -> None:
    async with http_client(bridge, "fwk_not-a-key") as bad:
        answer = await bad.post("/v1/jobs", json=body("x"))
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "api_key_invalid"
        assert (await bad.get(f"/v1/jobs/{uuid.uuid4()}")).status_code == 401


async def test_another_tenants_job_is_404(
    bridge: BridgeServer, client: httpx.AsyncClient, pool: asyncpg.Pool, subcloud: str
) -> None:
    location = (await client.post("/v1/jobs", json=body(subcloud))).headers["location"]
    async with http_client(bridge, await new_key(pool)) as other:
        for method, path in (
            ("GET", location),
            ("DELETE", location),
            ("GET", f"{location}/events"),
            ("GET", f"/v1/jobs/{uuid.uuid4()}"),
        ):
            answer = await other.request(method, path)
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
        malformed = await other.get("/v1/jobs/not-an-id")
        assert malformed.status_code == 400
        assert malformed.json()["error"]["param"] == "job_id"
    assert (await client.get(location)).json()["state"] != "CANCELLED"
    await client.delete(location)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"sampling": {"max_tokens": 5, "temperature": "hot"}}, "sampling.temperature"),
        ({"sampling": {"max_tokens": 5, "top_k": 3}}, "sampling.top_k"),
        ({"priority": "asap"}, "priority"),
        ({"tools": []}, "tools"),
        ({"mode": "SYNC"}, "mode"),
        # Checked by the bridge's one validation (JobDesk.submit), named as the body spells it.
        ({"sampling": {"max_tokens": 10**6}}, "sampling.max_tokens"),
        ({"subcloud": "Not A Subcloud"}, "constraints.subcloud"),
    ],
)
async def test_a_bad_field_is_400_naming_it(
    client: httpx.AsyncClient, fields: dict[str, Any], param: str
) -> None:
    answer = await client.post("/v1/jobs", json={**body("x"), **fields})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]


async def test_not_json_and_a_bad_batch_job_are_400(client: httpx.AsyncClient) -> None:
    answer = await client.post("/v1/jobs", content=b"{not json")
    assert (answer.status_code, answer.json()["error"]["param"]) == (400, "body")
    surrogate = b'{"model": "scripted", "prompt": "\\ud800"}'  # JSON, but not Unicode text
    for path in ("/v1/jobs", "/v1/completions"):
        answer = await client.post(path, content=surrogate)
        assert (answer.status_code, answer.json()["error"]["param"]) == (400, "body"), path
    batch = {"jobs": [body("x"), body("x", priority="asap")]}
    answer = await client.post("/v1/batches", json=batch)
    assert (answer.status_code, answer.json()["error"]["param"]) == (400, "jobs[1].priority")


async def test_admission_refusal_is_429_with_retry_after(
    bridge: BridgeServer, pool: asyncpg.Pool, subcloud: str
) -> None:
    async with http_client(bridge, await new_key(pool, rate=0.2)) as limited:
        first = await limited.post("/v1/jobs", json=body(subcloud))
        assert first.status_code == 202
        refused = await limited.post("/v1/jobs", json=body(subcloud))
        await limited.delete(first.headers["location"])
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tenant_rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert "location" not in refused.headers


async def test_rabbitmq_down_is_503_and_no_job(settings: Settings, pool: asyncpg.Pool) -> None:
    tenant, key = await new_tenant(pool)
    dead = settings.rabbitmq.model_copy(
        update={"url": SecretStr("amqp://guest:guest@127.0.0.1:1/")}
    )
    broken = with_bridge(settings).model_copy(update={"rabbitmq": dead})
    async with running_bridge(broken) as server, http_client(server, key) as c:
        answer = await c.post("/v1/jobs", json=body("x"))
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "backend_unavailable"
    assert int(answer.headers["retry-after"]) >= 1
    assert "location" not in answer.headers
    assert await pool.fetchval("SELECT count(*) FROM jobs WHERE tenant_id = $1", tenant) == 0


async def test_delete_cancels_and_a_second_delete_changes_nothing(
    client: httpx.AsyncClient, subcloud: str
) -> None:
    location = (await client.post("/v1/jobs", json=body(subcloud))).headers["location"]
    cancelled = await client.delete(location)
    assert cancelled.status_code == 200
    view = cancelled.json()
    assert view["state"] == "CANCELLED"
    assert view["done"] is True
    assert view["error"]["reason"] == "CANCELLED_BY_CLIENT"
    again = await client.delete(location)  # as gRPC Cancel: a terminal job is answered as it is
    assert again.status_code == 200
    assert again.json()["state"] == "CANCELLED"
    assert again.json()["updated_at"] == view["updated_at"]


async def read_until(
    client: httpx.AsyncClient,
    path: str,
    stop: Any,
    last_event_id: str | None = None,
) -> list[Event]:
    """The events of ``path`` until ``stop(events)`` is true, then the connection is cut
    (the client goes away mid-stream); or until the stream ends."""
    headers = {"last-event-id": last_event_id} if last_event_id is not None else {}
    seen: list[Event] = []
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in events_of(response):
            seen.append(event)
            if stop(seen):
                break
    return seen


def chunks(events: list[Event]) -> list[tuple[int, int, str]]:
    return [
        (e.data["attempt"], e.data["sequence"], e.data["text"])
        for e in events
        if e.event == "chunk"
    ]


async def test_events_resume_after_a_disconnect_without_repeat_or_gap(
    client: httpx.AsyncClient, node: ScriptedNode, subcloud: str
) -> None:
    node.hold_results = True  # the job stays RUNNING until the test sends its result
    location = (await client.post("/v1/jobs", json=body(subcloud))).headers["location"]
    events_path = f"{location}/events"
    first = await read_until(client, events_path, lambda seen: len(chunks(seen)) == 2)
    assert first[0].event == "state"
    assert first[0].id == "0.0"
    assert chunks(first) == [(1, 1, "one "), (1, 2, "two ")]
    assert [e.id for e in first if e.event == "chunk"] == ["1.1", "1.2"]
    await eventually(lambda: node.held, within=10, what="the result held")

    resumed: list[Event] = []
    async with client.stream("GET", events_path, headers={"last-event-id": "1.2"}) as response:
        async for event in events_of(response):
            resumed.append(event)
            if len(chunks(resumed)) == 3 and node.held:
                await node.send(node.held.pop())  # now let the job finish
    assert resumed[0].event == "state"
    assert resumed[0].data["state"] == "RUNNING"
    assert resumed[0].id == "1.2"  # a state event carries the cursor it was sent at
    assert chunks(resumed) == [(1, 3, "three "), (1, 4, "four "), (1, 5, "five")]
    assert [e.event for e in resumed[-2:]] == ["state", "done"]
    assert resumed[-2].data["state"] == "SUCCEEDED"
    assert resumed[-1].data == {"id": location.rsplit("/", 1)[1], "state": "SUCCEEDED"}
    assert resumed[-1].id == "1.5"
    assert "".join(t for *_, t in chunks(first) + chunks(resumed)) == "".join(STREAM)
    # A late follower of the finished job gets the final attempt's chunks, the state, done.
    late = await read_until(client, events_path, lambda _seen: False)
    assert [e.event for e in late] == ["chunk"] * 5 + ["state", "done"]
    tail = await read_until(client, events_path, lambda _seen: False, last_event_id="1.4")
    assert chunks(tail) == [(1, 5, "five")]


async def test_a_resume_across_a_retry_gets_the_new_attempts_first_chunks(
    client: httpx.AsyncClient, scheduler: SchedulerServer, subcloud: str
) -> None:
    retried = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"gw-r-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda n: "fail-retryable" if n == 1 else "ok",
        subclouds=[subcloud],
        stream=lambda d: [f"a{d.attempt}-1 ", f"a{d.attempt}-2 ", f"a{d.attempt}-3"],
        hold_results=True,
    )
    async with running(retried):
        location = (await client.post("/v1/jobs", json=body(subcloud))).headers["location"]
        path = f"{location}/events"
        first = await read_until(client, path, lambda seen: len(chunks(seen)) == 3)
        assert chunks(first)[-1] == (1, 3, "a1-3")
        await eventually(lambda: retried.held, within=10, what="attempt 1's failure held")
        await retried.send(retried.held.pop())  # attempt 1 fails; the job is retried
        await eventually(
            lambda: len(retried.held) == 1 and len(retried.dispatches) == 2,
            within=20,
            what="attempt 2 streamed and its result held",
        )
        await retried.send(retried.held.pop())
        resumed = await read_until(client, path, lambda _seen: False, last_event_id=first[-1].id)
    # Sequences restart with attempt 2: a sequence-only cursor ("after 3") would skip them.
    assert chunks(resumed) == [(2, 1, "a2-1 "), (2, 2, "a2-2 "), (2, 3, "a2-3")]
    assert resumed[-1].event == "done"
    assert resumed[-1].data["state"] == "SUCCEEDED"
    assert resumed[-2].data["output"] == "scripted output 2"


async def test_a_bad_last_event_id_is_400(client: httpx.AsyncClient, subcloud: str) -> None:
    location = (await client.post("/v1/jobs", json=body(subcloud))).headers["location"]
    answer = await client.get(f"{location}/events", headers={"last-event-id": "seven"})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "Last-Event-ID"
    await client.delete(location)


async def test_a_batch_is_202_and_its_progress_adds_up(
    client: httpx.AsyncClient, node: ScriptedNode, subcloud: str
) -> None:
    jobs = [body(subcloud, f"p{i}") for i in range(3)]
    answer = await client.post("/v1/batches", json={"jobs": jobs})
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    assert answer.headers["location"] == f"/v1/batches/{batch['id']}" == batch["links"]["self"]
    assert batch["total"] == 3
    assert len(batch["job_ids"]) == 3
    assert batch["counts"]["queued"] + batch["counts"]["running"] == 3

    async def done() -> dict[str, Any] | None:
        view: dict[str, Any] = (await client.get(answer.headers["location"])).json()
        return view if view["done"] else None

    final = await eventually(done, within=30, what="the batch done")
    assert final["counts"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 0,
        "expired": 0,
        "cancelled": 0,
    }
    assert final["job_ids"] == batch["job_ids"]
    for path in final["links"]["jobs"]:
        assert (await client.get(path)).json()["state"] == "SUCCEEDED"


async def test_x_request_id_is_echoed_and_on_every_log_line(
    client: httpx.AsyncClient, subcloud: str
) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        answer = await client.post(
            "/v1/jobs", json=body(subcloud), headers={"x-request-id": request_id}
        )
    assert answer.headers["x-request-id"] == request_id
    accepted = [line for line in logs if line["event"] == "job accepted"]
    assert len(accepted) == 1, logs
    assert accepted[0]["request_id"] == request_id
    assert accepted[0]["job_id"] == answer.json()["id"]
    # Made up when not sent (or unusable), on every endpoint: OpenAI's, errors, unknown paths.
    for method, path, sent in (
        ("GET", "/v1/models", None),
        ("GET", f"/v1/jobs/{uuid.uuid4()}", None),
        ("GET", "/v1/no-such-path", None),
        ("GET", "/v1/models", "has spaces in it"),
    ):
        headers = {"x-request-id": sent} if sent else {}
        made = (await client.request(method, path, headers=headers)).headers["x-request-id"]
        assert len(made) == 32, (path, made)
        assert int(made, 16) >= 0
    await client.delete(answer.headers["location"])


async def test_event_streams_share_the_tenants_watch_slots_with_grpc_watch(
    settings: Settings, pool: asyncpg.Pool, subcloud: str
) -> None:
    _, key = await new_tenant(pool)
    one_slot = with_bridge(settings, max_watches_per_tenant=1)
    async with running_bridge(one_slot) as server, http_client(server, key) as c:
        location = (await c.post("/v1/jobs", json=body(subcloud))).headers["location"]
        job_id = location.rsplit("/", 1)[1]
        async with stub_of(server) as stub:
            watch = stub.Watch(job_service_pb2.WatchRequest(job_id=job_id), metadata=bearer(key))
            await watch.read()  # the gRPC Watch holds the tenant's one slot
            refused = await c.get(f"{location}/events")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_watches"
            assert int(refused.headers["retry-after"]) >= 1
            watch.cancel()

        # Freed when the Watch ends, and again when an event stream's client goes away.
        async def first_event() -> Event | None:
            async with c.stream("GET", f"{location}/events") as response:
                if response.status_code == 429:
                    return None
                async for event in events_of(response):
                    return event  # and the client goes away
            return None

        for _ in range(2):
            opened = await eventually(first_event, within=10, what="a free Watch slot")
            assert opened.event == "state"
        await c.delete(location)
