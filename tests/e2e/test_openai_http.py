"""The official ``openai`` package against the live mesh's bridge over HTTPS (the run's CA):
a chat completion and a streamed completion on real vLLM nodes, each signature verified
offline with the node's own key."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import openai
import pytest
from google.protobuf import json_format

from fleetwire.protocol.facts import verify_job
from fleetwire.v1 import job_pb2
from tests.e2e.conftest import LiveMesh
from tests.e2e.test_clients_python import create_api_keys


@pytest.fixture(scope="module")
def client(live_mesh: LiveMesh) -> Iterator[openai.OpenAI]:
    [key] = create_api_keys(live_mesh, ["openai-http"])
    with openai.OpenAI(
        base_url=live_mesh.http_url,
        api_key=key,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(
            verify=ssl.create_default_context(cafile=str(live_mesh.ca_file))
        ),
    ) as c:
        yield c


def verified(live_mesh: LiveMesh, extra: dict[str, object] | None) -> job_pb2.Job:
    assert extra is not None
    fleetwire = extra["fleetwire"]
    assert isinstance(fleetwire, dict)
    job = json_format.ParseDict(fleetwire["job"], job_pb2.Job())
    assert verify_job(job, live_mesh.public_key(job.signature.node_id))
    return job


def test_chat_and_streamed_completions_on_vllm_verify_offline(
    live_mesh: LiveMesh, client: openai.OpenAI
) -> None:
    assert {"tiny-llama"} <= {model.id for model in client.models.list()}
    reply = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
    )
    job = verified(live_mesh, reply.model_extra)
    assert reply.choices[0].message.content == job.output != ""
    assert reply.usage is not None
    assert reply.usage.completion_tokens == job.usage.completion_tokens

    texts: list[str] = []
    final = None
    with client.completions.create(
        model="tiny-llama",
        prompt="Once upon a time",
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            if chunk.choices:
                texts.append(chunk.choices[0].text)
            else:
                final = chunk
    assert final is not None
    assert final.usage is not None
    streamed = verified(live_mesh, final.model_extra)
    assert "".join(texts) == streamed.output
    assert len([t for t in texts if t]) > 1  # the tokens came in pieces
