"""How a client's channel is secured: TLS by default, plaintext only when asked for.

The bridge serves TLS unless its operator turned it off, so the client verifies the
bridge's certificate: against ``ca_file`` (or ``$FLEETWIRE_CA_FILE``) when given — a dev
mesh's own CA (``fleetwire certs``) — else against the system's trust store. Plaintext only
with ``insecure=True`` (or ``$FLEETWIRE_INSECURE=1`` when neither a CA nor ``insecure`` is
given), for a mesh that serves plaintext on purpose (tests, benchmarks).
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

CA_FILE_ENV = "FLEETWIRE_CA_FILE"
INSECURE_ENV = "FLEETWIRE_INSECURE"
_TRUE = {"1", "true", "yes", "on"}


def channel_credentials(
    credentials: grpc.ChannelCredentials | None,
    *,
    ca_file: str | Path | None,
    insecure: bool | None,
) -> grpc.ChannelCredentials | None:
    """The credentials to dial with, or None for plaintext. ``credentials`` wins; then the
    arguments; then ``$FLEETWIRE_CA_FILE``; then ``$FLEETWIRE_INSECURE``; else TLS with the
    system's roots."""
    if credentials is not None:
        return credentials
    if insecure:
        return None
    ca = ca_file if ca_file is not None else os.environ.get(CA_FILE_ENV) or None
    if ca is not None:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
    if insecure is None and os.environ.get(INSECURE_ENV, "").lower() in _TRUE:
        return None
    return grpc.ssl_channel_credentials()
