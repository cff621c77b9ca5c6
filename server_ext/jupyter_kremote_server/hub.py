"""Fan-out of cluster changes to every open WebSocket, whatever their number.

The manager publishes each change once; each subscriber (one per browser tab) gets its own
bounded queue, so a slow tab drops its oldest messages and reconnects for a fresh snapshot
instead of holding the server back.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: messages a subscriber may fall behind before it is told to resynchronise
QUEUE_SIZE = 1000


class Hub:
    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(queue)

    def publish(self, message: dict[str, Any]) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # this client is stuck: end it, it reconnects
                self._queues.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)

    def close(self) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:
                pass
        self._queues.clear()
