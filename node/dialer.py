"""How a node reaches its scheduler: the channel (TLS verifying the scheduler's certificate
for the name it signs into its handshake; plaintext only when asked for) and what a
refusal means (wait for an operator's approval, or stop for good)."""

from __future__ import annotations

import grpc

from fleetwire.process.settings import NodeSettings
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.rpc.status import reason_of, retry_delay_of
from fleetwire.rpc.tls import node_channel_credentials, node_server_name


class HandshakeRefused(Exception):
    """The scheduler refused the node (unknown, revoked or mismatched key); retrying will not
    help."""


class Dialer:
    """Opens channels to the scheduler of ``settings``; ``server_name`` is what the node
    verified the scheduler's certificate for ("" over plaintext)."""

    def __init__(self, settings: NodeSettings) -> None:
        self._address = settings.scheduler_address
        self._override = settings.server_name
        self._credentials = node_channel_credentials(settings)
        self.server_name = node_server_name(settings)

    def channel(self) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(self._address, options=CLIENT_OPTIONS)
        options: list[tuple[str, str | int]] = list(CLIENT_OPTIONS)
        if self._override:
            options.append(("grpc.ssl_target_name_override", self._override))
        return grpc.aio.secure_channel(self._address, self._credentials, options=options)


def awaits_approval(err: grpc.RpcError) -> bool:
    """The node proved its key but no operator admitted it yet (or the admission queue is
    full for now): ask again later."""
    return isinstance(err, grpc.aio.AioRpcError) and reason_of(err) in (
        "NODE_PENDING",
        "ADMISSION_FULL",
    )


def excluded_for(err: grpc.RpcError) -> float | None:
    """Seconds the scheduler excludes this node for its offences (NODE_EXCLUDED, with the
    time left), or None when the refusal is something else."""
    if isinstance(err, grpc.aio.AioRpcError) and reason_of(err) == "NODE_EXCLUDED":
        return retry_delay_of(err) or 60.0
    return None


def refused_for_good(err: grpc.RpcError) -> bool:
    """A refusal only an operator can lift (the key is unknown, revoked or another)."""
    code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
    return code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
