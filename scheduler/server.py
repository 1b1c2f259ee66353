"""The scheduler process. Start order: PostgreSQL → Redis/AMQP → progress relay → gRPC
server → consumers → deadline reaper → validation issuer → key watch and metrics census.
Stop order: key watch and census → validation issuer → deadline reaper → consumers
(in-flight deliveries go back to the broker) → gRPC server → progress relay (drained: the
chunks the nodes sent reach Redis) → the rest.
"""

from __future__ import annotations

import asyncio
import os
import socket

import asyncpg
import grpc
import structlog

from fleetwire.messaging.amqp import AmqpLink
from fleetwire.messaging.channels import ChannelListener
from fleetwire.messaging.events import JobEvents, connect_redis
from fleetwire.messaging.publisher import JobPublisher
from fleetwire.messaging.topology import Topology
from fleetwire.process.lifecycle import wait_for_stop_signal
from fleetwire.process.metrics import MetricsEndpoint
from fleetwire.process.settings import Settings
from fleetwire.rpc.server import start_server
from fleetwire.rpc.telemetry import GrpcServerMetrics
from fleetwire.rpc.tls import client_ca, server_tls
from fleetwire.store.attempts import AttemptStore
from fleetwire.store.db import open_pool
from fleetwire.store.jobs import JobStore
from fleetwire.store.nodes import NodeStore
from fleetwire.store.operators import OperatorStore
from fleetwire.store.outbox import OutboxStore
from fleetwire.store.tenants import TenantStore
from fleetwire.v1 import (
    mesh_admin_service_pb2,
    mesh_admin_service_pb2_grpc,
    node_service_pb2,
    node_service_pb2_grpc,
)
from scheduler.admin_gate import AdminGate
from scheduler.admin_service import MeshAdminService
from scheduler.admin_store import AdminStore
from scheduler.census import MeshCensus
from scheduler.census_store import CensusStore, ManagementApi, QueueCounter
from scheduler.consumers import QueueConsumers
from scheduler.dead_letter_shelf import DeadLetterShelf
from scheduler.deadline_reaper import DeadlineReaper
from scheduler.deadline_store import DeadlineStore
from scheduler.dispatcher import Dispatcher
from scheduler.finalisation import Finaliser
from scheduler.key_watch import KeyWatch
from scheduler.metrics import SchedulerMetrics
from scheduler.node_messages import NodeMessages
from scheduler.node_service import NodeService
from scheduler.offences import Offences
from scheduler.penalties import PenaltyBox
from scheduler.penalty_store import PenaltyStore
from scheduler.presence import NodePresence
from scheduler.progress_relay import ProgressRelay
from scheduler.registry import NodeRegistry
from scheduler.replay import DeadLetterReplay
from scheduler.replay_store import ReplayStore
from scheduler.reputation import Reputations
from scheduler.token_counts import TokenCounter
from scheduler.validation import ValidationIssuer
from scheduler.validation_store import ValidationStore

log = structlog.get_logger(__name__)

SERVICE_NAME = node_service_pb2.DESCRIPTOR.services_by_name["NodeService"].full_name
ADMIN_SERVICE_NAME = mesh_admin_service_pb2.DESCRIPTOR.services_by_name[
    "MeshAdminService"
].full_name


class SchedulerServer:
    """One scheduler replica: ``start``, ``wait``, idempotent ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.scheduler_id = (
            settings.scheduler.scheduler_id or f"{socket.gethostname()}-{os.getpid()}"
        )
        self.tls = server_tls(settings.tls, server="scheduler")
        self._admin_client_ca = client_ca(
            settings.scheduler.admin_client_ca_file,
            variable="FLEETWIRE_SCHEDULER_ADMIN_CLIENT_CA_FILE",
            tls=self.tls,
        )
        self._node_client_ca = client_ca(
            settings.scheduler.node_client_ca_file,
            variable="FLEETWIRE_SCHEDULER_NODE_CLIENT_CA_FILE",
            tls=self.tls,
        )
        self._admin_server: grpc.aio.Server | None = None
        self._key_watch: KeyWatch | None = None
        self.census: MeshCensus | None = None  # public: tests run a pass with poll()
        self.admin_port = 0
        self._pool: asyncpg.Pool | None = None
        self._link = AmqpLink(settings.rabbitmq.url.get_secret_value())
        self._redis = connect_redis(
            settings.redis.url.get_secret_value(), max_connections=settings.redis.max_connections
        )
        self._server: grpc.aio.Server | None = None
        self._consumers: QueueConsumers | None = None
        self._cancel_relay: ChannelListener | None = None
        self._progress_relay: ProgressRelay | None = None
        self._publisher: JobPublisher | None = None
        self._reaper: DeadlineReaper | None = None
        self._offences: Offences | None = None
        self.penalties = PenaltyBox(
            threshold=settings.scheduler.penalty_threshold,
            cooldown=settings.scheduler.penalty_cooldown.total_seconds(),
        )
        self.reputations = Reputations(floor=settings.scheduler.reputation_floor)
        self.registry = NodeRegistry(
            excluded=self.penalties.is_excluded,
            penalty_points=self.penalties.points,
            reconnect_grace=settings.scheduler.reconnect_grace.total_seconds(),
            reputation=self.reputations.score,
            on_probation=self.reputations.on_probation,
        )
        self.validation: ValidationIssuer | None = None
        self.port = 0
        self.metrics = MetricsEndpoint("scheduler")
        # Both ports' calls, told apart by the service label.
        self._grpc_metrics = GrpcServerMetrics(self.metrics.registry)
        self.metrics_port = 0

    def _server_names(self) -> frozenset[str]:
        return self.tls.names if self.tls is not None else frozenset({""})

    async def start(self) -> None:
        settings = self._settings
        self._pool = await open_pool(settings.postgres)
        store = JobStore(self._pool)
        attempts = AttemptStore(self._pool)
        events = JobEvents(
            self._redis,
            settings.mesh.namespace,
            maxlen=settings.redis.stream_maxlen,
            ttl=settings.redis.stream_ttl,
            finished_retention=settings.redis.finished_stream_retention,
        )
        topology = Topology.of(settings)
        self._progress_relay = ProgressRelay(events)
        await self._progress_relay.start()
        metrics = SchedulerMetrics(self.metrics.registry, self.registry)
        offences = Offences(
            settings.scheduler,
            self.scheduler_id,
            self.penalties,
            PenaltyStore(self._pool),
            self.registry,
            metrics=metrics,
        )
        offences.start()
        self._offences = offences
        finaliser = Finaliser(
            settings.scheduler,
            attempts,
            self._progress_relay,
            offences,
            metrics,
            TokenCounter(settings.scheduler.tokenizers),
        )
        dispatcher = Dispatcher(
            settings.scheduler,
            self.scheduler_id,
            store,
            attempts,
            events,
            self.registry,
            self._progress_relay,
            finaliser,
            offences,
            metrics,
        )
        validation = ValidationIssuer(
            settings.scheduler,
            self.registry,
            self.penalties,
            dispatcher,
            ValidationStore(self._pool),
            store,
            topology,
            offences,
            self.reputations,
            metrics,
        )
        self.validation = validation
        node_messages = NodeMessages(
            store, attempts, self.registry, self._progress_relay, finaliser, offences
        )
        self._consumers = QueueConsumers(
            self._link,
            topology,
            dispatcher,
            store,
            events,
            self.registry.routes,
            settings.scheduler.retry_delays,
        )
        self.registry.on_change(self._consumers.routes_changed)
        self._cancel_relay = ChannelListener(
            self._redis, events.cancel_channel, node_messages.cancel_job, name="cancel-relay"
        )

        presence = NodePresence(
            self._redis,
            settings.mesh.namespace,
            self.scheduler_id,
            ttl_seconds=2 * settings.scheduler.lease.total_seconds(),
        )
        self._publisher = JobPublisher(
            self._link, topology, confirm_timeout=settings.rabbitmq.publish_timeout
        )
        replay = DeadLetterReplay(
            ReplayStore(self._pool),
            store,
            self._publisher,
            DeadLetterShelf(self._link, topology),
            events,
            OutboxStore(self._pool),
        )
        operators = OperatorStore(self._pool)
        admin = MeshAdminService(
            presence,
            AdminStore(self._pool),
            self.penalties,
            self._link,
            topology,
            replay,
            AdminGate(operators, cache_ttl=settings.scheduler.admin_cache_ttl.total_seconds()),
            operators,
            NodeStore(self._pool),
            TenantStore(self._pool),
            validation,
        )
        nodes = NodeService(
            settings.scheduler,
            self.scheduler_id,
            NodeStore(self._pool),
            self.registry,
            topology,
            node_messages.on_node_message,
            presence,
            server_names=self._server_names,
            mesh_models=settings.mesh.models,
            excluded_for=self.penalties.excluded_for,
        )

        # Two ports: nodes dial the node port from anywhere; operators use the admin port,
        # bound to this machine unless configured otherwise, with operator keys.
        address = f"{settings.scheduler.host}:{settings.scheduler.port}"
        serving = await start_server(
            address,
            [SERVICE_NAME],
            lambda server: node_service_pb2_grpc.add_NodeServiceServicer_to_server(nodes, server),
            self.tls,
            max_streams_per_connection=settings.scheduler.max_streams_per_connection,
            connection_idle=settings.scheduler.connection_idle,
            client_ca=self._node_client_ca,
            metrics=self._grpc_metrics,
        )
        self._server, self.port = serving.server, serving.port
        admin_address = f"{settings.scheduler.admin_host}:{settings.scheduler.admin_port}"
        admin_serving = await start_server(
            admin_address,
            [ADMIN_SERVICE_NAME],
            lambda server: mesh_admin_service_pb2_grpc.add_MeshAdminServiceServicer_to_server(
                admin, server
            ),
            self.tls,
            client_ca=self._admin_client_ca,
            metrics=self._grpc_metrics,
        )
        self._admin_server, self.admin_port = admin_serving.server, admin_serving.port
        await self._consumers.start()
        await self._cancel_relay.start()
        self._reaper = DeadlineReaper(
            DeadlineStore(self._pool),
            events,
            interval=settings.scheduler.reap_interval,
            grace=settings.scheduler.reap_grace,
            batch=settings.scheduler.reap_batch,
        )
        await self._reaper.start()
        validation.start()
        self._key_watch = KeyWatch(
            NodeStore(self._pool),
            self.registry,
            interval=settings.scheduler.key_check_interval.total_seconds(),
        )
        self._key_watch.start()
        self.census = MeshCensus(
            metrics.census,
            CensusStore(self._pool),
            QueueCounter(
                self._link,
                ManagementApi.of(
                    settings.rabbitmq.management_url.get_secret_value(),
                    settings.rabbitmq.url.get_secret_value(),
                    timeout=settings.rabbitmq.publish_timeout.total_seconds(),
                ),
            ),
            topology,
            self.registry,
            self.penalties.is_excluded,
            retry_delays=settings.scheduler.retry_delays,
            interval=settings.scheduler.metrics_poll_interval.total_seconds(),
            broker_timeout=settings.rabbitmq.publish_timeout.total_seconds(),
        )
        self.census.start()
        log.info(
            "scheduler serving",
            address=address,
            admin_address=admin_address,
            admin_port=self.admin_port,
            tls=self.tls is not None,
            node_mtls=self._node_client_ca is not None,
            scheduler_id=self.scheduler_id,
        )
        group = settings.scheduler
        self.metrics_port = self.metrics.start(group.metrics_host, group.metrics_port, settings.tls)

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def stop(self, grace: float | None = None) -> None:
        """In-flight calls and relayed chunks get ``grace`` seconds
        (``FLEETWIRE_SCHEDULER_STOP_GRACE``)."""
        if grace is None:
            grace = self._settings.scheduler.stop_grace.total_seconds()
        if self._key_watch is not None:
            await self._key_watch.stop()
            self._key_watch = None
        if self.census is not None:
            await self.census.stop()
            self.census = None
        if self.validation is not None:
            await self.validation.stop()
            self.validation = None
        if self._reaper is not None:
            await self._reaper.stop()
            self._reaper = None
        if self._cancel_relay is not None:
            await self._cancel_relay.stop()
            self._cancel_relay = None
        if self._consumers is not None:
            await self._consumers.stop()
            self._consumers = None
        admin_server, self._admin_server = self._admin_server, None
        if admin_server is not None:
            await admin_server.stop(grace)
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        if self._offences is not None:  # no stream or dispatcher is left to charge
            await self._offences.stop()
            self._offences = None
        if self._progress_relay is not None:  # no node stream is left to feed it
            await self._progress_relay.stop(grace)
            self._progress_relay = None
        if self._publisher is not None:
            await self._publisher.close()
            self._publisher = None
        await self._link.close()
        await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        self.metrics.stop()
        log.info("scheduler stopped")


async def run_scheduler(settings: Settings) -> None:
    """Runs the scheduler until SIGINT/SIGTERM, then stops it gracefully."""
    scheduler = SchedulerServer(settings)
    await scheduler.start()
    try:
        await wait_for_stop_signal(on_reload=scheduler.tls.reload if scheduler.tls else None)
    finally:
        await scheduler.stop()


def main() -> None:
    from fleetwire.process.logs import configure_logging
    from fleetwire.process.settings import load_settings
    from fleetwire.process.tracing import configure_tracing

    settings = load_settings()
    configure_logging(
        level=settings.mesh.log_level, json=settings.mesh.log_json, process="scheduler"
    )
    configure_tracing(
        settings.tracing,
        service="fleetwire-scheduler",
        instance=settings.scheduler.scheduler_id or f"{socket.gethostname()}-{os.getpid()}",
    )
    asyncio.run(run_scheduler(settings))
