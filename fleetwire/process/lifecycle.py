"""Process lifecycle helpers shared by every service's ``__main__``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable


async def wait_for_stop_signal(on_reload: Callable[[], object] | None = None) -> signal.Signals:
    """Waits for SIGINT or SIGTERM and returns which one arrived; meanwhile each SIGHUP
    calls ``on_reload`` (re-reading the TLS certificate), when given."""
    loop = asyncio.get_running_loop()
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
