"""The ``authorization: Bearer <key>`` metadata every fleetwire server reads its callers'
keys from (tenants' on the bridge, operators' on the admin port)."""

from __future__ import annotations

from collections.abc import Iterable

from fleetwire.domain.errors import Unauthenticated

AUTHORIZATION = "authorization"


def bearer_key(metadata: Iterable[tuple[str, str | bytes]], *, reason: str) -> str | None:
    """The key of the first ``authorization`` entry, None when there is none; a malformed
    entry is Unauthenticated with ``reason``."""
    for name, value in metadata:
        if name != AUTHORIZATION:
            continue
        text = value if isinstance(value, str) else ""
        scheme, _, key = text.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated(
                "malformed authorization metadata: expected 'Bearer <key>'", reason=reason
            )
        return key.strip()
    return None
