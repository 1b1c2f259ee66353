"""TLS on the public and the node port, with real certificates (``fleetwire_tools.certs``)
and real bridge and scheduler servers in-process on this run's services.

One test per rule: a server without a certificate does not start unless plaintext is asked
for; plaintext and clients that trust another CA are refused; a node's handshake is bound
to the name it verified, so a challenge relayed through a server with a certificate of its
own fails (and a relay that rewrites the name breaks the signature); a reloaded certificate
is served to new connections while open ones go on; a node port that wants client
certificates (mTLS) lets in only nodes presenting one from its CA, and the key handshake
still follows.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from nacl.signing import SigningKey

from broker_bridge.server import BridgeServer
from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.settings import NodeSettings, Settings, TlsSettings
from fleetwire.rpc.tls import certificate_names, node_channel_credentials
from fleetwire.v1 import job_service_pb2, job_service_pb2_grpc, node_service_pb2_grpc
from fleetwire_tools.certs import DevCertificates, Issued, ensure_authority, issue
from node.dialer import Dialer
from scheduler.server import SchedulerServer
from tests.support.handshake import handshake
from tests.support.tls import make_certificates

RELAY_NAME = "relay.test"


@pytest.fixture
def certs(tmp_path: Path) -> DevCertificates:
    return make_certificates(tmp_path / "mesh")


def with_tls(settings: Settings, certs: DevCertificates, **scheduler: Any) -> Settings:
    """``settings`` serving TLS with ``certs`` on free ports."""
    tls = TlsSettings(cert_file=certs.server.cert, key_file=certs.server.key, insecure=False)
    return settings.model_copy(
        update={
            "tls": tls,
            "bridge": settings.bridge.model_copy(update={"port": 0}),
            "scheduler": settings.scheduler.model_copy(
                update={"port": 0, "admin_port": 0, **scheduler}
            ),
        }
    )


@pytest.fixture
async def tls_bridge(settings: Settings, certs: DevCertificates) -> AsyncIterator[BridgeServer]:
    server = BridgeServer(with_tls(settings, certs))
    await server.start()
    yield server
    await server.stop(grace=1)


@pytest.fixture
async def tls_scheduler(
    settings: Settings, certs: DevCertificates
) -> AsyncIterator[SchedulerServer]:
    server = SchedulerServer(with_tls(settings, certs, scheduler_id="tls-scheduler"))
    await server.start()
    yield server
    await server.stop(grace=1)


def secure(address: str, ca: Path, **options: str) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    return grpc.aio.secure_channel(address, credentials, options=list(options.items()))


async def status_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The code of a Status call for an unknown job: NOT_FOUND when the call was served."""
    stub = job_service_pb2_grpc.JobServiceStub(channel)
    try:
        await stub.Status(job_service_pb2.StatusRequest(job_id=str(uuid.uuid4())), timeout=5)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# --- Servers refuse what is not proven. --------------------------------------------------


def test_a_server_without_a_certificate_does_not_start(settings: Settings) -> None:
    plain = settings.model_copy(update={"tls": TlsSettings(insecure=False)})
    with pytest.raises(ConfigurationError, match="FLEETWIRE_TLS_CERT_FILE"):
        BridgeServer(plain)
    with pytest.raises(ConfigurationError, match="FLEETWIRE_TLS_INSECURE"):
        SchedulerServer(plain)


async def test_the_bridge_serves_tls_and_refuses_plaintext(
    tls_bridge: BridgeServer, certs: DevCertificates, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{tls_bridge.port}"
    async with secure(address, certs.ca) as channel:
        assert await status_code(channel) == grpc.StatusCode.NOT_FOUND  # served, over TLS
    async with grpc.aio.insecure_channel(address) as channel:
        assert await status_code(channel) == grpc.StatusCode.UNAVAILABLE
    stranger = make_certificates(tmp_path / "another-ca")
    async with secure(address, stranger.ca) as channel:
        assert await status_code(channel) == grpc.StatusCode.UNAVAILABLE


# --- A node's handshake is bound to the server it verified. ------------------------------


class Relay(node_service_pb2_grpc.NodeServiceServicer):
    """A server with a valid certificate of its own that passes a node's stream to the real
    scheduler and back: what a node sees as its scheduler is the relay. With
    ``rewrite_name`` it also puts the real scheduler's name in the node's Auth."""

    def __init__(self, upstream: str, ca: Path, rewrite_name: str | None = None) -> None:
        self.upstream, self.ca, self.rewrite_name = upstream, ca, rewrite_name

    async def NodeStream(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        async with secure(self.upstream, self.ca) as channel:
            call = node_service_pb2_grpc.NodeServiceStub(channel).NodeStream()

            async def forward() -> None:
                async for message in request_iterator:
                    if self.rewrite_name is not None and message.HasField("auth"):
                        message.auth.server_name = self.rewrite_name
                    await call.write(message)

            pump = asyncio.create_task(forward())
            try:
                async for reply in call:
                    yield reply
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), err.details())
            finally:
                pump.cancel()


@pytest.fixture
async def relay_port(
    certs: DevCertificates, tls_scheduler: SchedulerServer, request: pytest.FixtureRequest
) -> AsyncIterator[int]:
    authority = ensure_authority(certs.ca.parent)
    own = issue(
        authority,
        certs.ca.parent / "relay",
        common_name=RELAY_NAME,
        names=(RELAY_NAME,),
        server=True,
    )
    server = grpc.aio.server()
    relay = Relay(f"127.0.0.1:{tls_scheduler.port}", certs.ca, getattr(request, "param", None))
    node_service_pb2_grpc.add_NodeServiceServicer_to_server(relay, server)
    credentials = grpc.ssl_server_credentials([(own.key.read_bytes(), own.cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    yield port
    await server.stop(0)


async def test_a_node_logs_in_directly_with_the_name_it_verified(
    tls_scheduler: SchedulerServer, certs: DevCertificates
) -> None:
    async with secure(f"127.0.0.1:{tls_scheduler.port}", certs.ca) as channel:
        assert await handshake(channel, "tls-direct", SigningKey.generate(), "127.0.0.1") == (
            "welcome"
        )


async def test_a_relayed_challenge_fails(relay_port: int, certs: DevCertificates) -> None:
    """The node dialed the relay and verified the relay's certificate: its answer names the
    relay, and the real scheduler refuses it."""
    options = {"grpc.ssl_target_name_override": RELAY_NAME}
    async with secure(f"127.0.0.1:{relay_port}", certs.ca, **options) as channel:
        outcome = await handshake(channel, "tls-relayed", SigningKey.generate(), RELAY_NAME)
    assert outcome.startswith("UNAUTHENTICATED"), outcome
    assert RELAY_NAME in outcome


@pytest.mark.parametrize("relay_port", ["127.0.0.1"], indirect=True)
async def test_a_relay_that_rewrites_the_name_breaks_the_signature(
    relay_port: int, certs: DevCertificates
) -> None:
    options = {"grpc.ssl_target_name_override": RELAY_NAME}
    async with secure(f"127.0.0.1:{relay_port}", certs.ca, **options) as channel:
        outcome = await handshake(channel, "tls-rewritten", SigningKey.generate(), RELAY_NAME)
    assert outcome.startswith("UNAUTHENTICATED"), outcome
    assert outcome.endswith("challenge signature does not verify"), outcome


async def test_a_plaintext_answer_is_refused_by_a_tls_scheduler(
    tls_scheduler: SchedulerServer, certs: DevCertificates
) -> None:
    """An answer signed for no server (what a node dialing plaintext signs)."""
    async with secure(f"127.0.0.1:{tls_scheduler.port}", certs.ca) as channel:
        outcome = await handshake(channel, "tls-plain-answer", SigningKey.generate(), "")
    assert outcome.startswith("UNAUTHENTICATED"), outcome


# --- Certificates are reloaded for new connections; open ones go on. ---------------------


def served_certificate(port: int) -> bytes:
    """The DER certificate a server presents to a new TLS connection (ALPN h2, as gRPC)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


async def test_a_reloaded_certificate_is_served_to_new_connections(
    tls_bridge: BridgeServer, certs: DevCertificates
) -> None:
    assert tls_bridge.tls is not None
    before = await asyncio.to_thread(served_certificate, tls_bridge.port)
    address = f"127.0.0.1:{tls_bridge.port}"
    async with secure(address, certs.ca) as open_channel:
        assert await status_code(open_channel) == grpc.StatusCode.NOT_FOUND
        # A new certificate in the same files (a renewal), then the reload SIGHUP triggers.
        renewed = issue(
            ensure_authority(certs.ca.parent),
            certs.server.cert.with_suffix(""),
            common_name="localhost",
            names=("localhost", "127.0.0.1", "renewed.test"),
            server=True,
        )
        assert tls_bridge.tls.reload()
        assert "renewed.test" in tls_bridge.tls.names
        after = await asyncio.to_thread(served_certificate, tls_bridge.port)
        assert after != before
        assert ssl.DER_cert_to_PEM_cert(after).encode() == renewed.cert.read_bytes()
        assert "renewed.test" in certificate_names(renewed.cert.read_bytes())
        # The connection opened before the reload still serves calls.
        assert await status_code(open_channel) == grpc.StatusCode.NOT_FOUND


async def test_a_broken_certificate_file_keeps_the_current_one(
    tls_bridge: BridgeServer, certs: DevCertificates
) -> None:
    assert tls_bridge.tls is not None
    before = await asyncio.to_thread(served_certificate, tls_bridge.port)
    certs.server.cert.write_text("not a certificate")
    assert not tls_bridge.tls.reload()
    assert await asyncio.to_thread(served_certificate, tls_bridge.port) == before


async def test_a_reload_reaches_both_ports_of_a_scheduler(
    tls_scheduler: SchedulerServer, certs: DevCertificates
) -> None:
    """The node port and the admin port share one certificate: a reload reaches both."""
    assert tls_scheduler.tls is not None
    ports = (tls_scheduler.port, tls_scheduler.admin_port)
    before = [await asyncio.to_thread(served_certificate, port) for port in ports]
    issue(
        ensure_authority(certs.ca.parent),
        certs.server.cert.with_suffix(""),
        common_name="localhost",
        names=("localhost", "127.0.0.1"),
        server=True,
    )
    assert tls_scheduler.tls.reload()
    after = [await asyncio.to_thread(served_certificate, port) for port in ports]
    assert after[0] == after[1]
    assert all(a != b for a, b in zip(after, before, strict=True))


# --- A node port that wants mTLS lets in only nodes with a certificate from its CA. ------


def client_certificate(directory: Path, name: str) -> Issued:
    """A client certificate for ``name`` from the authority in ``directory`` (made if new)."""
    return issue(ensure_authority(directory), directory / name, common_name=name, client=True)


def node_dialing(address: str, ca: Path, client: Issued | None) -> Dialer:
    """How a node configured with ``FLEETWIRE_NODE_CLIENT_*`` (or without) dials."""
    files = (
        {} if client is None else {"client_cert_file": client.cert, "client_key_file": client.key}
    )
    return Dialer(NodeSettings(scheduler_address=address, ca_file=ca, insecure=False, **files))


@pytest.fixture
async def mtls_scheduler(
    settings: Settings, certs: DevCertificates
) -> AsyncIterator[SchedulerServer]:
    server = SchedulerServer(
        with_tls(settings, certs, scheduler_id="mtls-nodes", node_client_ca_file=certs.ca)
    )
    await server.start()
    yield server
    await server.stop(grace=1)


async def test_a_node_port_that_wants_mtls_welcomes_only_nodes_with_a_certificate(
    mtls_scheduler: SchedulerServer, certs: DevCertificates, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{mtls_scheduler.port}"
    signed = client_certificate(certs.ca.parent, "mtls-node")
    foreign = client_certificate(tmp_path / "another-ca", "mtls-node")
    for client in (None, foreign):  # no certificate; one from another CA
        async with node_dialing(address, certs.ca, client).channel() as channel:
            outcome = await handshake(channel, "mtls-refused", SigningKey.generate(), "127.0.0.1")
        assert outcome.startswith("UNAVAILABLE"), outcome  # the TLS handshake failed
    dialer = node_dialing(address, certs.ca, signed)
    async with dialer.channel() as channel:
        # The certificate opens the port; the key handshake still decides who the node is.
        key = SigningKey.generate()
        assert await handshake(channel, "mtls-node", key, dialer.server_name) == "welcome"
        forged = await handshake(
            channel, "mtls-forged", key, dialer.server_name, signer=SigningKey.generate()
        )
        assert forged.startswith("UNAUTHENTICATED"), forged


def test_client_certificates_need_tls_and_come_with_their_key(
    settings: Settings, certs: DevCertificates
) -> None:
    node = client_certificate(certs.ca.parent, "node")
    other = client_certificate(certs.ca.parent, "other")
    wrong: list[tuple[dict[str, Any], str]] = [
        ({"client_cert_file": node.cert}, "both"),
        ({"client_key_file": node.key}, "both"),
        ({"client_cert_file": node.cert, "client_key_file": other.key}, "is not the key"),
        ({"client_cert_file": node.cert, "client_key_file": node.key, "insecure": True}, "TLS"),
    ]
    for files, error in wrong:
        node_settings = NodeSettings(**{"insecure": False, "ca_file": certs.ca, **files})
        with pytest.raises(ConfigurationError, match=error):
            node_channel_credentials(node_settings)
    plaintext = settings.model_copy(
        update={
            "scheduler": settings.scheduler.model_copy(update={"node_client_ca_file": certs.ca})
        }
    )
    with pytest.raises(ConfigurationError, match="NODE_CLIENT_CA_FILE needs TLS"):
        SchedulerServer(plaintext)
    not_a_ca = with_tls(settings, certs, node_client_ca_file=node.key)
    with pytest.raises(ConfigurationError, match="NODE_CLIENT_CA_FILE"):
        SchedulerServer(not_a_ca)
