"""Process lifecycle helpers shared by every service's ``__main__``."""

from __future__ import annotations

import asyncio
import signal


async def wait_for_stop_signal() -> signal.Signals:
    """Waits for SIGINT or SIGTERM and returns which one arrived."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
