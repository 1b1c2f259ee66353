"""The signing scheme: canonical, language-independent bytes signed with ed25519.

Nothing here is a protobuf encoding. Every signed message is a sequence of *fields*; a field
is its length as a 4-byte big-endian unsigned integer followed by that many bytes. The first
field is a domain tag naming what is signed, so a signature over one kind of message can
never be replayed as another. Strings are UTF-8; integers are 8-byte big-endian unsigned;
floats are IEEE-754 binary32 big-endian (the protos carry them as ``float``). The byte-level
specification with a test vector is ``docs/signing.md``; keep the two in step.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

RESULT_TAG = b"fleetwire.result.v1"
REQUEST_TAG = b"fleetwire.request.v1"
NODE_AUTH_TAG = b"fleetwire.node-auth.v2"


def field(value: bytes) -> bytes:
    """One length-prefixed field."""
    return struct.pack(">I", len(value)) + value


def u64(value: int) -> bytes:
    """An unsigned integer as an 8-byte big-endian field body."""
    return struct.pack(">Q", value)


def f32(value: float) -> bytes:
    """A float as a 4-byte IEEE-754 binary32 big-endian field body."""
    return struct.pack(">f", value)


def canonical(tag: bytes, parts: Iterable[bytes]) -> bytes:
    """The domain tag and every part, each as a length-prefixed field."""
    return field(tag) + b"".join(field(part) for part in parts)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request digest covers: the job and everything that shapes its output."""

    job_id: str
    model: str
    model_version: str
    prompt: str
    messages: Sequence[tuple[str, str]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: Sequence[str]
    ignore_eos: bool


def request_bytes(facts: RequestFacts) -> bytes:
    """Canonical request bytes; the request digest is their SHA-256."""
    parts: list[bytes] = [
        facts.job_id.encode(),
        facts.model.encode(),
        facts.model_version.encode(),
        facts.prompt.encode(),
        u64(len(facts.messages)),
    ]
    for role, content in facts.messages:
        parts += [role.encode(), content.encode()]
    parts += [
        u64(facts.max_tokens),
        f32(facts.temperature),
        f32(facts.top_p),
        b"" if facts.seed is None else struct.pack(">q", facts.seed),
        u64(len(facts.stop)),
        *(s.encode() for s in facts.stop),
        b"\x01" if facts.ignore_eos else b"\x00",
    ]
    return canonical(REQUEST_TAG, parts)


def request_digest(facts: RequestFacts) -> bytes:
    return sha256(request_bytes(facts))


@dataclass(frozen=True, slots=True)
class ResultFacts:
    """What a result signature covers."""

    job_id: str
    attempt: int
    node_id: str
    model: str
    request_digest: bytes
    output_digest: bytes
    prompt_tokens: int
    completion_tokens: int
    finished_at_unix_ms: int


def result_bytes(facts: ResultFacts) -> bytes:
    """Canonical result bytes: what the node signs and the scheduler verifies."""
    return canonical(
        RESULT_TAG,
        [
            facts.job_id.encode(),
            u64(facts.attempt),
            facts.node_id.encode(),
            facts.model.encode(),
            facts.request_digest,
            facts.output_digest,
            u64(facts.prompt_tokens),
            u64(facts.completion_tokens),
            u64(facts.finished_at_unix_ms),
        ],
    )


def output_digest(output: str) -> bytes:
    return sha256(output.encode())


def node_auth_bytes(
    nonce: bytes, scheduler_id: str, node_id: str, public_key: bytes, server_name: str = ""
) -> bytes:
    """What a node signs to answer the scheduler's challenge. ``server_name`` is the name the
    node verified the scheduler's TLS certificate for ("" over plaintext): a scheduler
    accepts only the names its own certificate carries, so a challenge relayed by a server
    with a certificate of its own (a relay) does not log the node in elsewhere."""
    return canonical(
        NODE_AUTH_TAG,
        [nonce, scheduler_id.encode(), server_name.encode(), node_id.encode(), public_key],
    )


def key_id(public_key: bytes) -> str:
    """The first 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def acceptable_public_key(public_key: bytes) -> bool:
    """Whether ``public_key`` is a key the mesh registers: 32 bytes encoding a point on the
    curve, canonically, that is not of small order (libsodium's
    ``crypto_core_ed25519_is_valid_point``). A small-order key would let one signature
    verify for many messages; libsodium's verify refuses such keys anyway, other
    libraries may not."""
    if len(public_key) != 32:
        return False
    return bool(crypto_core_ed25519_is_valid_point(public_key))


def sign(signing_key: SigningKey, message: bytes) -> bytes:
    """The detached 64-byte ed25519 signature of ``message``."""
    return bytes(signing_key.sign(message).signature)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only when ``signature`` is a valid ed25519 signature of ``message`` by the
    rules of libsodium's ``crypto_sign_verify_detached`` (docs/signing.md, "Acceptance"):
    S below the group order, R and the key canonical and not of small order."""
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
