"""scheduler.peer_limits: what a peer string counts under, and connections per address
held while their streams live."""

from __future__ import annotations

import pytest

from scheduler.peer_limits import PeerConnections, peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:1.2.3.4:5678", "1.2.3.4"),
        ("ipv6:[::1]:5678", "::/64"),
        ("ipv6:[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"),
        ("ipv6:[::ffff:10.0.0.7]:9", "10.0.0.7"),
        ("ipv6:[fe80::1%eth0]:9", "fe80::/64"),
        ("unix:/run/fleetwire.sock", "unix:/run/fleetwire.sock"),
        ("ipv4:not-an-ip:1", "ipv4:not-an-ip:1"),
    ],
)
def test_a_peer_counts_under_its_address_or_ipv6_network(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_connections_of_one_address_are_bounded_and_freed_when_their_streams_end() -> None:
    peers = PeerConnections(limit=2)
    first = peers.admit("ipv4:10.0.0.1:1000")
    second = peers.admit("ipv4:10.0.0.1:1001")
    assert first is not None
    assert second is not None
    assert peers.admit("ipv4:10.0.0.1:1002") is None, "a third connection"
    assert peers.admit("ipv4:10.0.0.2:1002") is not None, "another address has its own"
    again = peers.admit("ipv4:10.0.0.1:1000")
    assert again is not None, "another stream on a connection already counted"
    first.release()
    assert peers.admit("ipv4:10.0.0.1:1002") is None, "its other stream still holds it"
    again.release()
    again.release()  # idempotent: a release counts once
    assert peers.connections("10.0.0.1") == 1
    assert peers.admit("ipv4:10.0.0.1:1002") is not None


def test_ipv6_hosts_of_one_network_share_its_limit() -> None:
    peers = PeerConnections(limit=1)
    assert peers.admit("ipv6:[2001:db8::1]:1") is not None
    assert peers.admit("ipv6:[2001:db8::2]:1") is None
    assert peers.admit("ipv6:[2001:db8:0:1::1]:1") is not None
