"""The console's one way into the mesh: MeshAdminService on a scheduler's admin port, each
call with the operator key of the session that makes it, so the scheduler's policy (viewer
reads, admin acts) and audit log apply to what the console does. The console holds no
credential of its own and reads no database."""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fleetwire.domain.errors import ConfigurationError
from fleetwire.process.settings import ConsoleSettings
from fleetwire.rpc.options import CLIENT_OPTIONS
from fleetwire.v1 import mesh_admin_service_pb2_grpc

log = structlog.get_logger(__name__)


class AdminCallError(Exception):
    """A call the admin port refused or could not answer: its status code, message and
    ErrorInfo reason ("" when the server sent none)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason


def _reason(error: grpc.aio.AioRpcError) -> str:
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return ""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


def _credentials(settings: ConsoleSettings) -> grpc.ChannelCredentials | None:
    if settings.admin_insecure:
        log.warning(
            "calling the admin port in PLAINTEXT: FLEETWIRE_CONSOLE_ADMIN_INSECURE is set; "
            "operator keys cross the network unencrypted",
            address=settings.admin_address,
        )
        return None
    if (settings.admin_client_cert_file is None) != (settings.admin_client_key_file is None):
        raise ConfigurationError(
            "set FLEETWIRE_CONSOLE_ADMIN_CLIENT_CERT_FILE and "
            "FLEETWIRE_CONSOLE_ADMIN_CLIENT_KEY_FILE together, or neither"
        )
    try:
        roots = settings.admin_ca_file.read_bytes() if settings.admin_ca_file else None
        cert = key = None
        if settings.admin_client_cert_file and settings.admin_client_key_file:
            cert = settings.admin_client_cert_file.read_bytes()
            key = settings.admin_client_key_file.read_bytes()
    except OSError as err:
        raise ConfigurationError(f"cannot read the console's admin TLS files: {err}") from err
    return grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=cert
    )


class AdminClient:
    """A channel to the admin port, opened by ``start`` and closed by ``close``
    (idempotent). ``call`` raises ``AdminCallError`` for every refusal or failure."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self._settings = settings
        self._timeout = settings.admin_timeout.total_seconds()
        self._channel: grpc.aio.Channel | None = None
        self._stub: mesh_admin_service_pb2_grpc.MeshAdminServiceStub | None = None

    def start(self) -> None:
        credentials = _credentials(self._settings)
        address = self._settings.admin_address
        self._channel = (
            grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
            if credentials is None
            else grpc.aio.secure_channel(address, credentials, options=CLIENT_OPTIONS)
        )
        self._stub = mesh_admin_service_pb2_grpc.MeshAdminServiceStub(self._channel)

    async def call(self, method: str, request: Any, operator_key: str) -> Any:
        """``method`` of MeshAdminService with ``operator_key`` as the bearer credential,
        bounded by FLEETWIRE_CONSOLE_ADMIN_TIMEOUT."""
        if self._stub is None:
            raise AdminCallError(grpc.StatusCode.UNAVAILABLE, "the console is not started")
        try:
            return await getattr(self._stub, method)(
                request,
                timeout=self._timeout,
                metadata=(("authorization", f"Bearer {operator_key}"),),
            )
        except grpc.aio.AioRpcError as err:
            raise AdminCallError(err.code(), err.details() or "", _reason(err)) from err

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stub = None
