"""An in-process TCP relay in front of a server that a test can cut: ``cut()`` aborts every
open connection (the client sees its calls fail with UNAVAILABLE, as when a load balancer
or the network drops them), and while ``blocked`` new connections are aborted at once (the
server is unreachable). Unlike stopping the server, nothing on the server side changes:
the test cuts the client's link, not the mesh."""

from __future__ import annotations

import asyncio
import contextlib

CHUNK = 64 * 1024
HOST = "127.0.0.1"


class CuttableRelay:
    """Forwards connections to ``HOST:<port>`` from ``address`` (a free port of its own).

    ``start``/``stop`` own the listener and every connection's task; ``stop`` is
    idempotent."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.blocked = False
        self.cuts = 0

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the relay is not started")
        port = self._server.sockets[0].getsockname()[1]
        return f"{HOST}:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, 0)

    def cut(self) -> None:
        """Aborts every open connection, both ways (a reset, not a graceful close)."""
        self.cuts += 1
        self._abort_all()

    async def stop(self) -> None:
        """Stops listening and resets what is still open; each connection's task then ends
        on its own (cancelling it would make asyncio's server log the cancellation)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._abort_all()
        if self._tasks:
            _, stuck = await asyncio.wait(set(self._tasks), timeout=5)
            for task in stuck:
                task.cancel()

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        ends = {writer}
        try:
            if self.blocked:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(HOST, self._target_port)
            except OSError:
                return
            ends.add(up_writer)
            self._writers.update(ends)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in ends:
                end.transport.abort()
                self._writers.discard(end)
            if task is not None:
                self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.transport.abort()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()
