"""Offline verification of a finished job's signature, with no server call.

A client holding a SUCCEEDED ``Job`` checks that (1) the request digest is the one of the
spec it asked for, (2) the output digest is the one of the output it received, and (3) the
node's ed25519 signature covers exactly those facts (docs/signing.md). Pass the node's
public key from a source you trust (its registration) to pin who signed.
"""

from __future__ import annotations

from fleetwire import signing
from fleetwire.v1 import job_pb2
from fleetwire.validation import request_facts


def result_facts_of(job: job_pb2.Job) -> signing.ResultFacts:
    """The signed facts as a client reconstructs them from the job it received."""
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


def verify_job(job: job_pb2.Job, public_key: bytes | None = None) -> bool:
    """True when the job is SUCCEEDED and its signature verifies against ``public_key``
    (default: the key the job names, which proves integrity but not identity)."""
    if job.state != job_pb2.JOB_STATE_SUCCEEDED or not job.signature.signature:
        return False
    key = public_key if public_key is not None else bytes(job.signature.public_key)
    message = signing.result_bytes(result_facts_of(job))
    return signing.verify(key, message, bytes(job.signature.signature))
