"""The bridge's HTTP port: uvicorn serving ``http_api.OpenAIApi`` over HTTPS with the
bridge's certificate (``FLEETWIRE_TLS_*``, re-read on SIGHUP), plain HTTP only under
``FLEETWIRE_TLS_INSECURE`` (warned by the bridge at start, as for its gRPC port).

Lifecycle: ``start`` (binds, returns once serving; ``port`` and ``url`` then say where),
``stop`` (idempotent: open requests get ``grace`` seconds, then are cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import structlog
import uvicorn
from starlette.applications import Starlette

from fleetwire.domain.errors import ConfigurationError

log = structlog.get_logger(__name__)

START_TIMEOUT = 15.0


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the bridge's lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpPort:
    """One uvicorn server in the bridge's event loop."""

    def __init__(
        self,
        app: Starlette,
        *,
        host: str,
        port: int,
        cert: tuple[Path, Path] | None,
        grace: float,
    ) -> None:
        self._app = app
        self._host = host
        self._wanted_port = port
        self._cert = cert
        self._grace = grace
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        shown = "localhost" if self._host in ("127.0.0.1", "localhost", "0.0.0.0") else self._host
        return f"{'https' if self._cert else 'http'}://{shown}:{self.port}/v1"

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            host=self._host,
            port=self._wanted_port,
            ssl_certfile=str(self._cert[0]) if self._cert else None,
            ssl_keyfile=str(self._cert[1]) if self._cert else None,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(1, int(self._grace)),
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(), name="bridge-http")
        async with asyncio.timeout(START_TIMEOUT):
            while not self._server.started:
                if self._task.done():
                    raise ConfigurationError(
                        f"the bridge's HTTP port could not listen on "
                        f"{self._host}:{self._wanted_port}"
                    )
                await asyncio.sleep(0.02)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        log.info("bridge HTTP serving", url=self.url, tls=self._cert is not None)

    def reload_tls(self) -> None:
        """Reads the certificate files again; new connections get the new certificate."""
        if self._server is None or self._server.config.ssl is None or self._cert is None:
            return
        try:
            self._server.config.ssl.load_cert_chain(str(self._cert[0]), str(self._cert[1]))
        except (OSError, ValueError) as err:
            log.error(
                "bridge HTTP certificate not reloaded; keeping the current one", error=str(err)
            )

    async def stop(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            async with asyncio.timeout(self._grace + 2):
                await task
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await task
        except SystemExit:  # uvicorn exits this way when it could not bind
            pass
