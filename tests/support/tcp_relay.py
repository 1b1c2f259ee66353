"""A TCP relay for the network-namespace tests: it listens on the host's address on the
test's own network and forwards each connection to a service on the host's loopback.

RabbitMQ, Redis and PostgreSQL here listen on 127.0.0.1 only, which no other namespace can
reach; changing their configuration would change the machine for everyone. The relay runs
in the root namespace, so a service behind it sees a loopback client (RabbitMQ's ``guest``
and PostgreSQL's ``trust`` rule keep working). A link cut stops the packets before they
reach the relay, so it cuts the service as a real cable would.

One link can also be cut here alone: one host's path to one service, while its other
services and the other hosts' paths stay. The relay knows each connection's source
address, so it can hold the traffic of (source, port) — both directions, and the closing
of either side — and let it go on when the link is restored, as TCP's retransmissions
would after a cable is plugged back in. A connection opened during the cut waits, as a
SYN would be retransmitted, and reaches the service once the link is back. (The kernel
still acknowledges the bytes it buffers, so the peers see no answers rather than lost
packets; nothing above TCP can tell the two apart. This kernel has no ``netem`` and the
machine no packet filter, which would cut per port in the kernel.)

    python -m tests.support.tcp_relay LISTEN_HOST PORT [PORT...]   # to 127.0.0.1:PORT

Prints ``ready`` once every port listens, then reads commands on stdin, one per line,
answering ``ok`` to each: ``cut SOURCE PORT`` and ``restore SOURCE PORT``. Ends when stdin
closes (the test that started it is gone) or when killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import defaultdict

TARGET_HOST = "127.0.0.1"
CHUNK = 64 * 1024


class Links:
    """Which (source address, port) links are open; each is open until cut."""

    def __init__(self) -> None:
        self._gates: defaultdict[tuple[str, int], asyncio.Event] = defaultdict(self._open)

    @staticmethod
    def _open() -> asyncio.Event:
        gate = asyncio.Event()
        gate.set()
        return gate

    def gate(self, source: str, port: int) -> asyncio.Event:
        """Set while the link is up: traffic waits on it."""
        return self._gates[(source, port)]

    def cut(self, source: str, port: int) -> None:
        self._gates[(source, port)].clear()

    def restore(self, source: str, port: int) -> None:
        self._gates[(source, port)].set()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
) -> None:
    """Copies until end of stream; data, end and reset wait while the link is cut."""
    try:
        while True:
            data = await reader.read(CHUNK)
            await gate.wait()
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        await gate.wait()
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def _serve(
    links: Links, port: int, client: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    peer = writer.get_extra_info("peername")
    gate = links.gate(peer[0] if peer else "", port)
    await gate.wait()
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(TARGET_HOST, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(client, upstream_writer, gate), _pipe(upstream_reader, writer, gate))


async def _commands(links: Links) -> None:
    """Applies stdin's commands until it closes."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        verb, source, port = line.decode().split()
        if verb == "cut":
            links.cut(source, int(port))
        elif verb == "restore":
            links.restore(source, int(port))
        else:
            raise ValueError(f"unknown command {verb!r}")
        print("ok", flush=True)


async def relay(listen_host: str, ports: list[int]) -> None:
    links = Links()
    servers = []
    for port in ports:

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
        ) -> None:
            await _serve(links, port, reader, writer)

        servers.append(await asyncio.start_server(handle, listen_host, port))
    print("ready", flush=True)
    await _commands(links)
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(relay(sys.argv[1], [int(p) for p in sys.argv[2:]]))
