"""Validation (blind) jobs: the mesh asks nodes prompts whose answers it can check.

Which node is asked when:

- a node with fewer judged answers than ``validation_burst`` gets that many as soon as it
  connects (a newly approved node is checked before it earns anything);
- every tenant job dispatched to a node earns it one with probability
  ``validation_share`` — a draw, not a count, so a node cannot tell which of its jobs
  comes next;
- a node on probation (it answered wrongly and its reputation is below the floor) gets no
  tenant work and one validation job per ``probation_interval``, to earn its way back.

One validation job at a time per node, only into a free slot, and never to a node that
is excluded or draining. A job of a challenge nobody answered yet is also sent to a peer —
another node serving the model, the most reputable with a free slot — so two answers can
settle it at once; otherwise the challenge waits for the next node asked.

A validation job is a job of the mesh's own tenant (``mesh-validation``): written to
PostgreSQL, dispatched by the dispatcher exactly as a tenant job (the same Dispatch on the
same stream, signed, verified, finalised and paid to the node's owner), but straight to
the node it checks rather than through a route queue — it must reach that node, on
whichever replica holds it. Whatever the attempt's end, the job is then closed: judged
when it succeeded, FAILED (``VALIDATION_UNANSWERED``) otherwise (the attempt's own offence,
a reject or a timeout, was charged as for any job).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from fleetwire.domain.errors import BackendUnavailable
from fleetwire.domain.states import JobState
from fleetwire.messaging.topology import NETWORK_NAMES, Topology
from fleetwire.process.background import BackgroundTask
from fleetwire.process.settings import SchedulerSettings
from fleetwire.process.tracing import new_trace_id
from fleetwire.store.jobs import JobStore
from fleetwire.v1 import job_pb2
from scheduler.challenges import challenge_spec
from scheduler.dispatcher import Dispatcher
from scheduler.metrics import SchedulerMetrics
from scheduler.offences import Offences
from scheduler.penalties import Offence, PenaltyBox
from scheduler.registry import NodeRegistry, NodeSession
from scheduler.reputation import Reputations
from scheduler.validation_rules import Judgement, Verdict
from scheduler.validation_store import Asked, Standing, ValidationStore

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.5
_NETWORK_OF_NAME = {name: number for number, name in NETWORK_NAMES.items()}


@dataclass
class _Watch:
    """What the issuer knows of one live session."""

    dispatched_seen: int = 0
    owed: int = 0
    last_asked: float = 0.0
    busy: bool = False


class ValidationIssuer:
    """``start`` / ``stop``; ``tick`` runs one pass (tests drive it directly)."""

    def __init__(
        self,
        settings: SchedulerSettings,
        registry: NodeRegistry,
        penalties: PenaltyBox,
        dispatcher: Dispatcher,
        store: ValidationStore,
        jobs: JobStore,
        topology: Topology,
        offences: Offences,
        reputations: Reputations,
        metrics: SchedulerMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._penalties = penalties
        self._dispatcher = dispatcher
        self._store = store
        self._jobs = jobs
        self._topology = topology
        self._offences = offences
        self._reputations = reputations
        self._metrics = metrics
        self._rng = rng or random.SystemRandom()
        self._watches: dict[str, _Watch] = {}
        self._pending_welcome: set[str] = set()  # watched sessions whose standing is unread
        self._running: set[asyncio.Task[None]] = set()
        self._loop = BackgroundTask("validation-issuer", self._run)

    def start(self) -> None:
        self._loop.start()  # also with share and burst 0: an operator may ask (``owe``)

    async def stop(self) -> None:
        """Stops asking; validation jobs in flight are cancelled (their jobs end by their
        deadline: the reaper closes them)."""
        await self._loop.stop()
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def drain(self) -> None:
        """Waits for the validation jobs in flight (tests)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _run(self) -> None:
        while not self._loop.stopping:
            try:
                await self.tick()
            except BackendUnavailable as err:
                log.warning("validation paused; PostgreSQL unavailable", error=str(err))
            except Exception:  # the loop must outlive any one pass
                log.exception("validation pass failed")
            await asyncio.sleep(TICK_SECONDS)

    async def tick(self) -> None:
        """One pass over the live sessions: who is owed a validation job, and asking them."""
        sessions = {s.session_id: s for s in self._registry.sessions}
        for gone in set(self._watches) - set(sessions):
            del self._watches[gone]
            self._pending_welcome.discard(gone)
        now = time.monotonic()
        for session_id, session in sessions.items():
            watch = self._watches.get(session_id)
            if watch is None or session_id in self._pending_welcome:
                welcomed = await self._welcome(session)
                if watch is not None:  # an operator's jobs came first: keep them
                    welcomed.owed += watch.owed
                    self._pending_welcome.discard(session_id)
                watch = self._watches[session_id] = welcomed
            fresh = session.dispatched - watch.dispatched_seen
            watch.dispatched_seen = session.dispatched
            share = self._settings.validation_share
            watch.owed += sum(self._rng.random() < share for _ in range(fresh))
            probation = self._settings.probation_interval.total_seconds()
            if (
                self._reputations.on_probation(session.node_id)
                and now - watch.last_asked >= probation
            ):
                watch.owed = max(watch.owed, 1)
            if watch.owed and not watch.busy and self._may_ask(session):
                watch.owed -= 1
                watch.busy, watch.last_asked = True, now
                self._spawn(self._validate(session, watch))

    def owe(self, node_id: str, jobs: int) -> int | None:
        """Owes the node ``jobs`` more validation jobs (an operator's ValidateNode); how
        many it is owed now, or None when it is not connected to this replica."""
        session = self._registry.get(node_id)
        if session is None:
            return None
        watch = self._watches.get(session.session_id)
        if watch is None:  # not seen by a pass yet
            watch = self._watches[session.session_id] = _Watch(session.dispatched)
            self._pending_welcome.add(session.session_id)
        watch.owed += jobs
        return watch.owed

    async def standings(self, node_ids: list[str]) -> dict[str, Standing]:
        """The nodes' standings from PostgreSQL (also refreshing this replica's copy)."""
        standings = await self._store.standings(node_ids, self._settings.reputation_half_life)
        self._reputations.update(standings)
        return standings

    def on_probation(self, node_id: str) -> bool:
        return self._reputations.on_probation(node_id)

    async def _welcome(self, session: NodeSession) -> _Watch:
        """Reads the node's reputation; a node judged fewer times than the burst is owed
        the rest of it."""
        standings = await self._store.standings(
            [session.node_id], self._settings.reputation_half_life
        )
        self._reputations.update(standings)
        judged = self._reputations.standing(session.node_id).judged
        owed = max(0, self._settings.validation_burst - judged)
        return _Watch(dispatched_seen=session.dispatched, owed=owed)

    def _may_ask(self, session: NodeSession) -> bool:
        return (
            not session.ended
            and not session.draining
            and session.free_slots > 0
            and not self._penalties.is_excluded(session.node_id)
            and bool(session.profile.models)
        )

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="validation-job")
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _validate(self, session: NodeSession, watch: _Watch) -> None:
        try:
            model = self._rng.choice(sorted(session.profile.models))
            asked = await self._ask(session, model, None)
            if asked is None:
                return
            runs = [self._run_one(session, asked)]
            peer = self._peer(session, model) if asked.fresh else None
            if peer is not None:
                peer_asked = await self._ask(peer, model, asked.challenge_id)
                if peer_asked is not None:
                    runs.append(self._run_one(peer, peer_asked))
            await asyncio.gather(*runs)
        except BackendUnavailable as err:
            log.warning("validation job not run", node_id=session.node_id, error=str(err))
        except Exception:
            log.exception("validation job failed", node_id=session.node_id)
        finally:
            watch.busy = False

    async def _ask(
        self, session: NodeSession, model: str, challenge_id: uuid.UUID | None
    ) -> Asked | None:
        profile = session.profile
        network_name = self._rng.choice(sorted(profile.networks))
        subcloud = self._rng.choice(sorted(profile.subclouds)) if profile.subclouds else ""
        settings = self._settings
        return await self._store.ask(
            session.node_id,
            model=model,
            network=_NETWORK_OF_NAME[network_name],
            subcloud=subcloud,
            route_key=self._topology.route_key(network_name, model, subcloud),
            trace_id=new_trace_id(),
            max_answers=settings.validation_max_answers,
            new_spec=lambda: challenge_spec(
                model,
                job_pb2.NETWORK_MAINNET,
                max_tokens=settings.validation_max_tokens,
                ttl_seconds=int(settings.validation_ttl.total_seconds()),
                rng=self._rng,
            ),
            challenge_id=challenge_id,
            # A node still in its burst is checked against known answers first; a node with
            # a record helps settle the open challenges.
            settled_first=self._reputations.standing(session.node_id).judged
            < settings.validation_burst,
        )

    def _peer(self, asked: NodeSession, model: str) -> NodeSession | None:
        """The most reputable other node serving ``model`` with a free slot and in good
        standing: a second answer for a new challenge."""
        peers = [
            s
            for s in self._registry.sessions
            if s.node_id != asked.node_id
            and model in s.profile.models
            and self._may_ask(s)
            and not self._reputations.on_probation(s.node_id)
            and not self._busy(s)
        ]
        return max(peers, key=lambda s: self._reputations.score(s.node_id), default=None)

    def _busy(self, session: NodeSession) -> bool:
        watch = self._watches.get(session.session_id)
        return watch is not None and watch.busy

    async def _run_one(self, session: NodeSession, asked: Asked) -> None:
        node_id = session.node_id
        if self._registry.reserve_on(session):
            await self._dispatcher.run_reserved(session, asked.envelope(), asked.trace_id)
            judgement = await self._store.answer(
                asked,
                node_id,
                agreement=self._settings.validation_agreement,
                max_answers=self._settings.validation_max_answers,
            )
        else:
            judgement = None
        if judgement is None:
            await self._jobs.end_job(
                asked.job_id,
                JobState.FAILED,
                reason="VALIDATION_UNANSWERED",
                message="the node did not answer the validation job",
            )
            self._metrics.validations.labels("unanswered").inc()
            return
        await self._judged(judgement, asked, node_id)

    async def _judged(self, judgement: Judgement, asked: Asked, node_id: str) -> None:
        if not judgement.verdicts:
            self._metrics.validations.labels("undecided").inc()
            log.info(
                "validation answer not judged yet",
                node_id=node_id,
                challenge_id=str(asked.challenge_id),
                status=judgement.status.value,
            )
            return
        for judged, verdict in judgement.verdicts.items():
            self._metrics.validations.labels(verdict.value.lower()).inc()
            log.info(
                "validation answer judged",
                node_id=judged,
                verdict=verdict.value,
                challenge_id=str(asked.challenge_id),
            )
            if verdict is Verdict.WRONG:
                job_id = asked.job_id if judged == node_id else None
                await self._offences.charge(judged, Offence.WRONG_ANSWER, job_id, None)
        with contextlib.suppress(BackendUnavailable):
            self._reputations.update(
                await self._store.standings(
                    list(judgement.verdicts), self._settings.reputation_half_life
                )
            )
