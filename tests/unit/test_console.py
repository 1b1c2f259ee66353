"""The console's pure parts: sessions, the signature verdict, the throughput chart, the
jobs page's form, and how values are written."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from console.charts import throughput_chart
from console.formatting import credits, millis_between
from console.guard import safe_next
from console.pages import JobQuery, route_rows
from console.sessions import SessionStore
from console.signatures import SignatureCheck, check_signature
from fleetwire.protocol.signing import key_id
from fleetwire.v1 import job_pb2, job_service_pb2, mesh_admin_service_pb2
from tests.support.signing_vector import (
    FINISHED_AT_MS,
    OTHER_KEY,
    PUBLIC_KEY,
    vector_job,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock, max_sessions: int = 10) -> SessionStore:
    return SessionStore(idle=60, lifetime=600, max_sessions=max_sessions, clock=clock)


def test_a_session_ends_when_idle_and_after_its_lifetime_however_busy() -> None:
    clock = Clock()
    sessions = store(clock)
    idle = sessions.open("fwo_a", name="a", key_id="a", role="admin")
    busy = sessions.open("fwo_b", name="b", key_id="b", role="viewer")
    for _ in range(10):  # 590 s of use every 59 s keeps `busy` alive, not `idle`
        clock.now += 59
        assert sessions.get(busy.session_id) is busy
    assert sessions.get(idle.session_id) is None
    clock.now += 11  # 600 s after its login
    assert sessions.get(busy.session_id) is None
    assert len(sessions) == 0


def test_sessions_beyond_the_cap_push_out_the_least_recently_used() -> None:
    clock = Clock()
    sessions = store(clock, max_sessions=2)
    first = sessions.open("k1", name="1", key_id="1", role="viewer")
    second = sessions.open("k2", name="2", key_id="2", role="viewer")
    assert sessions.get(first.session_id) is first  # now `second` is the least recent
    sessions.open("k3", name="3", key_id="3", role="viewer")
    assert sessions.get(second.session_id) is None
    assert sessions.get(first.session_id) is first


def test_session_ids_and_csrf_tokens_are_fresh_and_checked_exactly() -> None:
    sessions = store(Clock())
    one = sessions.open("fwo_secret", name="n", key_id="i", role="admin")
    two = sessions.open("fwo_secret", name="n", key_id="i", role="admin")
    assert one.session_id != two.session_id
    assert one.csrf_token != two.csrf_token
    assert len(one.session_id) >= 40
    assert sessions.csrf_matches(one, one.csrf_token)
    assert not sessions.csrf_matches(one, two.csrf_token)
    assert not sessions.csrf_matches(one, "")
    assert not sessions.csrf_matches(one, None)
    assert "fwo_secret" not in repr(one)
    assert one.csrf_token not in repr(one)
    assert sessions.get("") is None
    assert sessions.get("nope") is None
    sessions.close(one.session_id)
    assert sessions.get(one.session_id) is None


def mesh_key(public: bytes = PUBLIC_KEY, revoked_ms: int = 0) -> job_service_pb2.NodeKey:
    key = job_service_pb2.NodeKey(key_id=key_id(public), public_key=public)
    if revoked_ms:
        key.revoked_at.FromMilliseconds(revoked_ms)
    return key


def test_a_result_verifies_only_with_the_mesh_key_of_its_node() -> None:
    job = vector_job()
    verdict = check_signature(job, [mesh_key()])
    assert verdict.check is SignatureCheck.VERIFIED
    assert verdict.verified
    assert verdict.names_mesh_key
    assert verdict.key is not None
    assert verdict.key.key_id == job.signature.key_id


def test_an_unknown_key_is_not_verified_even_when_the_result_is_self_consistent() -> None:
    # The job names its own key and verifies with it; the mesh has another key for the node.
    other = bytes(OTHER_KEY.verify_key)
    assert check_signature(vector_job(), [mesh_key(other)]).check is SignatureCheck.UNKNOWN_KEY
    assert check_signature(vector_job(), []).check is SignatureCheck.UNKNOWN_KEY


def test_a_changed_output_or_count_does_not_verify() -> None:
    job = vector_job()
    job.output += "!"
    assert check_signature(job, [mesh_key()]).check is SignatureCheck.INVALID
    job = vector_job()
    job.usage.completion_tokens += 1
    assert check_signature(job, [mesh_key()]).check is SignatureCheck.INVALID


def test_a_result_signed_after_its_key_was_revoked_is_not_verified() -> None:
    job = vector_job()
    revoked = check_signature(job, [mesh_key(revoked_ms=FINISHED_AT_MS)])
    assert revoked.check is SignatureCheck.KEY_REVOKED
    before = check_signature(job, [mesh_key(revoked_ms=FINISHED_AT_MS + 1)])
    assert before.check is SignatureCheck.VERIFIED


def test_a_job_without_a_signed_result_is_unsigned() -> None:
    job = vector_job()
    job.state = job_pb2.JOB_STATE_FAILED
    assert check_signature(job, [mesh_key()]).check is SignatureCheck.UNSIGNED
    assert check_signature(job_pb2.Job(), [mesh_key()]).check is SignatureCheck.UNSIGNED


def minute(start: datetime, **counts: int) -> mesh_admin_service_pb2.ThroughputMinute:
    m = mesh_admin_service_pb2.ThroughputMinute(**counts)
    m.start.FromDatetime(start)
    return m


def test_the_chart_stacks_each_minute_and_rates_failures() -> None:
    minutes = [
        minute(datetime(2026, 1, 1, 12, 0, tzinfo=UTC), succeeded=6, failed=1, expired=1),
        minute(datetime(2026, 1, 1, 12, 1, tzinfo=UTC)),
        minute(datetime(2026, 1, 1, 12, 2, tzinfo=UTC), succeeded=2, dead_lettered=2, cancelled=4),
    ]
    chart = throughput_chart(minutes)
    assert (chart.finished, chart.failed, chart.peak, chart.minutes) == (16, 4, 8, 3)
    assert chart.failure_rate == pytest.approx(0.25)
    assert chart.per_minute == pytest.approx(16 / 3)
    first, empty, last = chart.bars
    # The busiest minute fills the plot; segments stack bottom up without gaps.
    heights = [first.succeeded[1], first.failed[1], first.cancelled[1]]
    assert sum(heights) == pytest.approx(chart.plot_height)
    assert first.failed[0] + first.failed[1] == pytest.approx(first.succeeded[0])
    assert empty.succeeded[1] == empty.failed[1] == empty.cancelled[1] == 0
    assert last.cancelled[1] == pytest.approx(chart.plot_height / 2)
    assert last.label == "12:02 UTC: 2 succeeded, 2 failed, 4 cancelled"
    points = [tuple(map(float, p.split(","))) for p in chart.failure_line.split()]
    assert [round(chart.plot_height - y, 3) for _, y in points] == [
        round(chart.plot_height * r, 3) for r in (0.25, 0.0, 0.25)
    ]


def test_an_empty_window_draws_nothing_and_rates_zero() -> None:
    chart = throughput_chart([])
    assert chart.bars == []
    assert chart.failure_rate == 0
    assert chart.per_minute == 0


def test_queue_depths_become_one_row_per_route() -> None:
    depths = mesh_admin_service_pb2.QueueDepthsResponse(
        depths=[
            mesh_admin_service_pb2.RouteDepth(
                route="mainnet.m",
                priority=job_pb2.PRIORITY_CLASS_URGENT,
                waiting_jobs=2,
                queue_messages=5,
            ),
            mesh_admin_service_pb2.RouteDepth(
                route="mainnet.m",
                priority=job_pb2.PRIORITY_CLASS_BULK,
                waiting_jobs=3,
                queue_messages=5,
            ),
            mesh_admin_service_pb2.RouteDepth(
                route="testnet.m",
                priority=job_pb2.PRIORITY_CLASS_NORMAL,
                waiting_jobs=1,
            ),
        ]
    )
    rows = route_rows(depths)
    assert [(r.route, r.total, r.ready) for r in rows] == [("mainnet.m", 5, 5), ("testnet.m", 1, 0)]
    assert rows[0].waiting == {"urgent": 2, "normal": 0, "bulk": 3, "test": 0}


def test_the_jobs_form_becomes_a_list_jobs_request() -> None:
    request = JobQuery(
        tenant=" acme ", state="FAILED", node="n-1", since="2026-01-02T03:04", page="tok"
    ).request()
    assert request.tenant == "acme"
    assert request.node_id == "n-1"
    assert list(request.states) == [job_pb2.JOB_STATE_FAILED]
    assert request.created_after.ToDatetime(tzinfo=UTC) == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    assert not request.HasField("created_before")
    assert request.page_token == "tok"
    with pytest.raises(ValueError, match="state"):
        JobQuery(state="DONE").request()
    with pytest.raises(ValueError, match="created_before"):
        JobQuery(until="yesterday").request()
    assert JobQuery(tenant="a", page="p").without_page() == {"tenant": "a"}


def test_only_paths_of_this_site_are_gone_back_to_after_the_login() -> None:
    assert safe_next("/jobs/1") == "/jobs/1"
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "", None):
        assert safe_next(target) == "/overview"


def test_values_are_written_for_people() -> None:
    assert credits(-1_200) == "-0.001200"
    assert credits(12_345_678_901) == "12,345.678901"
    start, end = (
        mesh_admin_service_pb2.NodeView().connected_at,
        mesh_admin_service_pb2.NodeView().last_seen,
    )
    start.FromMilliseconds(1_000)
    end.FromMilliseconds(2_500)
    assert millis_between(start, end) == "1.500 s"
    end.FromMilliseconds(1_056)
    assert millis_between(start, end) == "56 ms"
    assert millis_between(start, mesh_admin_service_pb2.NodeView().last_seen) == "—"
