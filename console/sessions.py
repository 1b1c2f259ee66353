"""Console sessions, kept in the console process's memory: the browser holds only a random
session id (an HttpOnly, SameSite=Strict cookie, Secure over HTTPS); the operator key it
stands for never leaves the server again after the login form. Pure bookkeeping, no I/O."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Session:
    """One logged-in operator. ``operator_key`` goes with every admin call the session
    makes; ``csrf_token`` must come back with every form it posts."""

    session_id: str
    operator_key: str = field(repr=False)
    name: str
    key_id: str
    role: str  # "viewer" or "admin", as WhoAmI said at login
    csrf_token: str = field(repr=False)
    opened: float
    last_used: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)

    @property
    def may_act(self) -> bool:
        """Whether to offer actions; the scheduler decides whether they are allowed."""
        return self.role == "admin"


class SessionStore:
    """Sessions by id. A session ends when unused for ``idle`` seconds, ``lifetime``
    seconds after its login, on ``close``, or when ``max_sessions`` newer ones push it out
    (the least recently used goes first)."""

    def __init__(
        self,
        *,
        idle: float,
        lifetime: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle
        self._lifetime = lifetime
        self._max = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, operator_key: str, *, name: str, key_id: str, role: str) -> Session:
        """A new session with fresh, unguessable session id and CSRF token."""
        now = self._clock()
        session = Session(
            session_id=secrets.token_urlsafe(32),
            operator_key=operator_key,
            name=name,
            key_id=key_id,
            role=role,
            csrf_token=secrets.token_urlsafe(32),
            opened=now,
            last_used=now,
        )
        self._sessions[session.session_id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of ``session_id`` (marked used now); None when there is none
        or it has ended."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_used > self._idle or now - session.opened > self._lifetime:
            del self._sessions[session_id]
            return None
        session.last_used = now
        self._sessions.move_to_end(session_id)
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def csrf_matches(self, session: Session, token: str | None) -> bool:
        """Whether a posted form carries the session's CSRF token (constant-time)."""
        return bool(token) and secrets.compare_digest(session.csrf_token, str(token))
