"""Hosts made of Linux network namespaces, for tests that put the mesh's services on
separate machines and cut the links between them.

A ``Network`` is a bridge device in the root namespace with an address of its own (the
"services" host: RabbitMQ, Redis and PostgreSQL stay there, reached through a
``tests.support.tcp_relay``) and any number of hosts: a namespace each, joined to the
bridge by a veth pair, with an address from a private range and a name. Every host
resolves every name: ``ip netns exec`` bind-mounts ``/etc/netns/<namespace>/hosts`` over
``/etc/hosts`` for the command it runs, so the services dial each other (and verify TLS
certificates) by name. The test's own process stays in the root namespace.

``cut`` sets a host's veth end in the root namespace down: the host keeps its address and
routes, its packets go nowhere and nothing answers it, as after a pulled cable (no reset
reaches either side; this kernel has no ``netem`` to delay or drop part of the traffic).
``restore`` sets it up again. ``cut_service`` cuts one host's path to one of the services
alone (in the relay: ``tests.support.tcp_relay``), ``restore_service`` gives it back.

Everything is named ``fwn<pid>...`` after the test process that made it. ``close`` removes
it all; ``remove_stale`` removes what a crashed earlier run (a dead pid) left behind, and
runs before each new network. Needs root and iproute2: ``Network`` raises
``NamespacesUnavailable`` (the test fails, it is not skipped) when either is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fleetwire.process.lifeline import bound_command

PREFIX = "fwn"
DOMAIN = "fleetwire.test"  # .test is reserved (RFC 2606): names no one else's host
NETNS_ETC = Path("/etc/netns")
_OWNED = re.compile(rf"^{PREFIX}(\d+)")
SERVICE_PORTS = (5432, 5672, 6379)  # PostgreSQL, RabbitMQ, Redis on the host's loopback


class NamespacesUnavailable(RuntimeError):
    """This machine cannot make the test's hosts (not root, no ``ip``, no namespaces)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(name: str) -> bool:
    owned = _OWNED.match(name)
    return owned is not None and not _alive(int(owned.group(1)))


def remove_stale() -> list[str]:
    """Deletes namespaces, links and hosts files named after a test process that is gone;
    returns their names."""
    removed = []
    for line in _ip("netns", "list").stdout.splitlines():
        namespace = line.split(" ", 1)[0]
        if _stale(namespace):
            _ip("netns", "delete", namespace, check=False)
            removed.append(namespace)
    for line in _ip("-o", "link", "show").stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if _stale(name):
            _ip("link", "delete", name, check=False)
            removed.append(name)
    if NETNS_ETC.is_dir():
        for directory in NETNS_ETC.iterdir():
            if _stale(directory.name):
                shutil.rmtree(directory, ignore_errors=True)
    return removed


def _free_third_octet(pid: int) -> int:
    """``n`` of a ``10.213.<n>.0/24`` and ``10.214.<n>.0/24`` no interface of the root
    namespace uses yet (another run's network), starting from one given by ``pid``."""
    used = _ip("-o", "-4", "addr", "show").stdout
    for step in range(250):
        n = (pid + step) % 250 + 1
        if f" 10.213.{n}." not in used and f" 10.214.{n}." not in used:
            return n
    raise NamespacesUnavailable("no free 10.213.<n>.0/24 for the test's network")


def require_namespaces() -> None:
    """Raises ``NamespacesUnavailable`` saying what is missing."""
    if os.geteuid() != 0:
        raise NamespacesUnavailable("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None:
        raise NamespacesUnavailable("iproute2's `ip` is not installed (apt-get install iproute2)")


@dataclass
class Host:
    """One namespace: ``name`` is its DNS name, ``address`` its IPv4 address."""

    short: str
    namespace: str
    name: str
    address: str
    veth: str  # the root namespace's end: what ``cut`` sets down
    front_address: str = ""  # on the front network, when the host has a link there

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the host (with its hosts file), bound to this process by the
        project's lifeline: it dies with the test, however the test dies."""
        return ["ip", "netns", "exec", self.namespace, *bound_command(argv)]


@dataclass
class Network:
    """A private /24 (``10.213.<n>.0``, ``n`` one no other run on this machine uses), its
    bridge device at ``.1`` and hosts from ``.10`` up."""

    pid: int = field(default_factory=os.getpid)
    hosts: dict[str, Host] = field(default_factory=dict)
    _relay: subprocess.Popen[str] | None = None
    _made: bool = False

    def __post_init__(self) -> None:
        require_namespaces()
        third = _free_third_octet(self.pid)
        self.subnet = f"10.213.{third}"
        self.bridge = f"{PREFIX}{self.pid}br"
        self.services_address = f"{self.subnet}.1"
        self.services_name = f"services.{DOMAIN}"
        self.front_subnet = f"10.214.{third}"
        self.front_bridge = f"{PREFIX}{self.pid}fr"
        self._front_made = False

    def start(self) -> None:
        """Makes the bridge device and starts the relay to the host's services."""
        remove_stale()
        self._made = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
        except subprocess.CalledProcessError as err:
            raise NamespacesUnavailable(f"cannot make a bridge device: {err.stderr}") from err
        _ip("addr", "add", f"{self.services_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        root = Path(__file__).resolve().parents[2]
        # Bound to this process (the project's lifeline): a crashed test leaves no relay.
        relay = [sys.executable, "-m", "tests.support.tcp_relay", self.services_address]
        self._relay = subprocess.Popen(
            bound_command([*relay, *(str(p) for p in SERVICE_PORTS)]),
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._relay.stdout is not None
        if self._relay.stdout.readline().strip() != "ready":
            raise RuntimeError("the TCP relay to the host's services did not start")

    def add_host(self, short: str) -> Host:
        """A namespace joined to the bridge, its loopback up, named ``<short>.<DOMAIN>``."""
        index = len(self.hosts)
        namespace = f"{PREFIX}{self.pid}-{short}"
        veth, peer = f"{PREFIX}{self.pid}v{index}", f"{PREFIX}{self.pid}p{index}"
        try:
            _ip("netns", "add", namespace)
        except subprocess.CalledProcessError as err:
            raise NamespacesUnavailable(f"ip netns add failed: {err.stderr}") from err
        host = Host(short, namespace, f"{short}.{DOMAIN}", f"{self.subnet}.{10 + index}", veth)
        self.hosts[short] = host
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", namespace)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", namespace, "link", "set", peer, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        self._write_hosts_files()
        return host

    def add_front(self, host: Host) -> str:
        """Gives ``host`` a second link (``eth1``) on a front network shared only with the
        root namespace, where clients are; returns its address there. ``cut`` leaves it
        up: the host loses its back end (the services, the other hosts), not its clients."""
        if not self._front_made:
            _ip("link", "add", self.front_bridge, "type", "bridge")
            self._front_made = True
            _ip("addr", "add", f"{self.front_subnet}.1/24", "dev", self.front_bridge)
            _ip("link", "set", self.front_bridge, "up")
        index = list(self.hosts).index(host.short)
        veth, peer = f"{PREFIX}{self.pid}f{index}", f"{PREFIX}{self.pid}q{index}"
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer, "netns", host.namespace)
        _ip("link", "set", veth, "master", self.front_bridge)
        _ip("link", "set", veth, "up")
        host.front_address = f"{self.front_subnet}.{10 + index}"
        _ip("-n", host.namespace, "link", "set", peer, "name", "eth1")
        _ip("-n", host.namespace, "addr", "add", f"{host.front_address}/24", "dev", "eth1")
        _ip("-n", host.namespace, "link", "set", "eth1", "up")
        return host.front_address

    def _write_hosts_files(self) -> None:
        lines = [
            "127.0.0.1 localhost",
            "::1 localhost",
            f"{self.services_address} {self.services_name}",
        ]
        lines += [f"{h.address} {h.name}" for h in self.hosts.values()]
        for host in self.hosts.values():
            directory = NETNS_ETC / host.namespace
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "hosts").write_text("\n".join(lines) + "\n")

    def cut(self, host: Host) -> None:
        """Pulls the host's cable: its link in the root namespace goes down."""
        _ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.veth, "up")

    def cut_service(self, host: Host, port: int) -> None:
        """Cuts ``host``'s link to the service on ``port`` (one of ``SERVICE_PORTS``) only:
        its open connections stall, new ones wait; its other links stay up."""
        self._tell_relay(f"cut {host.address} {port}")

    def restore_service(self, host: Host, port: int) -> None:
        self._tell_relay(f"restore {host.address} {port}")

    def _tell_relay(self, command: str) -> None:
        relay = self._relay
        if relay is None or relay.stdin is None or relay.stdout is None:
            raise RuntimeError("the relay to the host's services is not running")
        relay.stdin.write(command + "\n")
        relay.stdin.flush()
        if relay.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the relay did not take {command!r}")

    def close(self) -> None:
        """Removes every host, the bridge and the hosts files; stops the relay. Idempotent."""
        if self._relay is not None:
            self._relay.kill()
            self._relay.wait(10)
            self._relay = None
        for host in self.hosts.values():
            _ip("netns", "delete", host.namespace, check=False)
            shutil.rmtree(NETNS_ETC / host.namespace, ignore_errors=True)
        self.hosts.clear()
        with contextlib.suppress(OSError):
            NETNS_ETC.rmdir()  # only when empty: other users' namespaces keep theirs
        if self._made:
            _ip("link", "delete", self.bridge, check=False)
            self._made = False
        if self._front_made:
            _ip("link", "delete", self.front_bridge, check=False)
            self._front_made = False

    def leftovers(self) -> list[str]:
        """Namespaces and links of this network still present (empty after ``close``)."""
        mine = f"{PREFIX}{self.pid}"
        names = [line.split(" ", 1)[0] for line in _ip("netns", "list").stdout.splitlines()]
        names += [
            line.split(":", 2)[1].strip().split("@", 1)[0]
            for line in _ip("-o", "link", "show").stdout.splitlines()
        ]
        return [n for n in names if n.startswith(mine)]
