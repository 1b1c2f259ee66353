"""The jobs API's pure mapping: bodies → specs (bad fields named), jobs → JSON, event ids ⇄
Watch cursors, X-Request-Id."""

from __future__ import annotations

from typing import Any

import pytest

from broker_bridge import jobs_events, jobs_json
from broker_bridge.http_request_ids import request_id_of
from broker_bridge.watch_output import FROM_START, WatchCursor
from fleetwire.domain.errors import FieldViolation, InvalidArgument, NotFound
from fleetwire.v1 import job_pb2, job_service_pb2


def spec(body: Any) -> job_pb2.JobSpec:
    return jobs_json.job_spec_of(body, default_max_tokens=256)


def bad_fields(body: Any) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        spec(body)
    return [v.field for v in caught.value.violations]


def test_a_full_body_maps_to_its_spec() -> None:
    made = spec(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "sampling": {"max_tokens": 9, "temperature": 0.5, "seed": 3, "stop": "\n"},
            "priority": "bulk",
            "ttl": 90,
            "network": "testnet",
            "subcloud": "acme",
            "labels": {"a": "b"},
        }
    )
    assert made.mode == job_pb2.INFERENCE_MODE_POLLING
    assert made.sampling.max_tokens == 9
    assert made.sampling.seed == 3
    assert list(made.sampling.stop) == ["\n"]
    assert made.priority == job_pb2.PRIORITY_CLASS_BULK
    assert made.ttl.seconds == 90
    assert made.network == job_pb2.NETWORK_TESTNET
    assert made.constraints.subcloud == "acme"
    assert list(made.messages) == [job_pb2.ChatMessage(role="user", content="hi")]


def test_max_tokens_defaults() -> None:
    assert spec({"model": "m", "prompt": "p"}).sampling.max_tokens == 256


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ([], ["body"]),
        ({"model": 1, "prompt": "p"}, ["model"]),
        (
            {"model": "m", "prompt": "p", "sampling": {"temperature": "hot"}},
            ["sampling.temperature"],
        ),
        ({"model": "m", "prompt": "p", "sampling": {"max_tokens": True}}, ["sampling.max_tokens"]),
        ({"model": "m", "prompt": "p", "sampling": {"max_tokens": 0}}, ["sampling.max_tokens"]),
        ({"model": "m", "prompt": "p", "sampling": {"ignore_eos": 1}}, ["sampling.ignore_eos"]),
        ({"model": "m", "prompt": "p", "sampling": {"top_k": 1}}, ["sampling.top_k"]),
        ({"model": "m", "messages": [{"role": "user"}]}, ["messages[0]"]),
        ({"model": "m", "prompt": "p", "mode": "SYNC", "stream": True}, ["mode", "stream"]),
        ({"model": "m", "prompt": "p", "priority": "asap"}, ["priority"]),
    ],
)
def test_bad_fields_are_named(body: Any, fields: list[str]) -> None:
    assert bad_fields(body) == fields


def test_batch_members_are_named_by_index() -> None:
    with pytest.raises(InvalidArgument) as caught:
        jobs_json.batch_specs_of(
            {"jobs": [{"model": "m", "prompt": "p"}, {"model": "m", "ttl": -1}], "x": 1},
            default_max_tokens=8,
        )
    assert [v.field for v in caught.value.violations] == ["x", "jobs[1].ttl"]
    specs = jobs_json.batch_specs_of(
        {"jobs": [{"model": "m", "prompt": "p"}]}, default_max_tokens=8
    )
    assert specs[0].sampling.max_tokens == 8


def test_a_queued_job_has_no_result_fields() -> None:
    job = job_pb2.Job(job_id="j", state=job_pb2.JOB_STATE_QUEUED)
    job.created_at.FromSeconds(1_700_000_000)
    view = jobs_json.job_view(job)
    assert view["state"] == "QUEUED"
    assert view["done"] is False
    assert view["created_at"] == "2023-11-14T22:13:20Z"
    assert view["updated_at"] is None
    assert view["output"] is view["usage"] is view["signature"] is view["error"] is None
    assert view["links"] == {"self": "/v1/jobs/j", "events": "/v1/jobs/j/events"}


def test_a_cancelled_job_is_done_with_its_error() -> None:
    job = job_pb2.Job(
        job_id="j",
        state=job_pb2.JOB_STATE_CANCELLED,
        error=job_pb2.JobError(reason="CANCELLED_BY_CLIENT", message="m"),
    )
    view = jobs_json.job_view(job)
    assert view["done"] is True
    assert view["error"] == {"reason": "CANCELLED_BY_CLIENT", "message": "m"}


def test_a_batch_adds_up() -> None:
    batch = job_service_pb2.Batch(batch_id="b", total=2, succeeded=1, running=1, job_ids=["x", "y"])
    view = jobs_json.batch_json(batch)
    assert view["counts"]["succeeded"] == view["counts"]["running"] == 1
    assert view["links"]["jobs"] == ["/v1/jobs/x", "/v1/jobs/y"]
    assert view["done"] is False


def test_errors_name_fields_as_the_body_spells_them() -> None:
    err = InvalidArgument([FieldViolation("job.sampling.max_tokens", "too many")])
    answer = jobs_json.gateway_error(err)
    assert answer.status == 400
    assert answer.body["error"]["param"] == "sampling.max_tokens"
    unknown_model = jobs_json.gateway_error(
        InvalidArgument([FieldViolation("job.model", "unknown model 'x'")])
    )
    assert (unknown_model.status, unknown_model.body["error"]["code"]) == (404, "model_not_found")
    assert jobs_json.gateway_error(NotFound("job x not found")).status == 404


@pytest.mark.parametrize(
    ("sent", "cursor"),
    [(None, FROM_START), ("", FROM_START), ("0.0", WatchCursor()), ("2.17", WatchCursor(2, 17))],
)
def test_event_ids_are_watch_cursors(sent: str | None, cursor: WatchCursor) -> None:
    assert jobs_events.cursor_of(sent) == cursor
    assert jobs_events.cursor_of(jobs_events.event_id(cursor)) == cursor


@pytest.mark.parametrize("sent", ["7", "a.b", "1.2.3", "-1.2", f"{2**32}.1"])
def test_a_bad_last_event_id_is_refused(sent: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        jobs_events.cursor_of(sent)
    assert caught.value.violations[0].field == "Last-Event-ID"


def test_a_frame_ends_with_its_id() -> None:
    frame = jobs_events.frame("chunk", {"text": "é"}, WatchCursor(1, 2))
    assert frame == 'event: chunk\ndata: {"text":"é"}\nid: 1.2\n\n'.encode()


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-1", True), ("a b", False), ("x" * 129, False), ("", False), (None, False), ("é", False)],
)
def test_request_ids(sent: str | None, kept: bool) -> None:
    made = request_id_of(sent)
    assert (made == sent) is kept
    if not kept:
        assert len(made) == 32


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        ({"temperature": float("nan")}, "sampling.temperature"),
        ({"top_p": 10**400}, "sampling.top_p"),
        ({"seed": 2**63}, "sampling.seed"),
        ({"max_tokens": 2**32}, "sampling.max_tokens"),
    ],
)
def test_numbers_beyond_their_fields_are_named_not_500(sampling: Any, field: str) -> None:
    assert bad_fields({"model": "m", "prompt": "p", "sampling": sampling}) == [field]
