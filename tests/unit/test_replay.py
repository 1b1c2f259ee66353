"""The row of a replayed dead letter (pure logic; the flow is in
tests/integration/test_dead_letter_replay.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration

from fleetwire.protocol.facts import request_facts
from fleetwire.protocol.signing import request_digest
from fleetwire.v1 import job_pb2
from scheduler.replay import replacement_row


def original_row(spec: job_pb2.JobSpec) -> dict[str, Any]:
    job_id = uuid.uuid4()
    return {
        "job_id": job_id,
        "spec": spec.SerializeToString(deterministic=True),
        "model": spec.model,
        "network": "mainnet",
        "priority": "PRIORITY_CLASS_BULK",
        "route_key": "mainnet.scripted",
        "request_digest": request_digest(request_facts(str(job_id), spec)),
        "tenant_id": "acme",
        "client_request_id": "order-42",
        "submit_digest": b"\x01" * 32,
        "expires_at": datetime(2020, 1, 1, tzinfo=UTC),
    }


def test_replacement_is_a_new_job_of_the_same_tenant_and_spec_with_a_fresh_ttl() -> None:
    spec = job_pb2.JobSpec(
        model="scripted",
        prompt="p",
        client_request_id="order-42",
        ttl=Duration(seconds=90),
        priority=job_pb2.PRIORITY_CLASS_BULK,
    )
    original = original_row(spec)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row = replacement_row(original, trace_id="t-1", now=now)  # type: ignore[arg-type]

    assert row.job_id != original["job_id"]
    assert row.replay_of == original["job_id"]
    assert row.spec == original["spec"]
    assert (row.tenant_id, row.route_key, row.priority, row.network) == (
        "acme",
        "mainnet.scripted",
        "PRIORITY_CLASS_BULK",
        "mainnet",
    )
    assert row.expires_at == now + timedelta(seconds=90)
    # The request digest covers the job id: the node recomputes it for the new id.
    assert row.request_digest == request_digest(request_facts(str(row.job_id), spec))
    assert row.request_digest != original["request_digest"]
    # The tenant's idempotency key keeps naming the original.
    assert row.client_request_id is None
    assert row.trace_id == "t-1"
