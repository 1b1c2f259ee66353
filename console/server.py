"""The console's server: uvicorn serving ``console.web`` over HTTPS with the servers'
certificate (``FLEETWIRE_TLS_*``, re-read on SIGHUP), plain HTTP only when
``FLEETWIRE_TLS_INSECURE`` asks for it and only on a loopback address.

Lifecycle: ``start`` (binds, returns once serving; ``port`` and ``url`` then say where),
``stop`` (idempotent: ends the live streams, lets open requests finish within
FLEETWIRE_CONSOLE_STOP_GRACE, closes the admin channel). Signals are the caller's:
``run_console`` stops on SIGINT/SIGTERM like the other services.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Iterator

import structlog
import uvicorn

from console.admin_client import AdminClient
from console.sessions import SessionStore
from console.web import Console
from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.lifecycle import wait_for_stop_signal
from fleetwire.process.settings import Settings

log = structlog.get_logger(__name__)

START_TIMEOUT = 15.0


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process's lifecycle owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ConsoleServer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        group = settings.console
        tls = settings.tls
        if tls.insecure:
            if not _loopback(group.host):
                raise ConfigurationError(
                    "the console serves plain HTTP only on a loopback address "
                    f"(FLEETWIRE_CONSOLE_HOST={group.host}); give it a certificate "
                    "(FLEETWIRE_TLS_CERT_FILE, FLEETWIRE_TLS_KEY_FILE)"
                )
            log.warning(
                "console serving PLAIN HTTP: FLEETWIRE_TLS_INSECURE is set; operator keys "
                "and session cookies cross the connection unencrypted",
                host=group.host,
            )
        elif tls.cert_file is None or tls.key_file is None:
            raise ConfigurationError(
                "the console serves HTTPS only: set FLEETWIRE_TLS_CERT_FILE and "
                "FLEETWIRE_TLS_KEY_FILE (`fleetwire certs` makes them for a dev mesh), or "
                "FLEETWIRE_TLS_INSECURE=true for plain HTTP on this machine"
            )
        self.secure = not tls.insecure
        self._stopping = asyncio.Event()
        self.admin = AdminClient(group)
        self.sessions = SessionStore(
            idle=group.session_idle.total_seconds(),
            lifetime=group.session_lifetime.total_seconds(),
            max_sessions=group.max_sessions,
        )
        self._console = Console(
            group, self.admin, self.sessions, secure=self.secure, stopping=self._stopping
        )
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = self._settings.console.host
        shown = "localhost" if host in ("127.0.0.1", "localhost") else host
        return f"{'https' if self.secure else 'http'}://{shown}:{self.port}/"

    async def start(self) -> None:
        group = self._settings.console
        tls = self._settings.tls
        self.admin.start()
        config = uvicorn.Config(
            self._console.app(),
            host=group.host,
            port=group.port,
            ssl_certfile=str(tls.cert_file) if self.secure else None,
            ssl_keyfile=str(tls.key_file) if self.secure else None,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(1, int(group.stop_grace.total_seconds())),
        )
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(), name="console-http")
        async with asyncio.timeout(START_TIMEOUT):
            while not self._server.started:
                if self._task.done():
                    await self.admin.close()
                    raise ConfigurationError(
                        f"the console could not listen on {group.host}:{group.port}"
                    )
                await asyncio.sleep(0.02)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        log.info("console serving", url=self.url, admin=group.admin_address, tls=self.secure)

    def reload_tls(self) -> None:
        """Reads the certificate files again; new connections get the new certificate."""
        tls = self._settings.tls
        if self._server is None or self._server.config.ssl is None:
            return
        try:
            self._server.config.ssl.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ValueError) as err:
            log.error(
                "console TLS certificate not reloaded; keeping the current one", error=str(err)
            )
            return
        log.info("console TLS certificate reloaded", cert=str(tls.cert_file))

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            grace = self._settings.console.stop_grace.total_seconds() + 2
            try:
                async with asyncio.timeout(grace):
                    await self._task
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, SystemExit):
                    await self._task
            except SystemExit:  # uvicorn exits this way when it could not bind
                pass
        self._server = None
        self._task = None
        await self.admin.close()
        log.info("console stopped")


async def run_console(settings: Settings) -> None:
    """Runs the console until SIGINT/SIGTERM (SIGHUP re-reads its certificate)."""
    server = ConsoleServer(settings)
    await server.start()
    try:
        await wait_for_stop_signal(on_reload=server.reload_tls)
    finally:
        await server.stop()


def main() -> None:
    from fleetwire.process.logs import configure_logging
    from fleetwire.process.settings import load_settings

    settings = load_settings()
    configure_logging(level=settings.mesh.log_level, json=settings.mesh.log_json, process="console")
    asyncio.run(run_console(settings))
