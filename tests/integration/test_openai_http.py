"""The bridge's OpenAI-compatible HTTP API (issue 18), called with the official ``openai``
package against the in-process bridge and scheduler and a scripted node: completions (chat
and plain), a streamed chat completion whose tokens arrive before the job ends, the models
the mesh serves, admission and authentication errors as the SDK's typed exceptions,
idempotency by ``Idempotency-Key``, and the signature verified offline from what HTTP
returned."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import openai
import pytest
from google.protobuf import json_format

from broker_bridge.server import BridgeServer
from fleetwire.process.settings import Settings, TlsSettings
from fleetwire.protocol.facts import verify_job
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_pb2
from scheduler.server import SchedulerServer
from tests.integration.bridge_kit import running_bridge, with_bridge
from tests.support.eventually import eventually
from tests.support.scripted_node import ScriptedNode, running
from tests.support.tls import make_certificates

README = Path(__file__).resolve().parents[2] / "README.md"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello"}
]


def base_url(bridge: BridgeServer) -> str:
    return f"http://127.0.0.1:{bridge.http_port}/v1"


async def new_key(
    pool: asyncpg.Pool, *, rate: float | None = None, burst: int | None = None
) -> str:
    tenants = TenantStore(pool)
    tenant = f"oai-{uuid.uuid4().hex[:8]}"
    key = (await tenants.create_key(tenant)).secret
    if rate is not None:
        await tenants.set_limits(tenant, rate_per_second=rate, burst=burst)
    return key


@pytest.fixture
async def key(pool: asyncpg.Pool) -> str:
    return await new_key(pool)


@pytest.fixture
async def client(bridge: BridgeServer, key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=base_url(bridge), api_key=key, max_retries=0) as c:
        yield c


@pytest.fixture
async def node(scheduler: SchedulerServer) -> AsyncIterator[ScriptedNode]:
    scripted = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"oai-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "ok",
        stream=lambda d: ["scripted ", "output ", str(d.attempt)],
    )
    async with running(scripted):
        yield scripted


def job_of(extra: dict[str, object] | None) -> job_pb2.Job:
    """The finished job an answer's ``fleetwire`` field carries."""
    assert extra is not None
    fleetwire = extra["fleetwire"]
    assert isinstance(fleetwire, dict)
    return json_format.ParseDict(fleetwire["job"], job_pb2.Job())


async def test_a_chat_completion_is_signed_and_verifies_offline(
    client: openai.AsyncOpenAI, node: ScriptedNode
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="scripted", messages=MESSAGES, max_tokens=3, temperature=0, seed=7
    )
    reply = raw.parse()
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content == "scripted output 1"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3
    job = job_of(reply.model_extra)
    assert reply.id == f"chatcmpl-{job.job_id}"
    assert raw.headers["x-fleetwire-job-id"] == job.job_id
    assert raw.headers["x-fleetwire-key-id"] == job.signature.key_id != ""
    signature = base64.b64decode(raw.headers["x-fleetwire-signature"])
    assert signature == job.signature.signature
    # The sampling parameters arrived as fleetwire's own.
    assert job.spec.sampling.max_tokens == 3
    assert job.spec.sampling.seed == 7
    assert list(node.dispatches[-1].spec.messages) == [
        job_pb2.ChatMessage(role="user", content="hello")
    ]
    # Offline: the node's key pinned, nothing asked of the mesh.
    assert verify_job(job, bytes(node.key.verify_key))
    tampered = job_pb2.Job()
    tampered.CopyFrom(job)
    tampered.output += "!"
    assert not verify_job(tampered, bytes(node.key.verify_key))


async def test_a_completion(client: openai.AsyncOpenAI, node: ScriptedNode) -> None:
    reply = await client.completions.create(
        model="scripted", prompt="Once upon", max_tokens=3, stop=["\n"]
    )
    assert reply.object == "text_completion"
    assert reply.choices[0].text == "scripted output 1"
    job = job_of(reply.model_extra)
    assert job.spec.prompt == "Once upon"
    assert list(job.spec.sampling.stop) == ["\n"]
    assert verify_job(job, bytes(node.key.verify_key))


async def test_a_streamed_chat_completion_sends_tokens_before_the_end(
    client: openai.AsyncOpenAI, node: ScriptedNode
) -> None:
    node.hold_results = True  # the job stays running until the test lets the result go
    stream = await client.chat.completions.create(
        model="scripted",
        messages=MESSAGES,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: list[str] = []
    chunks = []
    async with stream:
        async for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
            if "".join(texts) == "scripted output 1" and node.held:
                # Every token arrived while the job is still running: now let it finish.
                assert not chunk.choices[0].finish_reason
                await node.send(node.held.pop())
    assert "".join(texts) == "scripted output 1"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    usage = chunks[-1]
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.total_tokens == 6
    job = job_of(usage.model_extra)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert verify_job(job, bytes(node.key.verify_key))


async def test_models_are_those_a_node_serves_now(
    client: openai.AsyncOpenAI, node: ScriptedNode
) -> None:
    async def listed() -> list[str] | None:
        names = [model.id async for model in client.models.list()]
        return names if "scripted" in names else None

    names = await eventually(listed, within=10, what="the scripted model listed")
    assert "tiny-llama" not in names  # in the registry, but no node serves it here


async def test_a_bad_key_is_an_authentication_error(bridge: BridgeServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=base_url(bridge), api_key="fwk_not-a-key", max_retries=0
    ) as bad:
        with pytest.raises(openai.AuthenticationError) as caught:
            await bad.chat.completions.create(model="scripted", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert caught.value.code == "api_key_invalid"


async def test_admission_refusal_is_a_rate_limit_error_with_retry_after(
    bridge: BridgeServer, pool: asyncpg.Pool, node: ScriptedNode
) -> None:
    key = await new_key(pool, rate=0.2, burst=1)
    async with openai.AsyncOpenAI(base_url=base_url(bridge), api_key=key, max_retries=0) as c:
        await c.completions.create(model="scripted", prompt="one", max_tokens=3)
        with pytest.raises(openai.RateLimitError) as caught:
            await c.completions.create(model="scripted", prompt="two", max_tokens=3)
    error = caught.value
    assert error.status_code == 429
    assert error.code == "tenant_rate_limited"
    assert 1 <= int(error.response.headers["retry-after"]) <= 5


async def test_bad_requests_are_400_naming_the_field_and_unknown_models_404(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="scripted", messages=MESSAGES, n=2)
    assert caught.value.param == "n"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="scripted", messages=MESSAGES, logprobs=True)
    assert caught.value.param == "logprobs"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert missing.value.code == "model_not_found"


async def test_one_idempotency_key_twice_is_one_job(
    client: openai.AsyncOpenAI, node: ScriptedNode
) -> None:
    headers = {"Idempotency-Key": f"oai-{uuid.uuid4().hex}"}
    before = len(node.dispatches)
    first, second = [
        await client.chat.completions.create(
            model="scripted", messages=MESSAGES, max_tokens=3, extra_headers=headers
        )
        for _ in range(2)
    ]
    assert first.id == second.id
    assert len(node.dispatches) == before + 1
    # The same key for another request is a conflict, as over gRPC.
    with pytest.raises(openai.ConflictError) as caught:
        await client.chat.completions.create(
            model="scripted", messages=MESSAGES, max_tokens=2, extra_headers=headers
        )
    assert caught.value.code == "idempotency_key_reused"


async def test_fleetwire_fields_travel_as_extra_body(
    client: openai.AsyncOpenAI, node: ScriptedNode
) -> None:
    reply = await client.chat.completions.create(
        model="scripted",
        messages=MESSAGES,
        max_tokens=3,
        extra_body={"priority": "bulk", "ttl": 90, "network": "mainnet", "labels": {"a": "b"}},
    )
    spec = job_of(reply.model_extra).spec
    assert spec.priority == job_pb2.PRIORITY_CLASS_BULK
    assert spec.ttl.seconds == 90
    assert dict(spec.labels) == {"a": "b"}


async def test_a_failed_job_is_an_error_naming_it(
    client: openai.AsyncOpenAI, scheduler: SchedulerServer
) -> None:
    failing = ScriptedNode(
        f"127.0.0.1:{scheduler.port}",
        f"oai-f-{uuid.uuid4().hex[:6]}",
        "scripted",
        lambda _n: "fail-final",
    )
    async with running(failing):
        with pytest.raises(openai.APIStatusError) as caught:
            await client.completions.create(model="scripted", prompt="p", max_tokens=3)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-fleetwire-job-id"]


async def test_a_job_no_node_takes_is_a_504_soon_after_its_ttl(
    client: openai.AsyncOpenAI, node: ScriptedNode
) -> None:
    began = asyncio.get_running_loop().time()
    with pytest.raises(openai.APIStatusError) as caught:
        await client.completions.create(
            model="scripted",
            prompt="p",
            max_tokens=3,
            extra_body={"ttl": 1, "network": "testnet"},  # no node serves testnet here
        )
    waited = asyncio.get_running_loop().time() - began
    assert caught.value.status_code == 504
    assert caught.value.response.headers["x-fleetwire-job-id"]
    # The TTL and the answer's grace, not the deadline reaper's 30 s grace.
    assert waited < 10, waited


async def test_the_readme_example_runs(
    bridge: BridgeServer,
    key: str,
    node: ScriptedNode,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = re.search(r"<!-- openai-example .*?-->\n```python\n(.*?)```", README.read_text(), re.S)
    assert found is not None, "README has no OpenAI example"
    code = found.group(1)
    assert "https://localhost:8080/v1" in code
    assert '"tiny-llama"' in code
    code = code.replace("https://localhost:8080/v1", base_url(bridge))
    code = code.replace('"tiny-llama"', '"scripted"')
    monkeypatch.setenv("FLEETWIRE_API_KEY", key)
    await asyncio.to_thread(exec, compile(code, "README.md", "exec"), {})
    printed = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("scripted output")
    ]  # the processes' logs go to stdout too
    assert len(printed) == 1
    assert printed[0].startswith("scripted output 1 ")
    assert uuid.UUID(printed[0].split()[-1])


async def test_with_a_certificate_the_port_serves_https_only(
    settings: Settings, key: str, node: ScriptedNode, tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path / "certs")
    tls = TlsSettings(cert_file=certs.server.cert, key_file=certs.server.key, insecure=False)
    secured = with_bridge(settings.model_copy(update={"tls": tls}))
    async with running_bridge(secured) as server:
        port = server.http_port
        trusted = openai.DefaultAsyncHttpxClient(
            verify=ssl.create_default_context(cafile=str(certs.ca))
        )
        async with openai.AsyncOpenAI(
            base_url=f"https://localhost:{port}/v1",
            api_key=key,
            max_retries=0,
            http_client=trusted,
        ) as https:
            reply = await https.completions.create(model="scripted", prompt="p", max_tokens=3)
            assert reply.choices[0].text == "scripted output 1"
        async with openai.AsyncOpenAI(
            base_url=f"http://localhost:{port}/v1", api_key=key, max_retries=0
        ) as plain:
            with pytest.raises(openai.APIConnectionError):
                await plain.models.list()
