"""ListJobs's filters and page tokens (scheduler/job_pages.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fleetwire.domain.errors import InvalidArgument
from fleetwire.domain.states import JobState
from scheduler.job_pages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    JobFilter,
    PageStart,
    job_filter,
    page_size,
    page_start,
    page_token,
)


def fields(err: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in err.value.violations]


def test_a_token_brings_back_the_exact_position_for_the_same_filters() -> None:
    jobs = JobFilter(tenant="acme", states=(JobState.FAILED, JobState.EXPIRED))
    start = PageStart(datetime(2026, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC), uuid.uuid4())
    token = page_token(jobs, start)
    assert page_start(jobs, token) == start
    # The same filters in another order are the same filters.
    same = JobFilter(tenant="acme", states=(JobState.EXPIRED, JobState.FAILED))
    assert page_start(same, token) == start
    assert "=" not in token
    assert "/" not in token
    assert "+" not in token


def test_no_token_is_the_first_page() -> None:
    assert page_start(JobFilter(), "") is None


def test_a_token_for_other_filters_is_refused() -> None:
    token = page_token(JobFilter(tenant="a"), PageStart(datetime.now(UTC), uuid.uuid4()))
    with pytest.raises(InvalidArgument, match="other filters") as err:
        page_start(JobFilter(tenant="b"), token)
    assert fields(err) == ["page_token"]


@pytest.mark.parametrize("token", ["x", "bm90IGpzb24", "eyJ0IjoxfQ", "e30", "!!!"])
def test_a_token_not_made_by_the_listing_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        page_start(JobFilter(), token)
    assert fields(err) == ["page_token"]


def test_filters_are_checked_field_by_field() -> None:
    later = datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(InvalidArgument) as err:
        job_filter(
            tenant="Not A Tenant",
            states=[],
            node_id="no/such",
            created_after=later,
            created_before=datetime(2026, 1, 1, tzinfo=UTC),
        )
    assert fields(err) == ["tenant", "node_id", "created_after"]
    ok = job_filter(
        tenant="",
        states=[JobState.FAILED, JobState.FAILED],
        node_id="",
        created_after=None,
        created_before=later,
    )
    assert ok == JobFilter(states=(JobState.FAILED,), created_before=later)


def test_page_size_defaults_and_caps() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(MAX_PAGE_SIZE) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        page_size(MAX_PAGE_SIZE + 1)
