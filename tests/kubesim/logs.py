"""Container logs: timestamped records, tailLines/sinceSeconds/timestamps, and follow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .util import rfc3339_nano, wait_event


@dataclass(frozen=True)
class LogQuery:
    tail_lines: int | None = None
    since: float | None = None  # epoch seconds
    timestamps: bool = False
    limit_bytes: int | None = None


class LogBuffer:
    """What one container instance wrote to stdout and stderr, as CRI log records.

    Each record is (time, bytes); a record that does not end in a newline is a partial line
    (CRI's "P" tag), continued by the next record.
    """

    def __init__(self) -> None:
        self.records: list[tuple[float, bytes]] = []
        self.closed = False
        self._grew = asyncio.Event()

    def write(self, data: bytes) -> None:
        now = time.time()
        for line in data.splitlines(keepends=True):
            self.records.append((now, line))
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._grew.set()
        self._grew = asyncio.Event()

    def _line_starts(self) -> list[int]:
        """Indexes of records that begin a line."""
        starts, at_start = [], True
        for i, (_, data) in enumerate(self.records):
            if at_start:
                starts.append(i)
            at_start = data.endswith(b"\n")
        return starts

    def _render(self, first: int, upto: int, timestamps: bool) -> bytes:
        out = bytearray()
        at_start = first == 0 or self.records[first - 1][1].endswith(b"\n")
        for ts, data in self.records[first:upto]:
            if timestamps and at_start:
                out += rfc3339_nano(ts).encode() + b" "
            out += data
            at_start = data.endswith(b"\n")
        return bytes(out)

    def _first(self, query: LogQuery) -> int:
        starts = self._line_starts()
        if query.since is not None:
            starts = [i for i in starts if self.records[i][0] >= query.since]
        if query.tail_lines is not None:
            starts = starts[-query.tail_lines:] if query.tail_lines > 0 else []
        return starts[0] if starts else len(self.records)

    def read(self, query: LogQuery) -> bytes:
        data = self._render(self._first(query), len(self.records), query.timestamps)
        return data[:query.limit_bytes] if query.limit_bytes else data

    async def follow(self, query: LogQuery, gone: Callable[[], bool] = lambda: False
                     ) -> AsyncIterator[bytes]:
        """Yield what is there, then what comes, until the container's output ends (or
        `gone()`, checked every second, says the reader left)."""
        position = self._first(query)
        sent = 0
        while True:
            grew = self._grew
            if position < len(self.records):
                upto = len(self.records)
                chunk = self._render(position, upto, query.timestamps)
                position = upto
                if query.limit_bytes:
                    chunk = chunk[:max(0, query.limit_bytes - sent)]
                sent += len(chunk)
                if chunk:
                    yield chunk
                if query.limit_bytes and sent >= query.limit_bytes:
                    return
                continue
            if self.closed or gone():
                return
            await wait_event(grew, 1.0)
