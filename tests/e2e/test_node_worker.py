"""The node agent as a production vLLM worker, through a real mesh of its own
(``worker_mesh.py``): what the runtime does for jobs — slots, determinism, sampling, chat
templates, context limits, signed usage and timings, capabilities from a config file.
"""

from __future__ import annotations

from fleetwire.domain.keys import load_key
from fleetwire.protocol.facts import verify_job
from fleetwire.v1 import job_pb2
from tests.conftest import MODEL_DIR
from tests.e2e.worker_mesh import (
    CONTEXT,
    NODES,
    SLOTS,
    WorkerMesh,
    client_of,
    long_spec,
)
from tests.support.job_client import make_spec
from tests.support.mesh_admin import listed_nodes

# -- 1. the runtime through the mesh ----------------------------------------------------


def test_slots_follow_the_engines_concurrency(worker_mesh: WorkerMesh) -> None:
    worker_mesh.wait_for_nodes(set(NODES), 60)  # a test before may have restarted one
    listed = listed_nodes(worker_mesh.admin_address, worker_mesh.operator_key, worker_mesh.ca_file)
    assert {node_id: listed[node_id].slots for node_id in NODES} == dict.fromkeys(NODES, SLOTS)


def test_greedy_output_is_identical_alone_and_among_eight_jobs(worker_mesh: WorkerMesh) -> None:
    client = client_of(worker_mesh)
    try:
        alone = client.wait(client.submit(long_spec("The fleet of nodes", 48)).job_id, timeout=120)
        ids = [
            client.submit(long_spec(prompt, 48)).job_id
            for prompt in ["The fleet of nodes"] + [f"Other job {i} says" for i in range(7)]
        ]
        batch = [client.wait(job_id, timeout=180) for job_id in ids]
    finally:
        client.close()
    assert alone.state == job_pb2.JOB_STATE_SUCCEEDED, alone.error
    assert all(job.state == job_pb2.JOB_STATE_SUCCEEDED for job in batch)
    assert batch[0].output == alone.output
    assert batch[0].usage.completion_tokens == alone.usage.completion_tokens == 48
    assert len({job.output for job in batch}) > 1, "other prompts must give other text"


def test_seeded_sampling_repeats_and_max_tokens_is_exact(worker_mesh: WorkerMesh) -> None:
    def spec(seed: int, tokens: int) -> job_pb2.JobSpec:
        s = make_spec("Sample me", max_tokens=tokens, temperature=0.9, seed=seed)
        s.sampling.top_p = 0.95
        s.sampling.ignore_eos = True
        return s

    client = client_of(worker_mesh)
    try:
        ids = [client.submit(spec(seed, tokens)).job_id for seed, tokens in ((7, 37), (7, 37))]
        ids += [client.submit(spec(8, 37)).job_id, client.submit(spec(7, 1)).job_id]
        first, again, other_seed, one = (client.wait(i, timeout=120) for i in ids)
    finally:
        client.close()
    for job in (first, again, other_seed, one):
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert first.output == again.output
    assert first.output != other_seed.output
    assert [j.usage.completion_tokens for j in (first, again, other_seed, one)] == [37, 37, 37, 1]
    assert first.finish_reason == "length"


def test_chat_messages_use_the_models_chat_template(worker_mesh: WorkerMesh) -> None:
    content = "Tell me about the mesh"
    # The tiny model's template: "<s><|user|>\n{content}</s>\n<|assistant|>\n". A plain
    # prompt gets "<s>" added by the tokenizer, so this is the same token sequence.
    rendered = f"<|user|>\n{content}</s>\n<|assistant|>\n"
    client = client_of(worker_mesh)
    try:
        ids = [
            client.submit(make_spec(content, max_tokens=24, chat=True)).job_id,
            client.submit(make_spec(rendered, max_tokens=24)).job_id,
            client.submit(make_spec(content, max_tokens=24)).job_id,
        ]
        chat, templated, plain = (client.wait(i, timeout=120) for i in ids)
    finally:
        client.close()
    assert chat.state == templated.state == plain.state == job_pb2.JOB_STATE_SUCCEEDED
    assert chat.usage.prompt_tokens == templated.usage.prompt_tokens == 21
    assert chat.output == templated.output
    assert plain.usage.prompt_tokens < chat.usage.prompt_tokens


def test_prompt_longer_than_the_context_fails_without_retry(worker_mesh: WorkerMesh) -> None:
    client = client_of(worker_mesh)
    try:
        job_id = client.submit(make_spec("hello world " * 1200, max_tokens=8)).job_id
        job = client.wait(job_id, timeout=120)
    finally:
        client.close()
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.error.reason == "PROMPT_TOO_LONG"  # the prompt alone fills the context
    assert f"in the model's context of {CONTEXT} tokens" in job.error.message
    assert job.attempts == 1


def test_max_tokens_beyond_the_context_is_context_length_exceeded(
    worker_mesh: WorkerMesh,
) -> None:
    """A short prompt whose max_tokens overruns the context: the reason says so (it once
    said PROMPT_TOO_LONG), and the message has the prompt tokens, max_tokens and context."""
    client = client_of(worker_mesh)
    try:
        job_id = client.submit(make_spec("hi", max_tokens=CONTEXT)).job_id
        job = client.wait(job_id, timeout=120)
    finally:
        client.close()
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.error.reason == "CONTEXT_LENGTH_EXCEEDED"
    assert f"plus max_tokens {CONTEXT} is" in job.error.message
    assert f"the model's context of {CONTEXT} tokens" in job.error.message
    assert "prompt of " in job.error.message
    assert job.attempts == 1


def test_signed_result_carries_usage_and_timings(worker_mesh: WorkerMesh) -> None:
    client = client_of(worker_mesh)
    try:
        job = client.wait(client.submit(long_spec("Measure me", 64)).job_id, timeout=120)
    finally:
        client.close()
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    node = job.signature.node_id
    assert verify_job(job, bytes(load_key(worker_mesh.key_file(node)).verify_key))
    assert job.usage.prompt_tokens > 0
    assert job.usage.completion_tokens == 64
    t = job.timings
    assert t.queue_ms >= 0
    assert 0 < t.time_to_first_token_ms <= t.total_ms
    assert t.tokens_per_second > 0
    # tokens/s is measured over the generation, so it cannot exceed tokens over total time
    # by more than the time to the first token allows.
    assert t.tokens_per_second >= 64 / (t.total_ms / 1000) * 0.99


def test_config_file_capabilities_are_advertised_and_matched(worker_mesh: WorkerMesh) -> None:
    """node-b's TOML file names region eu-west and model version tiny-test-1: jobs that
    ask for either run there; node-a (settings only) advertises the CPU it runs on."""

    def spec(i: int, *, region: str = "", version: str = "", gpu: str = "") -> job_pb2.JobSpec:
        s = make_spec(f"constrained {i}", max_tokens=8)
        s.constraints.region = region
        s.model_version = version
        s.constraints.gpu_class = gpu
        s.constraints.min_gpu_memory_mib = 1024 if gpu else 0
        return s

    client = client_of(worker_mesh)
    try:
        ids = [client.submit(spec(i, region="eu-west")).job_id for i in range(3)]
        ids += [client.submit(spec(i, version="tiny-test-1")).job_id for i in range(3)]
        any_cpu = client.submit(spec(9, gpu="cpu")).job_id
        jobs = [client.wait(i, timeout=120) for i in ids]
        cpu_job = client.wait(any_cpu, timeout=120)
    finally:
        client.close()
    for job in jobs:
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
        assert job.signature.node_id == "node-b"
    assert cpu_job.state == job_pb2.JOB_STATE_SUCCEEDED, cpu_job.error
    log = worker_mesh.node_log("node-b")
    assert "region=eu-west" in log
    assert f"tiny-llama={MODEL_DIR}" in log
