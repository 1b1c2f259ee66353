"""Offline verification of a finished job's signature (docs/signing.md), no server call
(``verify_job_with_keys`` takes the keys ``Client.node_keys`` fetched once).

The scheme and the mapping of a ``Job`` onto its signed facts are the protocol package's
(``fleetwire.protocol``): the SDK re-exports them so applications need one import.
"""

from __future__ import annotations

from fleetwire.protocol.facts import (
    public_key_bytes,
    result_facts_of,
    verify_job,
    verify_job_with_keys,
)
from fleetwire.v1 import job_service_pb2

__all__ = [
    "KEY_RECHECK_S",
    "NodeKeyCache",
    "public_key_bytes",
    "result_facts_of",
    "verify_job",
    "verify_job_with_keys",
]


KEY_RECHECK_S = 300.0
"""How long a client trusts the keys it fetched for a node before asking again: a key's
revocation reaches it within this time (a key id it has not seen is asked for at once)."""


class NodeKeyCache:
    """The keys fetched per node (``JobService.ListNodeKeys``), reused for
    ``KEY_RECHECK_S``; no I/O here, the clients fetch."""

    def __init__(self, recheck_s: float = KEY_RECHECK_S) -> None:
        self._recheck_s = recheck_s
        self._keys: dict[str, tuple[float, list[job_service_pb2.NodeKey]]] = {}

    def get(self, node_id: str, key_id: str, now: float) -> list[job_service_pb2.NodeKey] | None:
        """The cached keys of ``node_id`` when fresh and naming ``key_id``; None: fetch."""
        cached = self._keys.get(node_id)
        if cached is None or now - cached[0] >= self._recheck_s:
            return None
        if not any(key.key_id == key_id for key in cached[1]):
            return None
        return cached[1]

    def put(self, node_id: str, keys: list[job_service_pb2.NodeKey], now: float) -> None:
        self._keys[node_id] = (now, keys)
