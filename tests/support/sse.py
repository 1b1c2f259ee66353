"""Reading server-sent events (text/event-stream) in tests: the fields of each event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: Any  # the parsed JSON of ``data``
    id: str | None


@dataclass
class EventParser:
    """Feeds lines (without their line ends); returns an event when one is complete."""

    _fields: dict[str, str] = field(default_factory=dict)

    def feed(self, line: str) -> Event | None:
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                self._fields[name] = value.removeprefix(" ")
            return None
        fields, self._fields = self._fields, {}
        if "data" not in fields:
            return None
        return Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))


def parse_events(lines: Iterable[str]) -> list[Event]:
    """The complete events of ``lines`` (an event ends at a blank line)."""
    parser = EventParser()
    return [event for line in lines if (event := parser.feed(line)) is not None]


async def events_of(response: httpx.Response) -> AsyncIterator[Event]:
    """The events of a streamed httpx response, as they arrive."""
    parser = EventParser()
    async for line in response.aiter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event
