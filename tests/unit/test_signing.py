"""The signing scheme against its specification, docs/signing.md.

The test vector is hard-coded here *and* read out of the document's labelled code blocks
(```text id=...), so neither the code nor the document can drift from the other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from fleetwire.protocol import signing
from fleetwire.protocol.facts import result_facts_of, verify_job
from fleetwire.protocol.signing import RequestFacts, ResultFacts
from fleetwire.v1 import job_pb2

DOC = Path(__file__).resolve().parents[2] / "docs" / "signing.md"

# --- The vector, as docs/signing.md states it. -------------------------------------------

PRIVATE_KEY_SEED = bytes(range(32))
PUBLIC_KEY_HEX = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
KEY_ID = "56475aa75463474c"

JOB_ID = "00000000-0000-4000-8000-000000000001"
PROMPT = "Write a haiku about a café."
OUTPUT = "Hello, fleet!"
FINISHED_AT_MS = 1_700_000_000_000

REQUEST = RequestFacts(
    job_id=JOB_ID,
    model="tiny-llama",
    model_version="",
    prompt=PROMPT,
    messages=[],
    max_tokens=16,
    temperature=0.7,
    top_p=0.9,
    seed=42,
    stop=["\n\n"],
    ignore_eos=False,
)
REQUEST_BYTES_HEX = (
    "00000014666c656574776972652e726571756573742e7631"
    "0000002430303030303030302d303030302d343030302d383030302d303030303030303030303031"
    "0000000a74696e792d6c6c616d61"
    "00000000"
    "0000001c57726974652061206861696b752061626f7574206120636166c3a92e"
    "000000080000000000000000"
    "000000080000000000000010"
    "000000043f333333"
    "000000043f666666"
    "00000008000000000000002a"
    "000000080000000000000001"
    "000000020a0a"
    "0000000100"
)
REQUEST_DIGEST_HEX = "98c4e0d6d907d5fbd0b24274f4d32c763131c99035b2b8d7bf3ca5e1448d4755"
OUTPUT_DIGEST_HEX = "f3e12048b4ee16621d27e04acbf01c2fcc2e38a48bce488b5e098c03d90f90ef"

RESULT = ResultFacts(
    job_id=JOB_ID,
    attempt=1,
    node_id="node-1",
    model="tiny-llama",
    request_digest=bytes.fromhex(REQUEST_DIGEST_HEX),
    output_digest=bytes.fromhex(OUTPUT_DIGEST_HEX),
    prompt_tokens=12,
    completion_tokens=5,
    finished_at_unix_ms=FINISHED_AT_MS,
)
RESULT_BYTES_HEX = (
    "00000013666c656574776972652e726573756c742e7631"
    "0000002430303030303030302d303030302d343030302d383030302d303030303030303030303031"
    "000000080000000000000001"
    "000000066e6f64652d31"
    "0000000a74696e792d6c6c616d61"
    "0000002098c4e0d6d907d5fbd0b24274f4d32c763131c99035b2b8d7bf3ca5e1448d4755"
    "00000020f3e12048b4ee16621d27e04acbf01c2fcc2e38a48bce488b5e098c03d90f90ef"
    "00000008000000000000000c"
    "000000080000000000000005"
    "000000080000018bcfe56800"
)
SIGNATURE_HEX = (
    "81c86aafe9dd38e8951400216c5ca50a8c099c490a1b8dc4d7c78a075d2197c3"
    "2d99d2a3b20ad55bb9c6e06371c2a518bbfbe5d2169aa7b0a45488f4d3452804"
)

CHAT_REQUEST = RequestFacts(
    job_id="00000000-0000-4000-8000-000000000002",
    model="tiny-llama",
    model_version="v1",
    prompt="",
    messages=[("system", "Be brief."), ("user", "Hi")],
    max_tokens=8,
    temperature=0.0,
    top_p=1.0,
    seed=None,
    stop=[],
    ignore_eos=True,
)
CHAT_REQUEST_BYTES_HEX = (
    "00000014666c656574776972652e726571756573742e7631"
    "0000002430303030303030302d303030302d343030302d383030302d303030303030303030303032"
    "0000000a74696e792d6c6c616d61"
    "000000027631"
    "00000000"
    "000000080000000000000002"
    "0000000673797374656d"
    "0000000942652062726965662e"
    "0000000475736572"
    "000000024869"
    "000000080000000000000008"
    "0000000400000000"
    "000000043f800000"
    "00000000"
    "000000080000000000000000"
    "0000000101"
)
CHAT_REQUEST_DIGEST_HEX = "c220d7601d0657262846ae241ea8c2cc3d3cfc946172745bb382efe7e7d8809c"

NONCE = bytes(range(32, 64))
SCHEDULER_ID = "scheduler-a"
NODE_AUTH_BYTES_HEX = (
    "00000016666c656574776972652e6e6f64652d617574682e7631"
    "00000020202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "0000000b7363686564756c65722d61"
    "000000066e6f64652d31"
    "0000002003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
)
NODE_AUTH_SIGNATURE_HEX = (
    "9dc8dc5d6c623fb1c65f6438b8bdd31cb67aef819754a91a93253d51d61d422c"
    "f854fdf9aba747f3ca3828a2e524134e35730e759218881c30939f2fd4766302"
)

SIGNING_KEY = SigningKey(PRIVATE_KEY_SEED)
PUBLIC_KEY = bytes.fromhex(PUBLIC_KEY_HEX)
SIGNATURE = bytes.fromhex(SIGNATURE_HEX)
OTHER_KEY = SigningKey(bytes(range(100, 132)))

# --- Reading the vector out of the document. ----------------------------------------------

_BLOCK = re.compile(r"^```(\w+) id=([\w-]+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def doc_blocks() -> dict[str, str]:
    """The labelled code blocks of docs/signing.md, by id."""
    blocks: dict[str, str] = {}
    for match in _BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        label = match.group(2)
        assert label not in blocks, f"docs/signing.md: two blocks labelled {label!r}"
        blocks[label] = match.group(3)
    return blocks


def doc_hex(label: str) -> str:
    """A hex block of the document: comments (after '#') and whitespace dropped."""
    blocks = doc_blocks()
    assert label in blocks, f"docs/signing.md has no block labelled {label!r}"
    text = "".join(line.split("#", 1)[0] for line in blocks[label].splitlines())
    hex_digits = "".join(text.split())
    bytes.fromhex(hex_digits)  # raises on anything that is not hex
    return hex_digits


DOCUMENTED: dict[str, str] = {
    "private-key-seed": PRIVATE_KEY_SEED.hex(),
    "public-key": PUBLIC_KEY_HEX,
    "key-id": KEY_ID,
    "request-bytes": REQUEST_BYTES_HEX,
    "request-digest": REQUEST_DIGEST_HEX,
    "output-digest": OUTPUT_DIGEST_HEX,
    "result-bytes": RESULT_BYTES_HEX,
    "signature": SIGNATURE_HEX,
    "chat-request-bytes": CHAT_REQUEST_BYTES_HEX,
    "chat-request-digest": CHAT_REQUEST_DIGEST_HEX,
    "node-auth-bytes": NODE_AUTH_BYTES_HEX,
    "node-auth-signature": NODE_AUTH_SIGNATURE_HEX,
}


@pytest.mark.parametrize(("label", "expected"), DOCUMENTED.items(), ids=list(DOCUMENTED))
def test_document_states_the_vector(label: str, expected: str) -> None:
    assert doc_hex(label) == expected, f"docs/signing.md block {label!r} drifted"


def test_document_check_snippet_runs() -> None:
    """The porting example of the document is itself a passing check of the vector."""
    namespace: dict[str, Any] = {"__name__": "signing_doc_snippet"}
    exec(compile(doc_blocks()["check-vector"], str(DOC), "exec"), namespace)
    assert namespace["signature"].hex() == SIGNATURE_HEX


# --- The code reproduces the vector. ------------------------------------------------------


def test_key_from_seed() -> None:
    assert bytes(SIGNING_KEY.verify_key) == PUBLIC_KEY
    assert signing.key_id(PUBLIC_KEY) == KEY_ID


def test_request_bytes_and_digest() -> None:
    assert signing.request_bytes(REQUEST).hex() == REQUEST_BYTES_HEX
    assert signing.request_digest(REQUEST).hex() == REQUEST_DIGEST_HEX


def test_chat_request_bytes_and_digest() -> None:
    assert signing.request_bytes(CHAT_REQUEST).hex() == CHAT_REQUEST_BYTES_HEX
    assert signing.request_digest(CHAT_REQUEST).hex() == CHAT_REQUEST_DIGEST_HEX


def test_result_bytes_and_signature() -> None:
    assert signing.output_digest(OUTPUT).hex() == OUTPUT_DIGEST_HEX
    message = signing.result_bytes(RESULT)
    assert message.hex() == RESULT_BYTES_HEX
    assert signing.sign(SIGNING_KEY, message) == SIGNATURE
    assert signing.verify(PUBLIC_KEY, message, SIGNATURE)


def test_node_auth_bytes_and_signature() -> None:
    message = signing.node_auth_bytes(NONCE, SCHEDULER_ID, "node-1", PUBLIC_KEY)
    assert message.hex() == NODE_AUTH_BYTES_HEX
    assert signing.sign(SIGNING_KEY, message).hex() == NODE_AUTH_SIGNATURE_HEX
    assert signing.verify(PUBLIC_KEY, message, bytes.fromhex(NODE_AUTH_SIGNATURE_HEX))


# --- Every signed fact matters. -----------------------------------------------------------

RESULT_TAMPERED: dict[str, Any] = {
    "job_id": "00000000-0000-4000-8000-000000000002",
    "attempt": 2,
    "node_id": "node-2",
    "model": "other-model",
    "request_digest": signing.request_digest(CHAT_REQUEST),
    "output_digest": signing.output_digest("Hello, fleet?"),
    "prompt_tokens": 13,
    "completion_tokens": 6,
    "finished_at_unix_ms": FINISHED_AT_MS + 1,
}


def test_every_result_fact_has_a_tamper_case() -> None:
    assert set(RESULT_TAMPERED) == {f.name for f in dataclasses.fields(ResultFacts)}


@pytest.mark.parametrize(("name", "value"), RESULT_TAMPERED.items(), ids=list(RESULT_TAMPERED))
def test_tampered_result_fact_fails_verification(name: str, value: Any) -> None:
    tampered = dataclasses.replace(RESULT, **{name: value})
    assert not signing.verify(PUBLIC_KEY, signing.result_bytes(tampered), SIGNATURE)


REQUEST_CHANGED: dict[str, Any] = {
    "job_id": "00000000-0000-4000-8000-000000000002",
    "model": "other-model",
    "model_version": "v2",
    "prompt": "Write a haiku about a cafe.",
    "messages": [("user", "Write a haiku about a café.")],
    "max_tokens": 17,
    "temperature": 0.8,
    "top_p": 1.0,
    "seed": None,
    "stop": ["\n"],
    "ignore_eos": True,
}


def test_every_request_fact_has_a_change_case() -> None:
    assert set(REQUEST_CHANGED) == {f.name for f in dataclasses.fields(RequestFacts)}


@pytest.mark.parametrize(("name", "value"), REQUEST_CHANGED.items(), ids=list(REQUEST_CHANGED))
def test_changed_request_fact_changes_the_digest(name: str, value: Any) -> None:
    changed = dataclasses.replace(REQUEST, **{name: value})
    assert signing.request_digest(changed) != signing.request_digest(REQUEST)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param({"seed": None}, {"seed": 0}, id="unset-seed-vs-zero"),
        pytest.param(
            {"prompt": "ab", "model_version": ""},
            {"prompt": "b", "model_version": "a"},
            id="field-boundary",
        ),
        pytest.param({"stop": ["a", "b"]}, {"stop": ["ab"]}, id="stop-split"),
        pytest.param({"messages": [("user", "")]}, {"messages": [("", "user")]}, id="role-swap"),
        pytest.param({"temperature": 0.0}, {"temperature": -0.0}, id="negative-zero"),
    ],
)
def test_request_encoding_is_unambiguous(a: dict[str, Any], b: dict[str, Any]) -> None:
    first = dataclasses.replace(REQUEST, **a)
    second = dataclasses.replace(REQUEST, **b)
    assert signing.request_bytes(first) != signing.request_bytes(second)


def test_signature_of_another_key_fails() -> None:
    message = signing.result_bytes(RESULT)
    forged = signing.sign(OTHER_KEY, message)
    assert not signing.verify(PUBLIC_KEY, message, forged)
    assert not signing.verify(bytes(OTHER_KEY.verify_key), message, SIGNATURE)
    assert signing.verify(bytes(OTHER_KEY.verify_key), message, forged)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        pytest.param(PUBLIC_KEY[:31], SIGNATURE, id="short-key"),
        pytest.param(PUBLIC_KEY, SIGNATURE[:63], id="short-signature"),
        pytest.param(PUBLIC_KEY, b"", id="empty-signature"),
    ],
)
def test_malformed_key_or_signature_is_false_not_an_error(
    public_key: bytes, signature: bytes
) -> None:
    assert not signing.verify(public_key, signing.result_bytes(RESULT), signature)


def test_result_signature_is_not_a_node_auth_signature() -> None:
    """Domain tags: the same key's signature over one message kind never fits another."""
    auth = signing.node_auth_bytes(NONCE, SCHEDULER_ID, "node-1", PUBLIC_KEY)
    assert not signing.verify(PUBLIC_KEY, auth, SIGNATURE)


NODE_AUTH_INPUTS: dict[str, Any] = {
    "nonce": NONCE,
    "scheduler_id": SCHEDULER_ID,
    "node_id": "node-1",
    "public_key": PUBLIC_KEY,
}
NODE_AUTH_CHANGED: dict[str, Any] = {
    "nonce": bytes(32),
    "scheduler_id": "scheduler-b",
    "node_id": "node-2",
    "public_key": bytes(OTHER_KEY.verify_key),
}


@pytest.mark.parametrize(("name", "value"), NODE_AUTH_CHANGED.items(), ids=list(NODE_AUTH_CHANGED))
def test_node_auth_bytes_differ_when_any_input_differs(name: str, value: Any) -> None:
    original = signing.node_auth_bytes(**NODE_AUTH_INPUTS)
    changed = signing.node_auth_bytes(**{**NODE_AUTH_INPUTS, name: value})
    assert changed != original
    signature = bytes.fromhex(NODE_AUTH_SIGNATURE_HEX)
    assert not signing.verify(PUBLIC_KEY, changed, signature)


# --- Offline verification of a Job (fleetwire.protocol.facts). ------------------------------------


def vector_job() -> job_pb2.Job:
    """The SUCCEEDED job a client would receive for the vector."""
    return job_pb2.Job(
        job_id=JOB_ID,
        state=job_pb2.JOB_STATE_SUCCEEDED,
        spec=job_pb2.JobSpec(
            model="tiny-llama",
            prompt=PROMPT,
            sampling=job_pb2.SamplingParams(
                max_tokens=16, temperature=0.7, top_p=0.9, seed=42, stop=["\n\n"]
            ),
            priority=job_pb2.PRIORITY_CLASS_NORMAL,
            mode=job_pb2.INFERENCE_MODE_POLLING,
            network=job_pb2.NETWORK_MAINNET,
        ),
        output=OUTPUT,
        finish_reason="stop",
        usage=job_pb2.Usage(prompt_tokens=12, completion_tokens=5),
        timings=job_pb2.Timings(total_ms=12.5),
        signature=job_pb2.ResultSignature(
            node_id="node-1",
            key_id=KEY_ID,
            public_key=PUBLIC_KEY,
            signature=SIGNATURE,
            attempt=1,
            request_digest=bytes.fromhex(REQUEST_DIGEST_HEX),
            output_digest=bytes.fromhex(OUTPUT_DIGEST_HEX),
            finished_at_unix_ms=FINISHED_AT_MS,
        ),
        attempts=1,
    )


def test_job_of_the_vector_verifies() -> None:
    job = vector_job()
    assert result_facts_of(job) == RESULT
    assert verify_job(job)
    assert verify_job(job, PUBLIC_KEY)


Mutation = Callable[[job_pb2.Job], None]


def _set(path: str, value: object) -> Mutation:
    """A mutation setting the dotted attribute ``path`` of a Job."""
    *parents, name = path.split(".")

    def mutate(job: job_pb2.Job) -> None:
        target = job
        for parent in parents:
            target = getattr(target, parent)
        setattr(target, name, value)

    return mutate


def _clear_seed(job: job_pb2.Job) -> None:
    job.spec.sampling.ClearField("seed")


def _add_message(job: job_pb2.Job) -> None:
    job.spec.messages.add(role="user", content="hi")


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_set("output", "Hello, fleet?"), id="output"),
        pytest.param(_set("usage.prompt_tokens", 13), id="usage.prompt_tokens"),
        pytest.param(_set("usage.completion_tokens", 6), id="usage.completion_tokens"),
        pytest.param(_set("spec.prompt", "Write a haiku about a cafe."), id="spec.prompt"),
        pytest.param(_set("signature.attempt", 2), id="signature.attempt"),
        pytest.param(_set("signature.finished_at_unix_ms", FINISHED_AT_MS + 1), id="finished_at"),
        pytest.param(_set("job_id", "00000000-0000-4000-8000-000000000002"), id="job_id"),
        pytest.param(_set("signature.node_id", "node-2"), id="signature.node_id"),
        pytest.param(_set("spec.model", "other-model"), id="spec.model"),
        pytest.param(_set("spec.model_version", "v2"), id="spec.model_version"),
        pytest.param(_set("spec.sampling.temperature", 0.0), id="spec.sampling.temperature"),
        pytest.param(_set("spec.sampling.max_tokens", 17), id="spec.sampling.max_tokens"),
        pytest.param(_clear_seed, id="spec.sampling.seed-cleared"),
        pytest.param(_add_message, id="spec.messages"),
        pytest.param(_set("signature.signature", bytes(64)), id="signature.signature"),
        pytest.param(_set("state", job_pb2.JOB_STATE_FAILED), id="state"),
    ],
)
def test_changed_job_fails_verification(mutate: Mutation) -> None:
    job = vector_job()
    mutate(job)
    assert not verify_job(job)
    assert not verify_job(job, PUBLIC_KEY)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(_set("finish_reason", "length"), id="finish_reason"),
        pytest.param(_set("timings.total_ms", 99.0), id="timings"),
        pytest.param(_set("attempts", 3), id="attempts"),
        pytest.param(_set("signature.key_id", "0000000000000000"), id="signature.key_id"),
        pytest.param(_set("signature.request_digest", bytes(32)), id="stored-request-digest"),
        pytest.param(_set("spec.priority", job_pb2.PRIORITY_CLASS_BULK), id="spec.priority"),
    ],
)
def test_unsigned_fields_do_not_take_part(mutate: Mutation) -> None:
    """What docs/signing.md lists as not signed: changing it leaves the signature valid."""
    job = vector_job()
    mutate(job)
    assert verify_job(job, PUBLIC_KEY)


def test_pinned_key_rejects_a_job_re_signed_with_another_key() -> None:
    """Without a pinned key the check proves integrity only, not who signed."""
    job = vector_job()
    job.output = "forged"
    other_public = bytes(OTHER_KEY.verify_key)
    job.signature.public_key = other_public
    job.signature.key_id = signing.key_id(other_public)
    job.signature.signature = signing.sign(OTHER_KEY, signing.result_bytes(result_facts_of(job)))
    assert verify_job(job)
    assert not verify_job(job, PUBLIC_KEY)


def test_job_without_signature_fails() -> None:
    job = vector_job()
    job.ClearField("signature")
    assert not verify_job(job)
