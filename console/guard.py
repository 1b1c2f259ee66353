"""What every console page and action goes through: the session (a login's operator key,
kept server-side), the origin and CSRF checks of a form post, the admin call made with the
session's key and how its refusals are shown, the rendering (Jinja2, autoescaped) and the
response headers. ``console.web`` builds the routes on it; docs/operations.md#console has
the whole security model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import grpc
import jinja2
import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import pages
from console.admin_client import AdminCallError, AdminClient
from console.formatting import FILTERS
from console.sessions import Session, SessionStore
from fleetwire.process.settings import ConsoleSettings

log = structlog.get_logger(__name__)

MAX_KEY_CHARS = 256
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
_STATUS = {
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
}


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every response (static files included)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, with_headers)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def safe_next(target: str | None) -> str:
    """A same-site path to go back to after the login; the overview otherwise."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/overview"


class ConsoleBase:
    """Sessions, checks, admin calls and rendering over an ``AdminClient`` and a
    ``SessionStore``. ``secure``: served over HTTPS (the cookie is then Secure and
    ``__Host-``). ``stopping`` ends the live streams when the server stops."""

    def __init__(
        self,
        settings: ConsoleSettings,
        admin: AdminClient,
        sessions: SessionStore,
        *,
        secure: bool,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._admin = admin
        self._sessions = sessions
        self._secure = secure
        self._stopping = stopping
        self._env = _environment()
        self.cookie = "__Host-fleetwire-console" if secure else "fleetwire-console"

    # --- rendering, sessions and errors ----------------------------------------------------

    def render(
        self,
        name: str,
        context: dict[str, Any],
        *,
        session: Session | None = None,
        status: int = 200,
        active: str = "",
    ) -> HTMLResponse:
        flashes = list(session.flashes) if session is not None else []
        if session is not None:
            session.flashes.clear()
        html = self._env.get_template(name).render(
            session=session, flashes=flashes, active=active, **context
        )
        return HTMLResponse(html, status_code=status)

    def _session(self, request: Request) -> Session | None:
        return self._sessions.get(request.cookies.get(self.cookie))

    def _to_login(self, request: Request, message: str = "") -> RedirectResponse:
        query = {"next": request.url.path}
        if message:
            query["message"] = message
        return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)

    def _calls(self, session: Session) -> pages.Calls:
        async def call(method: str, request: Any) -> Any:
            return await self._admin.call(method, request, session.operator_key)

        return call

    def _admin_error(
        self, request: Request, session: Session, err: AdminCallError, active: str
    ) -> Response:
        if err.code == grpc.StatusCode.UNAUTHENTICATED:
            # Revoked (or expired) while logged in: the session is worth nothing any more.
            self._sessions.close(session.session_id)
            return self._to_login(request, f"the mesh refused your operator key: {err.message}")
        status = _STATUS.get(err.code, 503)
        return self.render(
            "error.html",
            {"status": status, "code": err.code.name, "message": err.message, "reason": err.reason},
            session=session,
            status=status,
            active=active,
        )

    async def _page(
        self,
        request: Request,
        template: str,
        gather: Callable[[pages.Calls], Awaitable[dict[str, Any]]],
        active: str,
    ) -> Response:
        session = self._session(request)
        if session is None:
            return self._to_login(request)
        try:
            context = await gather(self._calls(session))
        except AdminCallError as err:
            return self._admin_error(request, session, err, active)
        return self.render(template, context, session=session, active=active)

    def _same_origin(self, request: Request) -> bool:
        """Whether a form post comes from a page of this console (Origin, else Referer)."""
        source = request.headers.get("origin") or request.headers.get("referer")
        if not source:
            return False
        parts = urlsplit(source)
        return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"

    async def _action(
        self,
        request: Request,
        act: Callable[[pages.Calls, dict[str, str]], Awaitable[tuple[str, str]]],
        back: str,
    ) -> Response:
        """A form post: session, origin and CSRF token checked, then ``act`` (the admin
        call) returns (where to go, what to say); a refusal is said on ``back``."""
        session = self._session(request)
        if session is None:
            return self._to_login(request)
        form = {k: str(v) for k, v in (await request.form()).multi_items()}
        if not self._same_origin(request) or not self._sessions.csrf_matches(
            session, form.get("csrf")
        ):
            log.warning("console form refused: origin or CSRF token", path=request.url.path)
            return PlainTextResponse("refused: not a form of this console session", 403)
        try:
            target, said = await act(self._calls(session), form)
        except AdminCallError as err:
            if err.code == grpc.StatusCode.UNAUTHENTICATED:
                return self._admin_error(request, session, err, "")
            session.flashes.append(("error", f"{err.code.name}: {err.message}"))
            return RedirectResponse(back, status_code=303)
        session.flashes.append(("ok", said))
        return RedirectResponse(target, status_code=303)
