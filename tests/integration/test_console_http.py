"""The console's security rules over HTTP, in-process (httpx on the ASGI app), against this
run's real scheduler admin port: the cookie's flags and the response headers, forms from
another origin or without the session's token refused, the scheduler's policy deciding
what a viewer may do, and a revoked operator key ending its console session."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from console.admin_client import AdminClient
from console.sessions import SessionStore
from console.web import Console
from fleetwire.process.settings import ConsoleSettings, Settings
from fleetwire.store.db import open_pool
from fleetwire.store.operators import OperatorStore, Role
from scheduler.server import SchedulerServer
from tests.conftest import free_port
from tests.support.eventually import eventually

ORIGIN = "https://console.test"


@pytest.fixture
async def web(scheduler: SchedulerServer) -> AsyncIterator[httpx.AsyncClient]:
    group = ConsoleSettings(admin_address=f"127.0.0.1:{scheduler.admin_port}", admin_insecure=True)
    admin = AdminClient(group)
    admin.start()
    sessions = SessionStore(idle=60, lifetime=600, max_sessions=10)
    app = Console(group, admin, sessions, secure=True, stopping=asyncio.Event()).app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ORIGIN) as client:
        yield client
    await admin.close()


async def operator(settings: Settings, role: Role, name: str) -> tuple[str, str]:
    """(key, key id) of a new operator."""
    pool = await open_pool(settings.postgres)
    try:
        issued = await OperatorStore(pool).create_key(name, role, actor="tests")
    finally:
        await pool.close()
    return issued.secret, issued.operator.key_id


async def login(web: httpx.AsyncClient, key: str) -> httpx.Response:
    return await web.post(
        "/login", data={"operator_key": key, "next": "/nodes"}, headers={"origin": ORIGIN}
    )


def csrf_of(page: str) -> str:
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


async def test_the_session_cookie_and_the_pages_are_locked_down(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    key, _ = await operator(settings, Role.ADMIN, "console-http-admin")
    answer = await login(web, key)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/nodes"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-fleetwire-console=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    assert key not in cookie, "the browser never holds the operator key"
    page = await web.get("/nodes")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert '<script src="/static/console.js"' in page.text
    assert key not in page.text


async def test_forms_from_elsewhere_or_without_the_token_are_refused(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    key, _ = await operator(settings, Role.ADMIN, "console-http-forms")
    assert (await login(web, key)).status_code == 303
    # The login form too must come from the console's own origin.
    other = await web.post(
        "/login", data={"operator_key": key}, headers={"origin": "https://evil.example"}
    )
    assert other.status_code == 403
    token = csrf_of((await web.get("/nodes")).text)
    form: dict[str, Any] = {"node_id": "console-http-none", "key_id": "0" * 16}
    for data, origin in (
        ({**form, "csrf": token}, "https://evil.example"),  # right token, other site
        ({**form}, ORIGIN),  # no token
        ({**form, "csrf": token + "x"}, ORIGIN),  # wrong token
    ):
        refused = await web.post("/nodes/approve", data=data, headers={"origin": origin})
        assert refused.status_code == 403, (data, origin)
    # With both, the action reaches the scheduler (which finds no such request).
    sent = await web.post(
        "/nodes/approve", data={**form, "csrf": token}, headers={"origin": ORIGIN}
    )
    assert sent.status_code == 303
    assert "NOT_FOUND" in (await web.get("/nodes")).text


async def test_the_scheduler_decides_what_a_viewer_may_do(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    key, _ = await operator(settings, Role.VIEWER, "console-http-viewer")
    assert (await login(web, key)).status_code == 303
    page = await web.get("/nodes")
    assert "(viewer," in page.text
    assert 'class="approve"' not in page.text, "no actions offered to a viewer"
    # Posted anyway, with the session's own token: the admin port refuses it.
    token = csrf_of(page.text)
    await web.post(
        "/nodes/approve",
        data={"node_id": "console-http-none", "key_id": "0" * 16, "csrf": token},
        headers={"origin": ORIGIN},
    )
    assert "PERMISSION_DENIED" in (await web.get("/nodes")).text


async def test_a_wrong_key_is_refused_and_a_revoked_one_ends_its_session(
    web: httpx.AsyncClient, settings: Settings
) -> None:
    refused = await login(web, "fwo_000000000000_" + "A" * 43)
    assert refused.status_code == 401
    assert "refused by the mesh" in refused.text
    assert "set-cookie" not in refused.headers
    tenant_like = await login(web, "fwk_000000000000_" + "A" * 43)
    assert tenant_like.status_code == 401

    key, key_id = await operator(settings, Role.ADMIN, "console-http-revoked")
    assert (await login(web, key)).status_code == 303
    assert (await web.get("/overview")).status_code == 200
    pool = await open_pool(settings.postgres)
    try:
        assert await OperatorStore(pool).revoke_key(key_id, actor="tests")
    finally:
        await pool.close()

    async def sent_to_login() -> bool:
        page = await web.get("/overview")
        return page.status_code == 303 and page.headers["location"].startswith("/login")

    ttl = settings.scheduler.admin_cache_ttl.total_seconds()
    await eventually(sent_to_login, within=ttl + 3, what="the revoked key's session ended")
    # The session is gone for good, not only refused once.
    assert (await web.get("/nodes")).headers["location"].startswith("/login")


async def test_an_admin_port_that_does_not_answer_is_said_so_and_nothing_happens() -> None:
    group = ConsoleSettings(
        admin_address=f"127.0.0.1:{free_port()}", admin_insecure=True, admin_timeout=1
    )
    admin = AdminClient(group)
    admin.start()
    app = Console(
        group,
        admin,
        SessionStore(idle=60, lifetime=600, max_sessions=10),
        secure=True,
        stopping=asyncio.Event(),
    ).app()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=ORIGIN
        ) as client:
            answer = await login(client, "fwo_000000000000_" + "A" * 43)
            assert answer.status_code == 503
            assert "the admin port did not answer" in answer.text
            assert "set-cookie" not in answer.headers
            assert (await client.get("/healthz")).text == "ok"
    finally:
        await admin.close()
