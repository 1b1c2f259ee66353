"""A node's result becomes the job's final state: verified, stored and billed once."""

from __future__ import annotations

import uuid

from fleetwire.domain.states import JobState
from fleetwire.messaging.events import StateEvent
from fleetwire.process.coalescer import Coalescer
from fleetwire.process.settings import SchedulerSettings
from fleetwire.protocol import signing
from fleetwire.store.attempts import AttemptStore, SignedOutcome
from fleetwire.store.ledger import Prices
from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.progress_relay import ProgressRelay
from scheduler.registry import NodeSession


class Finaliser:
    """Verifies results and finalises the jobs they answer; results verified together are
    finalised (and billed) in one statement."""

    def __init__(
        self, settings: SchedulerSettings, attempts: AttemptStore, relay: ProgressRelay
    ) -> None:
        self._relay = relay
        self._finalisations: Coalescer[tuple[uuid.UUID, SignedOutcome, int], bool] = Coalescer(
            attempts.finalise_successes, name="finalisations"
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
        model: str,
        result: nodes_pb2.Result,
    ) -> bool | None:
        """Verifies ``result`` against the node's key and the job's request digest and, if
        it holds, makes the job SUCCEEDED. None: the signature does not verify; False: it
        does, but the job had moved on (a duplicate or a superseded attempt)."""
        facts = signing.ResultFacts(
            job_id=str(job_id),
            attempt=result.attempt,
            node_id=session.node_id,
            model=model,
            request_digest=digest,
            output_digest=signing.output_digest(result.output),
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            finished_at_unix_ms=result.finished_at_unix_ms,
        )
        if not signing.verify(session.public_key, signing.result_bytes(facts), result.signature):
            return None
        timings = result.timings
        usage = result.usage
        amount = self._prices.cost(usage.prompt_tokens, usage.completion_tokens)
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
        )
        finalised = await self._finalisations((job_id, outcome, amount))
        if finalised:
            self._relay.submit(str(job_id), StateEvent(JobState.SUCCEEDED))
            if timings.time_to_first_token_ms:
                session.recent_ttft_ms.append(timings.time_to_first_token_ms)
        return finalised
