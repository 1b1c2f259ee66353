"""TLS for test meshes: a CA and a server certificate for the loopback names, made with the
same code as ``fleetwire certs``, and the FLEETWIRE_* variables that turn TLS on."""

from __future__ import annotations

from pathlib import Path

import grpc

from fleetwire_tools.certs import DevCertificates, ensure_dev_certificates


def tls_env(made: DevCertificates) -> dict[str, str]:
    """Servers present ``made.server``; nodes and clients trust ``made.ca``."""
    return {
        "FLEETWIRE_TLS_CERT_FILE": str(made.server.cert),
        "FLEETWIRE_TLS_KEY_FILE": str(made.server.key),
        "FLEETWIRE_TLS_INSECURE": "false",
        "FLEETWIRE_NODE_CA_FILE": str(made.ca),
        "FLEETWIRE_NODE_INSECURE": "false",
        "FLEETWIRE_CA_FILE": str(made.ca),
        "FLEETWIRE_INSECURE": "false",
    }


def make_certificates(directory: Path) -> DevCertificates:
    return ensure_dev_certificates(directory)


def client_credentials(ca_file: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes())
