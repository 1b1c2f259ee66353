"""From an AMQP delivery to a final job: reserve, dispatch, follow, settle, ack.

What the node sends arrives through ``scheduler.node_messages``; results are verified and
finalised by ``scheduler.finalisation``; what becomes of a job after an attempt is decided
by ``scheduler.settlement`` and only executed here.

The delivery stays unacked until the job is final in PostgreSQL (or handed back), so a
scheduler that dies at any point leaves the message to be redelivered; the guarded updates
of the store make the redelivery finalise nothing twice.

Tracing: a delivery is handled in the job's trace, continued from the message's
``traceparent`` (the bridge's ``publish`` span). Its first dispatch records ``queue wait``
(from acceptance, a start time of the past, to that dispatch); each attempt is a
``dispatch`` span (from the Dispatch sent to the attempt settled) whose ``traceparent``
the Dispatch carries, so the node's ``run`` span is its child, as are the result's
``verify`` and ``finalise`` (``scheduler.finalisation``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import aiormq.abc
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.domain.states import JobState
from fleetwire.messaging.events import JobEvents, StateEvent
from fleetwire.messaging.topology import HEADER_RETRIES
from fleetwire.process.coalescer import Coalescer
from fleetwire.process.settings import SchedulerSettings
from fleetwire.process.tracing import attached, current_trace_id, traceparent_of, within_trace
from fleetwire.store.attempts import AttemptStore, OpenedAttempt
from fleetwire.store.jobs import JobStore
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.finalisation import Finaliser, ResultVerdict
from scheduler.job_spans import delivery_context, dispatch_span, note_ending, record_queue_wait
from scheduler.matching import JobNeeds
from scheduler.metrics import SchedulerMetrics
from scheduler.offences import Offences
from scheduler.progress_relay import ProgressRelay
from scheduler.registry import (
    DispatchTimedOut,
    JobRun,
    Lost,
    NodeRegistry,
    NodeSession,
    Outcome,
)
from scheduler.result_checks import StreamTally, max_output_bytes
from scheduler.settlement import (
    AttemptOutcome,
    Ending,
    RetryPolicy,
    Settlement,
    Step,
    give_up,
    settle,
)

log = structlog.get_logger(__name__)


class Action(Enum):
    """What the consumer does with the AMQP delivery once an attempt is over."""

    ACK = "ack"  # the job is settled (or not ours to run)
    REQUEUE = "requeue"  # back to its queue at once (node lost, no slot): not a failure
    RETRY_STAGE = "retry-stage"  # republish to retry stage ``stage``, then ack
    DEAD_LETTER = "dead-letter"  # park in the dead-letters queue, then ack


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    stage: int = 0
    reason: str = ""


@dataclass
class Reservation:
    """The session holding a reserved slot; it changes when the node reconnects mid-job."""

    session: NodeSession


ACK = Verdict(Action.ACK)
REQUEUE = Verdict(Action.REQUEUE)

_RESULT_ENDINGS = {
    ResultVerdict.FINALISED: Ending.SUCCEEDED,
    ResultVerdict.MOVED_ON: Ending.SUCCEEDED,  # final already, or not ours to settle
    ResultVerdict.BAD_SIGNATURE: Ending.BAD_SIGNATURE,
    ResultVerdict.INVALID: Ending.INVALID_RESULT,
}
_NEXT_STATE = {
    Step.FAIL: JobState.FAILED,
    Step.RETRY_STAGED: JobState.RETRYING,
    Step.REQUEUE: JobState.RETRYING,
    Step.DEAD_LETTER: JobState.DEAD_LETTERED,
}


class Dispatcher:
    """Runs each delivered job through one attempt on a connected node."""

    def __init__(
        self,
        settings: SchedulerSettings,
        scheduler_id: str,
        store: JobStore,
        attempts: AttemptStore,
        events: JobEvents,
        registry: NodeRegistry,
        relay: ProgressRelay,
        finaliser: Finaliser,
        offences: Offences,
        metrics: SchedulerMetrics,
    ) -> None:
        self._metrics = metrics
        self._settings = settings
        self._retry_policy = RetryPolicy(
            max_attempts=settings.max_attempts, stages=len(settings.retry_delays)
        )
        self._scheduler_id = scheduler_id
        self._store = store
        self._attempts = attempts
        self._events = events
        self._registry = registry
        self._relay = relay
        self._finaliser = finaliser
        self._offences = offences
        # Deliveries arriving together begin their attempts in one statement.
        self._begin: Coalescer[tuple[uuid.UUID, str], OpenedAttempt | None] = Coalescer(
            lambda items: attempts.begin_attempts(items, scheduler_id), name="begin-attempts"
        )
        # ... and record the RUNNING of accepted attempts in one statement.
        self._running: Coalescer[tuple[uuid.UUID, int], bool] = Coalescer(
            attempts.mark_running_many, name="mark-running"
        )

    # -- deliveries -------------------------------------------------------------------

    async def handle_delivery(self, route: str, message: aiormq.abc.DeliveredMessage) -> Verdict:
        """Runs the delivered job in its trace (log lines carry its trace id)."""
        envelope = job_pb2.Job()
        envelope.ParseFromString(message.body)
        headers = message.header.properties.headers or {}
        with attached(delivery_context(headers)):
            return await self._deliver(route, envelope, headers)

    async def _deliver(
        self, route: str, envelope: job_pb2.Job, headers: Mapping[str, Any]
    ) -> Verdict:
        job_id = envelope.job_id
        retries = headers.get(HEADER_RETRIES, 0)
        retries = retries if isinstance(retries, int) else 0
        bound = log.bind(job_id=job_id, route=route)

        if self._registry.runs_job(job_id):
            # A duplicate of a delivery we are running right now (a double publish, or a
            # redelivery racing the original): the original settles the job.
            bound.info("duplicate delivery of a running job; dropping it")
            return ACK
        expires_at = envelope.expires_at.ToDatetime(tzinfo=UTC)
        if expires_at <= datetime.now(UTC):
            # Per-message TTL is enforced only at the queue head; check again here.
            await self._end(job_id, JobState.EXPIRED, "TTL_EXPIRED", "TTL ran out while queued")
            return ACK

        needs = JobNeeds.from_spec(envelope.spec)
        session = await self._registry.reserve(
            route, wait=self._settings.defer_delay.total_seconds(), needs=needs
        )
        if session is None:
            if not self._registry.eligible(route, needs):
                why = "; ".join(self._registry.why_not(route, needs)) or "no node"
                bound.info("no eligible node; deferring", why=why)
                await self._store.note_deferral(
                    uuid.UUID(job_id), f"no connected node can run it ({why})"
                )
            else:
                bound.info("no free slot; deferring")
            await asyncio.sleep(self._settings.defer_delay.total_seconds())
            return REQUEUE
        session.dispatched += 1
        reservation = Reservation(session)
        try:
            return await self._attempt(reservation, envelope, expires_at, retries, bound)
        finally:
            await self._registry.release(reservation.session)

    async def run_reserved(
        self, session: NodeSession, envelope: job_pb2.Job, trace_id: str
    ) -> None:
        """Runs one attempt of the job on ``session``, whose slot the caller took with
        ``NodeRegistry.reserve_on``, and gives the slot back: how the mesh's validation jobs
        reach the node they check. The node sees the same Dispatch as for any job; what
        becomes of the job after the attempt is the caller's (no queue to retry it through).
        The attempt's spans join trace ``trace_id`` (the job row's)."""
        expires_at = envelope.expires_at.ToDatetime(tzinfo=UTC)
        reservation = Reservation(session)
        try:
            with attached(within_trace(trace_id)):
                bound = log.bind(job_id=envelope.job_id, validation=True)
                await self._attempt(reservation, envelope, expires_at, 0, bound, queued=False)
        finally:
            await self._registry.release(reservation.session)

    async def _attempt(
        self,
        reservation: Reservation,
        envelope: job_pb2.Job,
        expires_at: datetime,
        retries: int,
        bound: structlog.typing.FilteringBoundLogger,
        *,
        queued: bool = True,
    ) -> Verdict:
        job_id = envelope.job_id
        session = reservation.session
        opened = await self._begin((uuid.UUID(job_id), session.node_id))
        if opened is None:
            bound.info("job is final or unknown; dropping delivery")
            return ACK
        attempt = opened.number
        if opened.tries > self._settings.max_attempts:
            # Attempts that ended without an outcome (a crash in between) count too; those a
            # node rejected do not (one node rejecting eight times must not bury a job: its
            # TTL bounds how long it goes round).
            decision = give_up(opened.tries, AttemptOutcome.LOST, "no attempt finished")
            return await self._execute(
                decision, session.node_id, uuid.UUID(job_id), attempt, envelope.spec, bound
            )
        await self._publish_state(job_id, JobState.DISPATCHED)
        ttl = envelope.spec.ttl.ToTimedelta()
        if (
            queued and attempt == 1 and ttl
        ):  # accepted at expires_at - ttl (the bridge applied the TTL)
            accepted_at, now = expires_at - ttl, datetime.now(UTC)
            self._metrics.queue_wait.observe(max(0.0, (now - accepted_at).total_seconds()))
            record_queue_wait(job_id, accepted_at, now)
        with dispatch_span(job_id, attempt, session.node_id, envelope.spec.model):
            return await self._dispatch(reservation, envelope, opened, expires_at, retries, bound)

    async def _dispatch(
        self,
        reservation: Reservation,
        envelope: job_pb2.Job,
        opened: OpenedAttempt,
        expires_at: datetime,
        retries: int,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Verdict:
        """Sends the Dispatch (its traceparent: the current ``dispatch`` span), follows the
        attempt and settles it."""
        job_id, session = envelope.job_id, reservation.session
        run = JobRun(
            job_id=job_id,
            attempt=opened.number,
            session=session,
            stream=StreamTally(limit=max_output_bytes(envelope.spec)),
            trace=otel_context.get_current(),
        )
        session.runs[(job_id, opened.number)] = run
        marking: list[asyncio.Task[None]] = []  # the RUNNING write, owned by this delivery
        try:
            return await self._run_attempt(
                reservation, envelope, opened, expires_at, retries, bound, run, marking
            )
        finally:
            await asyncio.gather(*marking, return_exceptions=True)

    async def _run_attempt(
        self,
        reservation: Reservation,
        envelope: job_pb2.Job,
        opened: OpenedAttempt,
        expires_at: datetime,
        retries: int,
        bound: structlog.typing.FilteringBoundLogger,
        run: JobRun,
        marking: list[asyncio.Task[None]],
    ) -> Verdict:
        job_id, session = envelope.job_id, reservation.session
        attempt, digest = opened.number, opened.request_digest
        try:
            dispatch = nodes_pb2.Dispatch(
                job_id=job_id,
                attempt=attempt,
                spec=envelope.spec,
                request_digest=digest,
                trace_id=current_trace_id(),
                traceparent=traceparent_of(),
            )
            dispatch.deadline.FromDatetime(expires_at)
            await session.send(nodes_pb2.NodeStreamResponse(dispatch=dispatch))
            bound.debug("dispatched", node_id=session.node_id, attempt=attempt)
            outcome = await self._follow(run, expires_at, marking)
        except Exception as err:  # the stream broke while sending
            outcome = Lost(f"dispatch failed: {err}")
        finally:
            # After a reconnect the run lives on the node's new session.
            session = run.session or session
            reservation.session = session
            session.runs.pop((job_id, attempt), None)
        await self._relay.caught_up(job_id)
        if outcome is None:
            run.cancel_requested = True
            with contextlib.suppress(Exception):  # best effort: the node may be gone
                await session.send(
                    nodes_pb2.NodeStreamResponse(
                        cancel=nodes_pb2.Cancel(
                            job_id=job_id, attempt=attempt, reason="TTL expired"
                        )
                    )
                )
            decision = settle(
                Ending.DEADLINE_PASSED,
                attempt=attempt,
                stages_passed=retries,
                policy=self._retry_policy,
            )
            note_ending(Ending.DEADLINE_PASSED)
            return await self._execute(
                decision, session.node_id, uuid.UUID(job_id), attempt, envelope.spec, bound
            )
        return await self._settle(
            session, run, opened.tries, digest, envelope, outcome, retries, bound
        )

    async def _follow(
        self, run: JobRun, expires_at: datetime, marking: list[asyncio.Task[None]]
    ) -> Outcome | None:
        """Waits for Accept (dispatch timeout) and then the outcome (until the job's
        deadline). None when the deadline passed first. RUNNING is written beside the wait
        (a task appended to ``marking``, which the caller awaits before it returns), not
        before it: a result that comes during that commit is settled at once. Either order
        of the two commits is right — RUNNING is guarded on DISPATCHED, and the final
        state may follow DISPATCHED or RUNNING."""
        try:
            await asyncio.wait_for(
                asyncio.shield(run.accepted), self._settings.dispatch_timeout.total_seconds()
            )
        except TimeoutError:
            return DispatchTimedOut()
        trace.get_current_span().add_event("accepted")
        if run.started and not run.outcome.done():
            # A result already in hand makes the job final next: RUNNING would be a write
            # nobody can observe (DISPATCHED -> SUCCEEDED is a legal move).
            marking.append(
                asyncio.create_task(self._mark_running(run), name=f"running-{run.job_id}")
            )
        remaining = (expires_at - datetime.now(UTC)).total_seconds()
        try:
            return await asyncio.wait_for(asyncio.shield(run.outcome), max(remaining, 0.001))
        except TimeoutError:
            return None

    async def _mark_running(self, run: JobRun) -> None:
        """Records that the node accepted the attempt. Best effort: a job may go from
        DISPATCHED straight to its final state, so a backend hiccup here costs nothing."""
        try:
            moved = await self._running((uuid.UUID(run.job_id), run.attempt))
        except BackendUnavailable:
            log.warning("RUNNING not recorded", job_id=run.job_id, attempt=run.attempt)
            return
        except Exception:  # never mistake a running job for a lost one
            log.exception("RUNNING not recorded", job_id=run.job_id, attempt=run.attempt)
            return
        if moved:  # not when the final state was committed first
            await self._publish_state(run.job_id, JobState.RUNNING)

    async def _settle(
        self,
        session: NodeSession,
        run: JobRun,
        tries: int,
        digest: bytes,
        envelope: job_pb2.Job,
        outcome: Outcome,
        retries: int,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Verdict:
        """Classifies how the attempt ended (verifying and finalising a result on the
        way), lets ``settlement.settle`` decide, and executes the decision."""
        job_id, attempt = run.job_id, run.attempt
        jid = uuid.UUID(job_id)
        reason = message = ""
        if isinstance(outcome, nodes_pb2.Result):
            verdict = await self._finaliser.finalise(
                session, jid, digest, envelope.spec, outcome, streamed=run.stream
            )
            if verdict is ResultVerdict.FINALISED:
                bound.info("job succeeded", node_id=session.node_id, attempt=attempt)
            ending = _RESULT_ENDINGS[verdict]
        elif isinstance(outcome, nodes_pb2.Failure):
            reason, message = outcome.reason, outcome.message
            if outcome.reason == "CANCELLED" and run.cancel_requested:
                ending = Ending.CANCELLED  # the job was already made CANCELLED by the bridge
            elif outcome.reason == "CANCELLED":
                ending = Ending.NODE_CANCELLED  # nobody asked: run it elsewhere
            else:
                ending = Ending.FAILED_RETRYABLE if outcome.retryable else Ending.FAILED
        elif isinstance(outcome, nodes_pb2.Reject):
            ending, reason = Ending.REJECTED, outcome.reason
        elif isinstance(outcome, DispatchTimedOut):
            ending = Ending.DISPATCH_TIMEOUT
        else:
            ending = Ending.LEASE_EXPIRED if outcome.lease_expired else Ending.LOST
            reason = outcome.reason
        note_ending(ending, reason)
        decision = settle(
            ending,
            # A rejected attempt is not a try: the job goes round again whatever the count.
            attempt=tries - 1 if ending is Ending.REJECTED else tries,
            stages_passed=retries,
            policy=self._retry_policy,
            reason=reason,
            message=message,
        )
        if ending in (Ending.BAD_SIGNATURE, Ending.INVALID_RESULT):
            bound.warning("bad result; penalising node", node_id=session.node_id, why=ending.value)
        elif ending in (Ending.LOST, Ending.LEASE_EXPIRED):
            bound.warning("node lost mid-job; requeueing", node_id=session.node_id, why=reason)
        return await self._execute(decision, session.node_id, jid, attempt, envelope.spec, bound)

    async def _execute(
        self,
        decision: Settlement,
        node_id: str,
        job_id: uuid.UUID,
        attempt: int,
        spec: job_pb2.JobSpec,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> Verdict:
        """Carries out a settlement: charges the offence, ends the attempt with the job's
        next state, announces it, and tells the consumer what to do with the delivery. A
        job that moved on meanwhile (cancelled, expired) is only acked."""
        if decision.offence is not None:
            await self._offences.charge(node_id, decision.offence, job_id, attempt)
        if decision.step is Step.ACK:
            return ACK
        if decision.step is Step.EXPIRE:
            await self._end(str(job_id), JobState.EXPIRED, decision.reason, decision.message)
            self._metrics.finished("EXPIRED", decision.reason, spec)
            return ACK
        state = _NEXT_STATE[decision.step]
        moved = await self._attempts.end_attempt(
            job_id,
            attempt,
            attempt_outcome=str(decision.attempt_outcome),
            job_state=state,
            reason=decision.reason,
            message=decision.message,
        )
        if not moved:
            return ACK  # the job moved on meanwhile: nothing to retry or record
        await self._publish_state(str(job_id), state)
        if state in (JobState.FAILED, JobState.DEAD_LETTERED):
            self._metrics.finished(state.value, decision.reason, spec)
        if decision.step is Step.FAIL:
            bound.info("job failed", reason=decision.reason)
            return ACK
        if decision.step is Step.DEAD_LETTER:
            bound.warning("job dead-lettered", attempts=attempt, last_error=decision.last_error)
            return Verdict(Action.DEAD_LETTER, reason=decision.last_error)
        if decision.step is Step.REQUEUE:
            self._metrics.retries.labels("0").inc()
            return REQUEUE
        self._metrics.retries.labels(str(decision.stage + 1)).inc()
        bound.info("retrying after a delay", stage=decision.stage + 1, reason=decision.reason)
        return Verdict(Action.RETRY_STAGE, stage=decision.stage, reason=decision.reason)

    async def _end(self, job_id: str, state: JobState, reason: str, message: str) -> None:
        row = await self._store.end_job(uuid.UUID(job_id), state, reason=reason, message=message)
        if row is not None and row["state"] == state:
            await self._publish_state(job_id, state)

    async def _publish_state(self, job_id: str, state: JobState) -> None:
        """Queues the (committed) state change for the job's event stream; the relay
        writes it in a batch with others."""
        self._relay.submit(job_id, StateEvent(state))
