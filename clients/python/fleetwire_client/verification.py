"""Offline verification of a finished job's signature (docs/signing.md), no server call.

The scheme and the mapping of a ``Job`` onto its signed facts are the protocol package's
(``fleetwire.protocol``): the SDK re-exports them so applications need one import.
"""

from __future__ import annotations

from fleetwire.protocol.facts import public_key_bytes, result_facts_of, verify_job

__all__ = ["public_key_bytes", "result_facts_of", "verify_job"]
