"""The signed facts of a request and a result, rebuilt from ``fleetwire.v1`` messages.

The bridge and the replay tool digest a spec with ``request_facts``; a node checks the
digest it was sent the same way; the scheduler and every client verify a finished job with
``verify_job`` — one mapping, so no two parties can disagree on what was signed.
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetwire.protocol import signing
from fleetwire.v1 import job_pb2, job_service_pb2


def request_facts(job_id: str, spec: job_pb2.JobSpec) -> signing.RequestFacts:
    """The request facts of a stored spec (defaults already applied, as ``Job.spec``)."""
    s = spec.sampling
    return signing.RequestFacts(
        job_id=job_id,
        model=spec.model,
        model_version=spec.model_version,
        prompt=spec.prompt,
        messages=[(m.role, m.content) for m in spec.messages],
        max_tokens=s.max_tokens,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed if s.HasField("seed") else None,
        stop=list(s.stop),
        ignore_eos=s.ignore_eos,
    )


def result_facts_of(job: job_pb2.Job) -> signing.ResultFacts:
    """The facts a node signed, rebuilt from the job: both digests are recomputed from
    ``job.spec`` and ``job.output``; the copies in ``job.signature`` are ignored."""
    sig = job.signature
    return signing.ResultFacts(
        job_id=job.job_id,
        attempt=sig.attempt,
        node_id=sig.node_id,
        model=job.spec.model,
        request_digest=signing.request_digest(request_facts(job.job_id, job.spec)),
        output_digest=signing.output_digest(job.output),
        prompt_tokens=job.usage.prompt_tokens,
        completion_tokens=job.usage.completion_tokens,
        finished_at_unix_ms=sig.finished_at_unix_ms,
    )


def public_key_bytes(key: bytes | str) -> bytes:
    """A raw 32-byte ed25519 public key from bytes or its hex form."""
    raw = bytes.fromhex(key) if isinstance(key, str) else bytes(key)
    if len(raw) != 32:
        raise ValueError(f"an ed25519 public key has 32 bytes, got {len(raw)}")
    return raw


def verify_job(job: job_pb2.Job, public_key: bytes | str | None = None) -> bool:
    """True only when the job is SUCCEEDED, signed, and the signature verifies against
    ``public_key`` (raw or hex). Without a key, the key the job names is used: that proves
    integrity, not who signed — pin the node's key from a source you trust."""
    if job.state != job_pb2.JOB_STATE_SUCCEEDED or not job.signature.signature:
        return False
    key = public_key_bytes(public_key) if public_key is not None else job.signature.public_key
    message = signing.result_bytes(result_facts_of(job))
    return signing.verify(bytes(key), message, bytes(job.signature.signature))


def verify_job_with_keys(job: job_pb2.Job, keys: Sequence[job_service_pb2.NodeKey]) -> bool:
    """``verify_job`` with the key the mesh registered for the signing node
    (``JobService.ListNodeKeys``): True only when the job's ``signature.key_id`` names one
    of ``keys``, that key is the one the id is computed from, the signature verifies with
    it, and the result was signed before the key was revoked (if it was). A key replaced by
    a rotation stays good for what it signed: the session that proved it may finish its
    jobs. ``finished_at_unix_ms`` is the node's signed clock: a revocation bounds what a
    stolen key can still sign only as far as the mesh is trusted to have refused later
    results (it does: docs/security.md)."""
    wanted = job.signature.key_id
    for key in keys:
        public = bytes(key.public_key)
        if key.key_id != wanted or signing.key_id(public) != wanted:
            continue
        if key.HasField("revoked_at"):
            revoked_ms = key.revoked_at.ToMilliseconds()
            if job.signature.finished_at_unix_ms >= revoked_ms:
                return False
        return verify_job(job, public)
    return False
