"""The console's routes (Starlette): pages rendered on the server with Jinja2, a
server-sent event stream for the overview's live part, the login, and form posts for the
actions (approve, revoke and replay, the last two behind a confirmation page).

Every route goes through ``console.guard``: a session (an operator key checked with
``WhoAmI`` at login and kept server-side; the browser holds a random id in an HttpOnly,
SameSite=Strict cookie), admin calls made with that operator's key (the scheduler's policy
and audit log apply), the origin and CSRF checks of every form post, and the response
headers (no framing, no inline scripts, no caching).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from console import pages
from console.admin_client import AdminCallError
from console.guard import MAX_KEY_CHARS, ConsoleBase, SecurityHeaders, safe_next
from fleetwire.v1 import job_pb2
from fleetwire.v1 import mesh_admin_service_pb2 as admin_pb2

log = structlog.get_logger(__name__)


class Console(ConsoleBase):
    """The console's routes: login, pages, the live stream and the actions."""

    def app(self) -> ASGIApp:
        routes = [
            Route("/", self.home),
            Route("/healthz", self.healthz),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/overview", self.overview),
            Route("/overview/live", self.overview_live),
            Route("/nodes", self.nodes),
            Route("/nodes/approve", self.approve_node, methods=["POST"]),
            Route("/nodes/{node_id}/revoke", self.revoke_confirm, methods=["GET"]),
            Route("/nodes/{node_id}/revoke", self.revoke_node, methods=["POST"]),
            Route("/jobs", self.jobs),
            Route("/jobs/{job_id}", self.job),
            Route("/dead-letters", self.dead_letters),
            Route("/dead-letters/{job_id}/replay", self.replay_confirm, methods=["GET"]),
            Route("/dead-letters/{job_id}/replay", self.replay, methods=["POST"]),
            Route("/tenants", self.tenants),
            Route("/audit", self.audit),
            Mount("/static", StaticFiles(packages=[("console", "static")]), name="static"),
        ]
        return SecurityHeaders(Starlette(routes=routes))

    # --- login -----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/overview", status_code=303)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def login_form(self, request: Request) -> Response:
        return self.render(
            "login.html",
            {
                "next": safe_next(request.query_params.get("next")),
                "message": request.query_params.get("message", ""),
            },
        )

    async def login(self, request: Request) -> Response:
        form = await request.form()
        target = safe_next(str(form.get("next", "")))
        key = str(form.get("operator_key", "")).strip()
        if not self._same_origin(request):
            return PlainTextResponse("refused: not the console's login form", 403)
        refused = ""
        if not key or len(key) > MAX_KEY_CHARS:
            refused = "enter an operator key (fwo_…)"
        else:
            try:
                who = await self._admin.call("WhoAmI", admin_pb2.WhoAmIRequest(), key)
            except AdminCallError as err:
                if err.code in (
                    grpc.StatusCode.UNAUTHENTICATED,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    refused = f"refused by the mesh: {err.message}"
                else:
                    return self.render(
                        "login.html",
                        {"next": target, "message": f"the admin port did not answer: {err}"},
                        status=503,
                    )
        if refused:
            log.info("console login refused", reason=refused)
            return self.render("login.html", {"next": target, "message": refused}, status=401)
        role = admin_pb2.OperatorRole.Name(who.role).removeprefix("OPERATOR_ROLE_").lower()
        old = request.cookies.get(self.cookie)
        self._sessions.close(old)  # a new login never keeps an old session id (fixation)
        session = self._sessions.open(key, name=who.name, key_id=who.key_id, role=role)
        log.info("console login", operator=who.name, key_id=who.key_id, role=role)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            self.cookie,
            session.session_id,
            max_age=int(self._settings.session_lifetime.total_seconds()),
            path="/",
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        if session is not None:
            form = await request.form()
            if not self._same_origin(request) or not self._sessions.csrf_matches(
                session, str(form.get("csrf", ""))
            ):
                return PlainTextResponse("refused: not a form of this console session", 403)
            self._sessions.close(session.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(self.cookie, path="/", secure=self._secure, httponly=True)
        return response

    # --- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        return await self._page(request, "overview.html", pages.overview, "overview")

    async def overview_live(self, request: Request) -> Response:
        """Server-sent events: the overview's live part, rendered again every
        FLEETWIRE_CONSOLE_REFRESH_INTERVAL while the session lasts."""
        session = self._session(request)
        if session is None:
            return PlainTextResponse("log in first", 401)
        session_id = session.session_id
        interval = self._settings.refresh_interval.total_seconds()
        fragment = self._env.get_template("_overview_live.html")

        async def events() -> AsyncIterator[str]:
            while not self._stopping.is_set():
                current = self._sessions.get(session_id)
                if current is None:
                    yield "event: expired\ndata: log in again\n\n"
                    return
                try:
                    html = fragment.render(**await pages.overview(self._calls(current)))
                except AdminCallError as err:
                    if err.code == grpc.StatusCode.UNAUTHENTICATED:
                        self._sessions.close(session_id)
                        yield "event: expired\ndata: log in again\n\n"
                        return
                    html = (
                        f'<p class="flash error">{err.code.name}: the admin port did not answer</p>'
                    )
                lines = "".join(f"data: {line}\n" for line in html.splitlines())
                yield f"event: overview\n{lines}\n"
                try:
                    async with asyncio.timeout(interval):
                        await self._stopping.wait()
                except TimeoutError:
                    continue

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def nodes(self, request: Request) -> Response:
        return await self._page(request, "nodes.html", pages.nodes, "nodes")

    async def jobs(self, request: Request) -> Response:
        params = request.query_params
        job_id = params.get("job_id", "").strip()
        if job_id:
            return RedirectResponse(f"/jobs/{job_id}", status_code=303)
        query = pages.JobQuery(
            tenant=params.get("tenant", ""),
            state=params.get("state", ""),
            node=params.get("node", ""),
            since=params.get("since", ""),
            until=params.get("until", ""),
            page=params.get("page", ""),
        )

        async def gather(call: pages.Calls) -> dict[str, Any]:
            try:
                return await pages.jobs(call, query)
            except ValueError as err:
                return {"jobs": [], "next_page": "", "query": query, "problem": str(err)}

        return await self._page(request, "jobs.html", gather, "jobs")

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]

        async def gather(call: pages.Calls) -> dict[str, Any]:
            return await pages.job(call, job_id)

        return await self._page(request, "job.html", gather, "jobs")

    async def dead_letters(self, request: Request) -> Response:
        return await self._page(request, "dead_letters.html", pages.dead_letters, "dead")

    async def tenants(self, request: Request) -> Response:
        return await self._page(request, "tenants.html", pages.tenants, "tenants")

    async def audit(self, request: Request) -> Response:
        target = request.query_params.get("target", "").strip()

        async def gather(call: pages.Calls) -> dict[str, Any]:
            return await pages.audit(call, target)

        return await self._page(request, "audit.html", gather, "audit")

    # --- actions ---------------------------------------------------------------------------

    async def approve_node(self, request: Request) -> Response:
        async def act(call: pages.Calls, form: dict[str, str]) -> tuple[str, str]:
            networks = [
                network
                for network, name in (
                    (job_pb2.NETWORK_TESTNET, "testnet"),
                    (job_pb2.NETWORK_MAINNET, "mainnet"),
                )
                if form.get(name)
            ]
            reply = await call(
                "ApproveNode",
                admin_pb2.ApproveNodeRequest(
                    node_id=form.get("node_id", ""),
                    key_id=form.get("key_id", ""),
                    networks=networks,
                ),
            )
            return "/nodes", f"approved node {reply.node_id} (key {reply.key_id})"

        return await self._action(request, act, "/nodes")

    async def revoke_confirm(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]

        async def gather(call: pages.Calls) -> dict[str, Any]:
            return {
                "title": f"Revoke node {node_id}?",
                "action": f"/nodes/{node_id}/revoke",
                "button": "Revoke the node's key",
                "cancel": "/nodes",
                "lines": [
                    "Its live session ends within the key-check interval, its next handshake "
                    "is refused and its results are no longer finalised.",
                    "Reinstating it takes a new registration (RegisterNode with replace).",
                ],
            }

        return await self._page(request, "confirm.html", gather, "nodes")

    async def revoke_node(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]

        async def act(call: pages.Calls, form: dict[str, str]) -> tuple[str, str]:
            await call("RevokeNode", admin_pb2.RevokeNodeRequest(node_id=node_id))
            return "/nodes", f"revoked node {node_id}"

        return await self._action(request, act, "/nodes")

    async def replay_confirm(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]

        async def gather(call: pages.Calls) -> dict[str, Any]:
            trail = await call("JobTrail", admin_pb2.JobTrailRequest(job_id=job_id))
            job = trail.job
            lines = [
                f"Job {job.job_id} of tenant {trail.tenant} "
                f"({job.spec.model}, {job.attempts} attempts) is dead-lettered: "
                f"{job.error.reason} {job.error.message}".strip(),
                "Replaying makes a new job with the same tenant and spec and a fresh TTL; "
                "the original stays DEAD_LETTERED and names its replacement. Once per dead "
                "letter; audited with your name.",
            ]
            if trail.replayed_as:
                lines.append(f"It was already replayed as {trail.replayed_as}.")
            return {
                "title": f"Replay dead letter {job_id}?",
                "action": f"/dead-letters/{job_id}/replay",
                "button": "Replay now",
                "cancel": "/dead-letters",
                "lines": lines,
            }

        return await self._page(request, "confirm.html", gather, "dead")

    async def replay(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]

        async def act(call: pages.Calls, form: dict[str, str]) -> tuple[str, str]:
            reply = await call("ReplayDeadLetter", admin_pb2.ReplayDeadLetterRequest(job_id=job_id))
            return f"/jobs/{reply.job.job_id}", f"replayed {job_id} as {reply.job.job_id}"

        return await self._action(request, act, "/dead-letters")
