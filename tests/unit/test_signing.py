"""The signing scheme against its specification, docs/signing.md.

The test vector is hard-coded (tests/support/signing_vector.py) *and* read out of the
document's labelled code blocks (```text id=...), so neither the code nor the document can
drift from the other.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from fleetwire.protocol import signing
from fleetwire.protocol.signing import RequestFacts, ResultFacts
from tests.support.signing_vector import (
    CHAT_REQUEST,
    CHAT_REQUEST_BYTES_HEX,
    CHAT_REQUEST_DIGEST_HEX,
    FINISHED_AT_MS,
    KEY_ID,
    NODE_AUTH_BYTES_HEX,
    NODE_AUTH_SIGNATURE_HEX,
    NONCE,
    OTHER_KEY,
    OUTPUT,
    OUTPUT_DIGEST_HEX,
    PRIVATE_KEY_SEED,
    PUBLIC_KEY,
    PUBLIC_KEY_HEX,
    REQUEST,
    REQUEST_BYTES_HEX,
    REQUEST_DIGEST_HEX,
    RESULT,
    RESULT_BYTES_HEX,
    SCHEDULER_ID,
    SERVER_NAME,
    SIGNATURE,
    SIGNATURE_HEX,
    SIGNING_KEY,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "signing.md"

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
    message = signing.node_auth_bytes(NONCE, SCHEDULER_ID, "node-1", PUBLIC_KEY, SERVER_NAME)
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
    auth = signing.node_auth_bytes(NONCE, SCHEDULER_ID, "node-1", PUBLIC_KEY, SERVER_NAME)
    assert not signing.verify(PUBLIC_KEY, auth, SIGNATURE)


NODE_AUTH_INPUTS: dict[str, Any] = {
    "nonce": NONCE,
    "scheduler_id": SCHEDULER_ID,
    "node_id": "node-1",
    "public_key": PUBLIC_KEY,
    "server_name": SERVER_NAME,
}
NODE_AUTH_CHANGED: dict[str, Any] = {
    "nonce": bytes(32),
    "scheduler_id": "scheduler-b",
    "server_name": "relay.example",
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
