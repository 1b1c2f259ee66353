"""Connected nodes, their free slots and the jobs they run. Pure asyncio, no I/O.

A ``NodeSession`` exists from Welcome until its stream ends. ``reserve`` takes a slot before
a dispatch and the run's outcome gives it back; when a session ends every run on it resolves
as ``Lost``, so its jobs go back to the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opentelemetry.context import Context

from fleetwire.v1 import node_service_pb2 as nodes_pb2
from scheduler.matching import JobNeeds, NodeProfile, Standing, ineligibility, score
from scheduler.result_checks import StreamTally

Send = Callable[[nodes_pb2.NodeStreamResponse], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Lost:
    """The node went away (stream ended, lease ran out) before finishing."""

    reason: str
    lease_expired: bool = False


@dataclass(frozen=True, slots=True)
class DispatchTimedOut:
    """The node did not Accept within the dispatch timeout."""


Outcome = nodes_pb2.Result | nodes_pb2.Failure | nodes_pb2.Reject | Lost | DispatchTimedOut


@dataclass(eq=False)
class JobRun:
    """One attempt of one job on one node."""

    job_id: str
    attempt: int
    session: NodeSession | None = None  # the session it runs on; changes on a reconnect
    accepted: asyncio.Future[None] = field(default_factory=asyncio.Future)
    started: bool = False  # the node sent Accept (``accepted`` also resolves on any outcome)
    outcome: asyncio.Future[Outcome] = field(default_factory=asyncio.Future)
    stream: StreamTally = field(default_factory=lambda: StreamTally(limit=0))
    cancel_requested: bool = False  # the mesh asked the node to stop (client cancel, TTL)
    # The attempt's trace context (its dispatch span): what is done for it elsewhere (a
    # cancel, a refused chunk) is logged in the job's trace.
    trace: Context = field(default_factory=Context)

    def resolve(self, outcome: Outcome) -> None:
        if not self.accepted.done():
            self.accepted.set_result(None)
        if not self.outcome.done():
            self.outcome.set_result(outcome)


@dataclass(eq=False)
class NodeSession:
    """A node with a live, authenticated NodeStream."""

    node_id: str
    public_key: bytes
    key_id: str
    session_id: str
    routes: frozenset[str]
    slots: int
    send: Send
    runs: dict[tuple[str, int], JobRun] = field(default_factory=dict)
    reserved: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    draining: bool = False
    announced: frozenset[tuple[str, int]] = frozenset()  # Hello.running_jobs
    profile: NodeProfile = field(default_factory=lambda: NodeProfile(frozenset(), {}))
    recent_ttft_ms: deque[float] = field(default_factory=lambda: deque(maxlen=20))
    ended: bool = False  # forgotten by the registry: its stream is over
    dispatched: int = 0  # tenant jobs dispatched to it (what earns it validation jobs)
    close: Callable[[], object] | None = None  # ends the stream (set by the node service)

    @property
    def free_slots(self) -> int:
        return 0 if self.draining else max(0, self.slots - self.reserved)

    def run_of(self, job_id: str, attempt: int) -> JobRun | None:
        return self.runs.get((job_id, attempt))

    def runs_of_job(self, job_id: str) -> list[JobRun]:
        return [run for (jid, _), run in self.runs.items() if jid == job_id]


class NodeRegistry:
    """The scheduler's view of its connected nodes."""

    def __init__(
        self,
        excluded: Callable[[str], bool] = lambda _node_id: False,
        penalty_points: Callable[[str], float] = lambda _node_id: 0.0,
        *,
        reconnect_grace: float = 0.0,
        reputation: Callable[[str], float] = lambda _node_id: 0.5,
        on_probation: Callable[[str], bool] = lambda _node_id: False,
    ) -> None:
        self._excluded = excluded
        self._penalty_points = penalty_points
        self._reputation = reputation
        self._on_probation = on_probation
        self._reconnect_grace = reconnect_grace
        self._sessions: dict[str, NodeSession] = {}
        # Runs of nodes whose stream broke, waiting ``reconnect_grace`` for them to return.
        self._orphans: dict[str, dict[tuple[str, int], JobRun]] = {}
        self._capacity_changed = asyncio.Condition()
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Calls ``listener`` whenever nodes join or leave."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    @property
    def sessions(self) -> list[NodeSession]:
        return list(self._sessions.values())

    def get(self, node_id: str) -> NodeSession | None:
        return self._sessions.get(node_id)

    def add(self, session: NodeSession) -> None:
        """Registers ``session`` (remove the node's previous session first) and re-attaches
        the node's orphaned runs that it announced in Hello; the others are Lost."""
        self._sessions[session.node_id] = session
        orphans = self._orphans.pop(session.node_id, {})
        for key, run in orphans.items():
            if run.outcome.done():
                continue
            if key not in session.announced:
                run.resolve(Lost("node reconnected without the job"))
                continue
            old = run.session
            if old is not None:
                old.runs.pop(key, None)
                old.reserved = max(0, old.reserved - 1)
            run.session = session
            run.stream.gapped = True  # chunks sent into the broken stream are gone
            session.runs[key] = run
            session.reserved += 1
        self._changed()

    async def remove(
        self,
        session: NodeSession,
        reason: str,
        *,
        lease_expired: bool = False,
        keep_runs: bool = True,
    ) -> None:
        """Forgets ``session`` (if still current). Its runs wait ``reconnect_grace`` for the
        node to come back with them (a broken stream), or are Lost at once (lease ran out,
        no grace, or ``keep_runs`` false: the node will not be welcome back in time)."""
        self.discard(session, reason, lease_expired=lease_expired, keep_runs=keep_runs)
        await self._notify()

    def discard(
        self,
        session: NodeSession,
        reason: str,
        *,
        lease_expired: bool = False,
        keep_runs: bool = True,
    ) -> None:
        """``remove`` without waking the reservers: callable where nothing can be awaited
        (a done-callback of the stream's task). Once per session; later calls do nothing."""
        if session.ended:
            return
        session.ended = True
        if self._sessions.get(session.node_id) is session:
            del self._sessions[session.node_id]
            self._changed()
        runs = [run for run in session.runs.values() if not run.outcome.done()]
        if runs and keep_runs and self._reconnect_grace > 0 and not lease_expired:
            parked = self._orphans.setdefault(session.node_id, {})
            for run in runs:
                parked[(run.job_id, run.attempt)] = run
            asyncio.get_running_loop().call_later(
                self._reconnect_grace, self._expire_orphans, session.node_id, runs, reason
            )
        else:
            for run in runs:
                run.resolve(Lost(reason, lease_expired=lease_expired))

    def _expire_orphans(self, node_id: str, runs: list[JobRun], reason: str) -> None:
        parked = self._orphans.get(node_id, {})
        for run in runs:
            key = (run.job_id, run.attempt)
            if parked.get(key) is run:
                del parked[key]
                run.resolve(Lost(f"{reason}; not back within {self._reconnect_grace:g}s"))
        if not parked:
            self._orphans.pop(node_id, None)

    def routes(self) -> dict[str, int]:
        """Every route some node serves, with the total slots serving it."""
        totals: dict[str, int] = {}
        for session in self._sessions.values():
            for route in session.routes:
                totals[route] = totals.get(route, 0) + session.slots
        return totals

    def runs_job(self, job_id: str) -> bool:
        """Whether a node of this scheduler is running some attempt of ``job_id``."""
        return any(s.runs_of_job(job_id) for s in self._sessions.values()) or any(
            jid == job_id for runs in self._orphans.values() for (jid, _) in runs
        )

    def serves(self, route: str) -> bool:
        return any(route in s.routes for s in self._sessions.values())

    def eligible(self, route: str, needs: JobNeeds | None) -> list[NodeSession]:
        """Nodes on ``route`` that may run the job (free slot or not); a node on probation
        runs only the mesh's validation jobs (``reserve_on``)."""
        return [
            s
            for s in self._sessions.values()
            if route in s.routes
            and not s.draining
            and not self._excluded(s.node_id)
            and not self._on_probation(s.node_id)
            and (needs is None or ineligibility(s.profile, needs) is None)
        ]

    def why_not(self, route: str, needs: JobNeeds) -> list[str]:
        """For each node on ``route`` that may not run the job: ``node: REASON``."""
        reasons = []
        for s in self._sessions.values():
            if route not in s.routes:
                continue
            reason = ineligibility(s.profile, needs)
            if reason is None and self._excluded(s.node_id):
                reason = "EXCLUDED"
            if reason is None and self._on_probation(s.node_id):
                reason = "PROBATION"
            if reason is None and s.draining:
                reason = "DRAINING"
            if reason is not None:
                reasons.append(f"{s.node_id}: {reason}")
        return reasons

    def _standing(self, s: NodeSession) -> Standing:
        return Standing(
            slots=s.slots,
            free_slots=s.free_slots,
            penalty_points=self._penalty_points(s.node_id),
            recent_ttft_ms=list(s.recent_ttft_ms),
            reputation=self._reputation(s.node_id),
        )

    def _pick(self, route: str, needs: JobNeeds | None) -> NodeSession | None:
        candidates = [s for s in self.eligible(route, needs) if s.free_slots]
        return max(candidates, key=lambda s: score(self._standing(s)), default=None)

    async def reserve(
        self, route: str, *, wait: float, needs: JobNeeds | None = None
    ) -> NodeSession | None:
        """Takes a slot on the best eligible node serving ``route`` (by ``score``), waiting
        up to ``wait`` seconds for one to free up. None when there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        async with self._capacity_changed:
            while True:
                session = self._pick(route, needs)
                if session is not None:
                    session.reserved += 1
                    return session
                remaining = deadline - loop.time()
                if remaining <= 0 or not self.eligible(route, needs):
                    return None
                try:  # asyncio.timeout: wait_for can swallow a racing cancel on 3.11
                    async with asyncio.timeout(remaining):
                        await self._capacity_changed.wait()
                except TimeoutError:
                    return None

    def reserve_on(self, session: NodeSession) -> bool:
        """Takes a slot on this very session, if it is live and has one free (how the
        mesh's validation jobs reach the node they check). Give it back with ``release``."""
        if session.ended or self._sessions.get(session.node_id) is not session:
            return False
        if not session.free_slots:
            return False
        session.reserved += 1
        return True

    async def release(self, session: NodeSession) -> None:
        session.reserved = max(0, session.reserved - 1)
        await self._notify()

    async def _notify(self) -> None:
        async with self._capacity_changed:
            self._capacity_changed.notify_all()
