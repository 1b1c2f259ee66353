"""A node's result becomes the job's final state: checked, verified, stored and billed once.

The order is the cheap and certain first: every field is checked against the job's spec
(``result_checks``: nothing a node sends reaches the coalesced statement unchecked), then
the signature, then one statement finalises and bills every result verified meanwhile. The
bill is for the token counts the spec allows, not for whatever the node signed.

Two spans of the job's trace, children of the current one (the attempt's ``dispatch``):
``verify`` (the checks and the signature) and ``finalise`` (the statement, the offences of a
result that verified but claimed too much, the SUCCEEDED event).
"""

from __future__ import annotations

import enum
import time
import uuid

import structlog
from opentelemetry.trace import Span, Status, StatusCode

from fleetwire.domain.states import JobState
from fleetwire.messaging.events import StateEvent
from fleetwire.process.coalescer import Coalescer
from fleetwire.process.settings import SchedulerSettings
from fleetwire.process.tracing import tracer
from fleetwire.protocol import signing
from fleetwire.store.attempts import AttemptStore, SignedOutcome
from fleetwire.store.ledger import Bill, Prices
from fleetwire.v1 import job_pb2
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.metrics import SchedulerMetrics
from scheduler.offences import Offences
from scheduler.penalties import Offence
from scheduler.progress_relay import ProgressRelay
from scheduler.registry import NodeSession
from scheduler.result_checks import StreamTally, billable_usage, result_problem
from scheduler.token_counts import TokenCounter

log = structlog.get_logger(__name__)


class ResultVerdict(enum.Enum):
    """What became of a result."""

    FINALISED = "finalised"  # the job is SUCCEEDED with it (and billed)
    MOVED_ON = "moved-on"  # it verified, but the job had moved on (a duplicate, a stale attempt)
    BAD_SIGNATURE = "bad-signature"  # the signature does not verify
    INVALID = "invalid"  # a field no honest node sends (checked, or refused by the database)


class Finaliser:
    """Checks and verifies results and finalises the jobs they answer; results verified
    together are finalised (and billed) in one statement."""

    def __init__(
        self,
        settings: SchedulerSettings,
        attempts: AttemptStore,
        relay: ProgressRelay,
        offences: Offences,
        metrics: SchedulerMetrics,
        counter: TokenCounter | None = None,
    ) -> None:
        self._metrics = metrics
        self._counter = counter
        self._relay = relay
        self._offences = offences
        self._finalisations: Coalescer[tuple[uuid.UUID, SignedOutcome, Bill], bool | None] = (
            Coalescer(attempts.finalise_successes, name="finalisations")
        )
        self._prices = Prices(
            per_1k_prompt_tokens=settings.price_per_1k_prompt_tokens,
            per_1k_completion_tokens=settings.price_per_1k_completion_tokens,
        )

    async def finalise(
        self,
        session: NodeSession,
        job_id: uuid.UUID,
        digest: bytes,
        spec: job_pb2.JobSpec,
        result: nodes_pb2.Result,
        *,
        streamed: StreamTally | None = None,
    ) -> ResultVerdict:
        """Checks ``result`` against ``spec``, verifies it against the node's key and the
        job's request digest and, if both hold, makes the job SUCCEEDED. An invalid result
        is the caller's to settle (the node's offence); a usage claim above what the spec
        allows is billed at the cap, and a stream (``streamed``) that is not the signed
        output is charged here."""
        attributes: dict[str, str | int] = {
            "fleetwire.job_id": str(job_id),
            "fleetwire.attempt": result.attempt,
        }
        with tracer().start_as_current_span("verify", attributes=attributes) as span:
            verdict = self._verify(session, job_id, digest, spec, result)
            if verdict is not None:
                return _noted(span, verdict)
        with tracer().start_as_current_span("finalise", attributes=attributes) as span:
            return _noted(span, await self._finalise(session, job_id, spec, result, streamed))

    def _verify(
        self,
        session: NodeSession,
        job_id: uuid.UUID,
        digest: bytes,
        spec: job_pb2.JobSpec,
        result: nodes_pb2.Result,
    ) -> ResultVerdict | None:
        """INVALID or BAD_SIGNATURE when the result fails a check; None when it holds."""
        problem = result_problem(result, spec, now_ms=int(time.time() * 1000))
        if problem is not None:
            log.warning(
                "invalid result",
                job_id=str(job_id),
                attempt=result.attempt,
                node_id=session.node_id,
                problem=problem,
            )
            return ResultVerdict.INVALID
        usage = result.usage
        facts = signing.ResultFacts(
            job_id=str(job_id),
            attempt=result.attempt,
            node_id=session.node_id,
            model=spec.model,
            request_digest=digest,
            output_digest=signing.output_digest(result.output),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            finished_at_unix_ms=result.finished_at_unix_ms,
        )
        if not signing.verify(session.public_key, signing.result_bytes(facts), result.signature):
            return ResultVerdict.BAD_SIGNATURE
        return None

    async def _finalise(
        self,
        session: NodeSession,
        job_id: uuid.UUID,
        spec: job_pb2.JobSpec,
        result: nodes_pb2.Result,
        streamed: StreamTally | None,
    ) -> ResultVerdict:
        """Makes the job SUCCEEDED with a verified result (and bills it) unless it moved on."""
        usage = result.usage
        counted = self._counter.counted(spec, result.output) if self._counter else None
        billed = billable_usage(usage, spec, counted)
        matched = streamed.matches(result.output) if streamed is not None else None
        timings = result.timings
        outcome = SignedOutcome(
            attempt=result.attempt,
            node_id=session.node_id,
            output=result.output,
            finish_reason=result.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            timings={
                "queue_ms": timings.queue_ms,
                "time_to_first_token_ms": timings.time_to_first_token_ms,
                "total_ms": timings.total_ms,
                "tokens_per_second": timings.tokens_per_second,
            },
            signature=bytes(result.signature),
            public_key=session.public_key,
            key_id=session.key_id,
            finished_at_ms=result.finished_at_unix_ms,
            stream_check=None if matched is None else ("MATCHED" if matched else "MISMATCHED"),
        )
        bill = Bill.of(self._prices, billed.prompt_tokens, billed.completion_tokens, billed.source)
        finalised = await self._finalisations((job_id, outcome, bill))
        if finalised is None:
            return ResultVerdict.INVALID
        if billed.inflated:
            log.warning(
                "usage claim above what the spec allows; billed at the cap",
                job_id=str(job_id),
                node_id=session.node_id,
                claimed=[usage.prompt_tokens, usage.completion_tokens],
                billed=[billed.prompt_tokens, billed.completion_tokens],
            )
            await self._offences.charge(
                session.node_id, Offence.INFLATED_USAGE, job_id, result.attempt
            )
        if matched is False:
            log.warning("streamed text is not the signed output", job_id=str(job_id))
            await self._offences.charge(
                session.node_id, Offence.STREAM_MISMATCH, job_id, result.attempt
            )
        if not finalised:
            return ResultVerdict.MOVED_ON
        self._relay.submit(str(job_id), StateEvent(JobState.SUCCEEDED))
        self._metrics.finished("SUCCEEDED", "", spec)
        self._metrics.duration.observe(timings.total_ms / 1000)
        self._metrics.first_token.observe(timings.time_to_first_token_ms / 1000)
        if timings.time_to_first_token_ms:
            session.recent_ttft_ms.append(timings.time_to_first_token_ms)
        return ResultVerdict.FINALISED


def _noted(span: Span, verdict: ResultVerdict) -> ResultVerdict:
    """Records the verdict on its span; INVALID and BAD_SIGNATURE are errors."""
    span.set_attribute("fleetwire.verdict", verdict.value)
    if verdict in (ResultVerdict.INVALID, ResultVerdict.BAD_SIGNATURE):
        span.set_status(Status(StatusCode.ERROR, verdict.value))
    return verdict
