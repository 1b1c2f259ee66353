"""What ``ListJobs`` filters on and where a page starts: pure logic, no I/O.

A page token is the position after the last job of a page — its acceptance time and id,
the order of the listing — plus a fingerprint of the filters it was made for, so a token
asked with other filters is refused instead of silently skipping jobs. Tokens are opaque
to callers (URL-safe base64) but not secret: they hold nothing a viewer may not see.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleetwire.domain.errors import FieldViolation, InvalidArgument
from fleetwire.domain.states import JobState
from fleetwire.domain.validation import NODE_ID
from fleetwire.store.tenants import TENANT_PATTERN

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """The jobs a listing covers; None (or empty ``states``) does not filter."""

    tenant: str | None = None
    states: tuple[JobState, ...] = ()
    node_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def fingerprint(self) -> str:
        """A short digest of the filters, the same for equal filters in any state order."""
        canonical = json.dumps(
            [
                self.tenant,
                sorted(s.value for s in self.states),
                self.node_id,
                self.created_after.isoformat() if self.created_after else None,
                self.created_before.isoformat() if self.created_before else None,
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class PageStart:
    """Jobs strictly older than this, in (created_at, job_id) order, make the next page."""

    created_at: datetime
    job_id: uuid.UUID


def job_filter(
    *,
    tenant: str,
    states: list[JobState],
    node_id: str,
    created_after: datetime | None,
    created_before: datetime | None,
) -> JobFilter:
    """The filter of a request's fields ("" is no filter); INVALID_ARGUMENT naming each bad
    field."""
    bad = []
    if tenant and not TENANT_PATTERN.match(tenant):
        bad.append(FieldViolation("tenant", f"must match {TENANT_PATTERN.pattern}"))
    if node_id and not NODE_ID.match(node_id):
        bad.append(FieldViolation("node_id", f"must match {NODE_ID.pattern}"))
    if created_after and created_before and created_after >= created_before:
        bad.append(FieldViolation("created_after", "must be before created_before"))
    if bad:
        raise InvalidArgument(bad)
    return JobFilter(
        tenant=tenant or None,
        states=tuple(sorted(set(states))),
        node_id=node_id or None,
        created_after=created_after,
        created_before=created_before,
    )


def page_size(asked: int) -> int:
    """Jobs per page: ``asked``, or the default for 0; INVALID_ARGUMENT above the cap."""
    if asked > MAX_PAGE_SIZE:
        raise InvalidArgument([FieldViolation("page_size", f"at most {MAX_PAGE_SIZE}")])
    return asked or DEFAULT_PAGE_SIZE


def page_token(jobs_filter: JobFilter, start: PageStart) -> str:
    """The token of the page that begins after ``start``, for ``jobs_filter``."""
    payload = json.dumps(
        {
            "t": (start.created_at - _EPOCH) // _MICROSECOND,
            "j": str(start.job_id),
            "f": jobs_filter.fingerprint(),
        },
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def page_start(jobs_filter: JobFilter, token: str) -> PageStart | None:
    """Where the page of ``token`` begins; None for the first page (no token).
    INVALID_ARGUMENT for a token this listing did not make, or made for other filters."""
    if not token:
        return None
    invalid = InvalidArgument([FieldViolation("page_token", "not a page token of ListJobs")])
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fields = json.loads(raw)
        micros, job_id, fingerprint = int(fields["t"]), uuid.UUID(fields["j"]), fields["f"]
        created_at = _EPOCH + micros * _MICROSECOND
    except (ValueError, TypeError, KeyError, OverflowError) as err:
        raise invalid from err
    if fingerprint != jobs_filter.fingerprint():
        raise InvalidArgument(
            [FieldViolation("page_token", "made for other filters; ask the first page again")]
        )
    return PageStart(created_at=created_at, job_id=job_id)
