"""A TCP relay for the network-namespace tests: it listens on the host's address on the
test's own network and forwards each connection to a service on the host's loopback.

RabbitMQ, Redis and PostgreSQL here listen on 127.0.0.1 only, which no other namespace can
reach; changing their configuration would change the machine for everyone. The relay runs
in the root namespace, so a service behind it sees a loopback client (RabbitMQ's ``guest``
and PostgreSQL's ``trust`` rule keep working). A link cut stops the packets before they
reach the relay, so it cuts the service as a real cable would.

    python -m tests.support.tcp_relay LISTEN_HOST PORT [PORT...]   # to 127.0.0.1:PORT

Prints ``ready`` once every port listens; runs until killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

TARGET_HOST = "127.0.0.1"
CHUNK = 64 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def _serve(port: int, client: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(TARGET_HOST, port)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(client, upstream_writer), _pipe(upstream_reader, writer))


async def relay(listen_host: str, ports: list[int]) -> None:
    servers = []
    for port in ports:

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
        ) -> None:
            await _serve(port, reader, writer)

        servers.append(await asyncio.start_server(handle, listen_host, port))
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(relay(sys.argv[1], [int(p) for p in sys.argv[2:]]))
