"""How many connections one peer address may hold NodeStreams on: the count behind
``FLEETWIRE_SCHEDULER_MAX_CONNECTIONS_PER_PEER``.

gRPC has no hook for a new connection, but every call knows its peer (``context.peer()``:
``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``), and one peer string is one connection (its
address and source port). So a connection counts while it carries a live NodeStream, and a
stream from a connection that would make its address hold more than the limit is refused
before anything else happens. An IPv6 peer counts by its /64, which one subscriber is
usually given whole (per address, one host could take every slot of the limit many times
over). Pure: no I/O, no gRPC.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

IPV6_PREFIX = 64


def peer_address(peer: str) -> str:
    """What ``peer`` counts under: its IPv4 address (an IPv4-mapped IPv6 one too), its IPv6
    /64 network, or — a peer that is not an IP address and port (``unix:...``) — itself."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = rest.rsplit(":", 1)[0].strip("[]")
    host = host.split("%", 1)[0]  # a zone index (fe80::1%eth0) is not part of the address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


@dataclass(slots=True)
class PeerHold:
    """One live stream's claim on its connection's slot; ``release`` is idempotent."""

    _owner: PeerConnections
    peer: str
    address: str
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._release(self)


@dataclass(slots=True)
class PeerConnections:
    """Connections with live NodeStreams, per peer address, at most ``limit`` each."""

    limit: int
    _streams: dict[str, int] = field(default_factory=dict)  # peer (connection) -> streams
    _connections: dict[str, set[str]] = field(default_factory=dict)  # address -> peers

    def admit(self, peer: str) -> PeerHold | None:
        """A hold for a new stream from ``peer``, or None when its connection would be one
        more than ``limit`` for its address. A further stream on a connection already
        counted is always admitted (the streams per connection have their own limit)."""
        address = peer_address(peer)
        if peer not in self._streams:
            peers = self._connections.setdefault(address, set())
            if len(peers) >= self.limit:
                return None
            peers.add(peer)
            self._streams[peer] = 0
        self._streams[peer] += 1
        return PeerHold(self, peer, address)

    def connections(self, address: str) -> int:
        """How many connections of ``address`` hold live streams now."""
        return len(self._connections.get(address, ()))

    def _release(self, hold: PeerHold) -> None:
        left = self._streams.get(hold.peer, 0) - 1
        if left > 0:
            self._streams[hold.peer] = left
            return
        self._streams.pop(hold.peer, None)
        peers = self._connections.get(hold.address)
        if peers is not None:
            peers.discard(hold.peer)
            if not peers:
                del self._connections[hold.address]
