"""Whether a job's result is signed by the key the mesh registered for its node, decided
here in the console with ``fleetwire.protocol`` — never taken from a flag the server sets.
The key comes from the mesh's key history (``ListNodeKeyHistory``), not from the result,
which names a public key of its own that anybody could have put there. Pure logic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from fleetwire.protocol import facts, signing
from fleetwire.v1 import job_pb2, job_service_pb2


class SignatureCheck(StrEnum):
    VERIFIED = "verified"  # verifies with the mesh's key of that id for the node
    UNSIGNED = "unsigned"  # not SUCCEEDED, or no signature
    UNKNOWN_KEY = "unknown-key"  # the mesh never registered that key id for the node
    KEY_REVOKED = "key-revoked"  # signed when the key was already revoked
    INVALID = "invalid"  # does not verify with the mesh's key (or the facts were changed)

    @property
    def explanation(self) -> str:
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    SignatureCheck.VERIFIED: "verified with the key the mesh registered for the node",
    SignatureCheck.UNSIGNED: "no signed result (the job did not succeed)",
    SignatureCheck.UNKNOWN_KEY: "the mesh never registered this key for the node",
    SignatureCheck.KEY_REVOKED: "signed after the node's key was revoked",
    SignatureCheck.INVALID: "the signature does not verify with the mesh's key for the node",
}


@dataclass(frozen=True, slots=True)
class SignatureVerdict:
    """The check and the mesh's key it was made with (None when there was none)."""

    check: SignatureCheck
    key: job_service_pb2.NodeKey | None = None
    # Whether the public key the result names is the mesh's (informational only).
    names_mesh_key: bool = False

    @property
    def verified(self) -> bool:
        return self.check is SignatureCheck.VERIFIED


def check_signature(job: job_pb2.Job, keys: Sequence[job_service_pb2.NodeKey]) -> SignatureVerdict:
    """The verdict on ``job``'s signature against ``keys``, the mesh's keys of the node the
    signature names. VERIFIED only when ``facts.verify_job_with_keys`` says so."""
    sig = job.signature
    if job.state != job_pb2.JOB_STATE_SUCCEEDED or not sig.signature:
        return SignatureVerdict(SignatureCheck.UNSIGNED)
    key = next(
        (
            k
            for k in keys
            if k.key_id == sig.key_id and signing.key_id(bytes(k.public_key)) == k.key_id
        ),
        None,
    )
    if key is None:
        return SignatureVerdict(SignatureCheck.UNKNOWN_KEY)
    names_mesh_key = bytes(sig.public_key) == bytes(key.public_key)
    if key.HasField("revoked_at") and sig.finished_at_unix_ms >= key.revoked_at.ToMilliseconds():
        return SignatureVerdict(SignatureCheck.KEY_REVOKED, key, names_mesh_key)
    if facts.verify_job_with_keys(job, [key]):
        return SignatureVerdict(SignatureCheck.VERIFIED, key, names_mesh_key)
    return SignatureVerdict(SignatureCheck.INVALID, key, names_mesh_key)
