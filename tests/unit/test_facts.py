"""Offline verification of a Job (``fleetwire.protocol.facts``) against the vector of
docs/signing.md: the vector's job verifies; every signed fact changed, the signature of
another key, or no signature at all fails; fields outside the signature take no part."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fleetwire.protocol import signing
from fleetwire.protocol.facts import result_facts_of, verify_job
from fleetwire.v1 import job_pb2
from tests.support.signing_vector import (
    FINISHED_AT_MS,
    OTHER_KEY,
    PUBLIC_KEY,
    RESULT,
    vector_job,
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
