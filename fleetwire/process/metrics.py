"""Prometheus metrics of one process (prometheus-client), served on its metrics port.

Each server has a registry of its own, so several in one process (the in-process test
meshes) never collide. The endpoint is plain HTTP when the process serves plaintext and
HTTPS with the process's own certificate otherwise (``FLEETWIRE_TLS_*``): like the gRPC
ports, never plaintext by accident. Names follow Prometheus conventions (``fleetwire_``
prefix, ``_total`` counters, base units); labels are bounded (model, priority, network,
state, reason, offence — never job or tenant ids).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from fleetwire.process.settings import TlsSettings

log = structlog.get_logger(__name__)

VERSION = "0.1.0"


class MetricsEndpoint:
    """A registry and the HTTP(S) server that exposes it. Lifecycle: ``start`` (returns the
    bound port; 0 asks for any free one), ``stop`` (idempotent)."""

    def __init__(self, component: str) -> None:
        self.registry = CollectorRegistry()
        self.component = component
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        build = Gauge(
            "fleetwire_build_info",
            "Always 1; the labels say which build of which component runs.",
            ["version", "component"],
            registry=self.registry,
        )
        build.labels(VERSION, component).set(1)

    def start(self, host: str, port: int, tls: TlsSettings) -> int:
        secure = not tls.insecure and tls.cert_file is not None and tls.key_file is not None
        self._server, self._thread = start_http_server(
            port,
            addr=host,
            registry=self.registry,
            certfile=str(tls.cert_file) if secure else None,
            keyfile=str(tls.key_file) if secure else None,
        )
        bound = int(self._server.server_port)
        log.info("metrics serving", component=self.component, port=bound, tls=secure)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
