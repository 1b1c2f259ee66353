"""``X-Request-Id`` on every HTTP request of the bridge (ASGI middleware).

The caller's own correlation id — or one made here when it sent none, or one that is not
1 to 128 visible ASCII characters (no spaces) — is bound to the log context as
``request_id`` for the whole request, a streamed answer included (so every log line of
the request carries it, as gRPC calls' lines carry their ``x-request-id``), and returned
in the ``X-Request-Id`` header of every response, errors and unknown paths included.
"""

from __future__ import annotations

import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetwire.messaging.topology import HEADER_REQUEST_ID

MAX_REQUEST_ID_CHARS = 128


def request_id_of(sent: str | None) -> str:
    """``sent`` when it is a usable id, else a new random one (32 hex digits)."""
    if sent and len(sent) <= MAX_REQUEST_ID_CHARS and all("!" <= c <= "~" for c in sent):
        return sent
    return uuid.uuid4().hex


class RequestIds:
    """Wraps an ASGI app; see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = request_id_of(Headers(scope=scope).get(HEADER_REQUEST_ID))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER_REQUEST_ID] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self._app(scope, receive, send_with_id)
