"""A stored job row as the public ``fleetwire.v1.Job`` message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fleetwire.domain.states import JobState
from fleetwire.protocol.signing import output_digest
from fleetwire.v1 import job_pb2


def job_from_row(row: Mapping[str, Any]) -> job_pb2.Job:
    """Everything a client may see of a job: state, spec, and (when SUCCEEDED) output,
    usage, timings and the verified signature; the error when it ended otherwise."""
    job = job_pb2.Job(
        job_id=str(row["job_id"]),
        state=JobState(row["state"]).to_proto(),
        attempts=row["attempts"],
    )
    job.spec.ParseFromString(bytes(row["spec"]))
    job.created_at.FromDatetime(row["created_at"])
    job.updated_at.FromDatetime(row["updated_at"])
    job.expires_at.FromDatetime(row["expires_at"])
    if row["state"] == JobState.SUCCEEDED:
        output = bytes(row["output"]).decode()
        job.output = output
        job.finish_reason = row["finish_reason"]
        job.usage.prompt_tokens = row["prompt_tokens"]
        job.usage.completion_tokens = row["completion_tokens"]
        timings = row["timings"]
        if timings:
            t = json.loads(timings) if isinstance(timings, str) else timings
            job.timings.queue_ms = t.get("queue_ms", 0.0)
            job.timings.time_to_first_token_ms = t.get("time_to_first_token_ms", 0.0)
            job.timings.total_ms = t.get("total_ms", 0.0)
            job.timings.tokens_per_second = t.get("tokens_per_second", 0.0)
        sig = job.signature
        sig.node_id = row["node_id"]
        sig.key_id = row["key_id"]
        sig.public_key = bytes(row["public_key"])
        sig.signature = bytes(row["signature"])
        sig.attempt = row["signed_attempt"]
        if row.get("stream_check"):
            job.stream_check = job_pb2.StreamCheck.Value(f"STREAM_CHECK_{row['stream_check']}")
        sig.request_digest = bytes(row["request_digest"])
        sig.output_digest = output_digest(output)
        sig.finished_at_unix_ms = row["finished_at_ms"]
    if row.get("trace_id"):
        job.trace_id = row["trace_id"]
    if row.get("replay_of") is not None:
        job.replay_of = str(row["replay_of"])
    if row["error_reason"]:
        job.error.reason = row["error_reason"]
        job.error.message = row["error_message"] or ""
    return job
