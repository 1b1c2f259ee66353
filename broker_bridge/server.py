"""The bridge process: its backing connections, its gRPC server and its HTTP port (the
OpenAI-compatible API, ``http_api``), started and stopped in a fixed order (connections →
gRPC server → HTTP port; HTTP port → gRPC server → connections)."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import structlog

from broker_bridge.admission import Admission, QueueDepthGauge, TenantRateLimiter
from broker_bridge.auth import Authenticator
from broker_bridge.batch_desk import BatchDesk
from broker_bridge.desk import JobDesk
from broker_bridge.final_notices import FinalNotices
from broker_bridge.http_api import OpenAIApi, ServedModels
from broker_bridge.http_server import HttpPort
from broker_bridge.idempotency import RequestLocks
from broker_bridge.metrics import BridgeMetrics
from broker_bridge.outbox import Outbox
from broker_bridge.service import JobService
from broker_bridge.unsettled import UnsettledRows
from broker_bridge.watch_slots import WatchSlots
from fleetwire.domain.errors import BackendUnavailable
from fleetwire.messaging.amqp import AmqpLink
from fleetwire.messaging.events import JobEvents, connect_redis
from fleetwire.messaging.publisher import JobPublisher
from fleetwire.messaging.topology import Topology
from fleetwire.process.lifecycle import wait_for_stop_signal
from fleetwire.process.metrics import MetricsEndpoint
from fleetwire.process.settings import Settings
from fleetwire.rpc.server import start_server
from fleetwire.rpc.telemetry import GrpcServerMetrics
from fleetwire.rpc.tls import server_tls
from fleetwire.store.batches import BatchStore
from fleetwire.store.db import open_pool
from fleetwire.store.jobs import JobStore
from fleetwire.store.node_keys import NodeKeys
from fleetwire.store.nodes import NodeStore
from fleetwire.store.outbox import OutboxStore
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import job_service_pb2, job_service_pb2_grpc

log = structlog.get_logger(__name__)

SERVICE_NAME = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name


class BridgeServer:
    """Start, serve, stop. ``stop`` is idempotent and lets in-flight calls finish within
    ``grace`` seconds."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._server: grpc.aio.Server | None = None
        self._pool: asyncpg.Pool | None = None
        self._link = AmqpLink(settings.rabbitmq.url.get_secret_value())
        self._redis = connect_redis(
            settings.redis.url.get_secret_value(), max_connections=settings.redis.max_connections
        )
        topology = Topology.of(settings)
        self._publisher = JobPublisher(
            self._link, topology, confirm_timeout=settings.rabbitmq.publish_timeout
        )
        self._gauge = QueueDepthGauge(
            self._link, topology, max_age=settings.bridge.queue_depth_cache
        )
        self._unsettled = UnsettledRows()
        self._finals: FinalNotices | None = None
        self._outbox: Outbox | None = None
        self.port = 0
        self.metrics = MetricsEndpoint("bridge")
        self._grpc_metrics = GrpcServerMetrics(self.metrics.registry)
        self.metrics_port = 0
        self.tls = server_tls(settings.tls, server="bridge")
        self.http: HttpPort | None = None

    async def start(self) -> None:
        self._pool = await open_pool(self._settings.postgres)
        try:
            channel = await self._link.channel()
            await Topology.of(self._settings).declare_base(channel)
            await channel.close()
        except BackendUnavailable:
            log.warning("rabbitmq not reachable at start; will retry on first submit")
        events = JobEvents(
            self._redis,
            self._settings.mesh.namespace,
            maxlen=self._settings.redis.stream_maxlen,
            ttl=self._settings.redis.stream_ttl,
            finished_retention=self._settings.redis.finished_stream_retention,
        )
        namespace = self._settings.mesh.namespace
        store = JobStore(self._pool)
        admission = Admission(
            TenantRateLimiter(self._redis, namespace),
            self._gauge,
            self._settings.bridge,
            waiting_of=store.waiting_jobs_of_tenant,
            balance_of=TenantStore(self._pool).balance_of,
        )
        locks = RequestLocks(self._redis, namespace, lease=self._settings.bridge.request_lock_lease)
        await self._unsettled.start()
        outbox_store = OutboxStore(self._pool)
        self._outbox = Outbox(
            outbox_store,
            self._publisher,
            lease=self._settings.bridge.outbox_lease,
            sweep=self._settings.bridge.outbox_sweep,
            withdrawing=self._unsettled.covered_jobs,
        )
        await self._outbox.start()
        self._finals = FinalNotices(self._redis, events.final_channel)
        await self._finals.start()
        desk = JobDesk(
            self._settings,
            store,
            self._publisher,
            events,
            admission,
            locks,
            self._unsettled,
            self._finals,
            self._outbox,
            outbox_store,
        )
        batches = BatchDesk(
            self._settings,
            store,
            BatchStore(self._pool),
            self._publisher,
            admission,
            locks,
            desk,
            self._unsettled,
            self._outbox,
        )
        auth = Authenticator(TenantStore(self._pool), self._settings.bridge)
        # One of each for both front doors: a tenant's Watch streams and SSE answers share
        # its slots, and both count into the same metrics.
        watches = WatchSlots(self._settings.bridge.max_watches_per_tenant)
        bridge_metrics = BridgeMetrics(
            self.metrics.registry, per_tenant=self._settings.bridge.tenant_metrics
        )
        servicer = JobService(
            desk, batches, auth, watches, NodeKeys(NodeStore(self._pool)), bridge_metrics
        )
        address = f"{self._settings.bridge.host}:{self._settings.bridge.port}"
        serving = await start_server(
            address,
            [SERVICE_NAME],
            lambda server: job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, server),
            self.tls,
            metrics=self._grpc_metrics,
        )
        self._server, self.port = serving.server, serving.port
        log.info("bridge serving", address=address, port=self.port, tls=self.tls is not None)
        bridge = self._settings.bridge
        if bridge.http_enabled:
            api = OpenAIApi(
                self._settings,
                desk,
                batches,
                auth,
                watches,
                bridge_metrics,
                ServedModels(self._redis, namespace, self._settings.mesh.models),
            )
            self.http = HttpPort(
                api.app(),
                host=bridge.http_host,
                port=bridge.http_port,
                cert=(
                    (self._settings.tls.cert_file, self._settings.tls.key_file)
                    if self.tls is not None
                    and self._settings.tls.cert_file is not None
                    and self._settings.tls.key_file is not None
                    else None
                ),
                grace=bridge.stop_grace.total_seconds(),
            )
            await self.http.start()
        self.metrics_port = self.metrics.start(
            bridge.metrics_host, bridge.metrics_port, self._settings.tls
        )
        if not self._settings.bridge.require_api_key:
            log.warning(
                "ANONYMOUS MODE: FLEETWIRE_BRIDGE_REQUIRE_API_KEY is false; calls without an "
                "API key run as the tenant 'anonymous', shared by every such caller"
            )

    @property
    def http_port(self) -> int:
        """The bound port of the HTTP API; 0 when it is off."""
        return self.http.port if self.http is not None else 0

    def reload_tls(self) -> None:
        """Re-reads the certificate for the gRPC port and the HTTP port (SIGHUP)."""
        if self.tls is not None:
            self.tls.reload()
        if self.http is not None:
            self.http.reload_tls()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """In-flight calls get ``grace`` seconds (``FLEETWIRE_BRIDGE_STOP_GRACE``)."""
        if grace is None:
            grace = self._settings.bridge.stop_grace.total_seconds()
        if self.http is not None:
            await self.http.stop()
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        if self._finals is not None:
            await self._finals.stop()
            self._finals = None
        await self._unsettled.stop()
        if self._outbox is not None:  # after the server: every confirmed job is marked
            await self._outbox.stop()
            self._outbox = None
        await self._publisher.close()
        await self._gauge.close()
        await self._link.close()
        await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.metrics.stop()
        log.info("bridge stopped")


async def run_bridge(settings: Settings) -> None:
    """Runs the bridge until SIGINT/SIGTERM, then stops it gracefully."""

    bridge = BridgeServer(settings)
    await bridge.start()
    try:
        await wait_for_stop_signal(on_reload=bridge.reload_tls if bridge.tls else None)
    finally:
        await bridge.stop()


def main() -> None:
    from fleetwire.process.logs import configure_logging
    from fleetwire.process.settings import load_settings
    from fleetwire.process.tracing import configure_tracing

    settings = load_settings()
    configure_logging(level=settings.mesh.log_level, json=settings.mesh.log_json, process="bridge")
    configure_tracing(settings.tracing, service="fleetwire-bridge")
    asyncio.run(run_bridge(settings))
