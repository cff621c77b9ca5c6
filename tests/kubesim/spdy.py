"""Port-forward as `kubectl port-forward` (1.31+) speaks it: SPDY/3.1 tunnelled over a
WebSocket (subprotocol `SPDY/3.1+portforward.k8s.io`, client-go's tunneling dialer).

Read against the SPDY/3 draft (frames, the zlib header dictionary of section 2.6.10.1),
apimachinery's util/httpstream/spdy (the server accepts a stream with an empty SYN_REPLY)
and the kubelet's cri/streaming/portforward/httpstream.go (per forwarded connection the
client opens an `error` stream and a `data` stream carrying the same `port` and `requestID`
headers). Each WebSocket binary message carries a piece of the SPDY byte stream. Pings are
answered; SETTINGS and WINDOW_UPDATE are ignored (no flow control, as spdystream).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

TUNNEL = "SPDY/3.1+portforward.k8s.io"
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)
FLAG_FIN = 0x01
CHUNK = 256 * 1024

_WORDS = [word.replace("_", " ") for word in (  # noqa: SIM905
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status 200_OK version HTTP/1.1 url public set-cookie "
    "keep-alive origin").split()]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502"
    "504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad "
    "Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not "
    "Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec "
    "00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,"
    "image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,public"
    "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
#: the SPDY/3 header compression dictionary: length-prefixed words, then a plain tail
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class Framer:
    """SPDY/3 frames over a byte stream; header blocks share one zlib stream per direction."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(9, zdict=DICTIONARY)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.buffer = bytearray()

    def headers(self, block: bytes) -> dict[str, str]:
        raw = self._inflate.decompress(block)
        (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
            (n,) = struct.unpack_from(">I", raw, pos)
            out[name] = raw[pos + 4:pos + 4 + n].decode()
            pos += 4 + n
        return out

    def _block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers)) + b"".join(
            struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
            for k, v in headers.items())
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(kind: int, flags: int, body: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(body)) + body

    def syn_reply(self, stream: int) -> bytes:
        return self.control(SYN_REPLY, 0, struct.pack(">I", stream) + self._block({}))

    @staticmethod
    def data(stream: int, payload: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", stream, ((FLAG_FIN if fin else 0) << 24) | len(payload)) \
            + payload

    def frames(self, chunk: bytes) -> list[tuple[bool, int, int, bytes]]:
        """Complete frames in what arrived: (control, type or stream id, flags, body)."""
        self.buffer += chunk
        out = []
        while len(self.buffer) >= 8:
            first, second = struct.unpack_from(">II", self.buffer)
            length = second & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                break
            body = bytes(self.buffer[8:8 + length])
            del self.buffer[:8 + length]
            if first & 0x80000000:
                out.append((True, first & 0xFFFF, second >> 24, body))
            else:
                out.append((False, first & 0x7FFFFFFF, second >> 24, body))
        return out


class SpdyTunnel:
    """One kubectl port-forward session over one WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, pod: dict[str, Any],
                 connect: Callable[[int], Awaitable[tuple[Any, Any] | str]]) -> None:
        self.ws = ws
        self.pod = pod
        self.connect = connect  # port -> (reader, writer), or the error text
        self.framer = Framer()
        self.lock = asyncio.Lock()
        self.pairs: dict[str, dict[str, int]] = {}  # requestID -> {"error": id, "data": id}
        self.writers: dict[int, asyncio.StreamWriter] = {}  # data stream -> pod connection
        self.tasks: set[asyncio.Task[None]] = set()

    async def send(self, frame: bytes) -> None:
        async with self.lock:
            await self.ws.send_bytes(frame)

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.BINARY:
                    continue
                for control, kind, flags, body in self.framer.frames(msg.data):
                    await (self._control(kind, body) if control else
                           self._data(kind, flags, body))
        finally:
            for task in list(self.tasks):
                task.cancel()
            for writer in self.writers.values():
                writer.close()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _control(self, kind: int, body: bytes) -> None:
        if kind == SYN_STREAM:
            (stream,) = struct.unpack_from(">I", body)
            stream &= 0x7FFFFFFF
            headers = self.framer.headers(body[10:])
            await self.send(self.framer.syn_reply(stream))
            pair = self.pairs.setdefault(headers.get("requestid", ""), {})
            pair[headers.get("streamtype", "")] = stream
            pair["port"] = int(headers.get("port") or 0)
            if "error" in pair and "data" in pair:
                # dial before reading on, so the data that follows finds its connection
                conn = await self.connect(pair["port"])
                if not isinstance(conn, str):
                    self.writers[pair["data"]] = conn[1]
                task = asyncio.ensure_future(self._forward(pair, conn))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        elif kind == PING:
            await self.send(self.framer.control(PING, 0, body))
        elif kind == GOAWAY:
            await self.ws.close()

    async def _data(self, stream: int, flags: int, body: bytes) -> None:
        writer = self.writers.get(stream)
        if writer is None:
            return  # the error stream (the client writes nothing there), or a closed one
        if body:
            writer.write(body)
            await writer.drain()
        if flags & FLAG_FIN and writer.can_write_eof():
            writer.write_eof()  # the client closed its side: half-close towards the pod

    async def _forward(self, pair: dict[str, int], conn: tuple[Any, Any] | str) -> None:
        error, data = pair["error"], pair["data"]
        if isinstance(conn, str):
            await self.send(self.framer.data(error, conn.encode()))
        else:
            reader, writer = conn
            try:
                while chunk := await reader.read(CHUNK):
                    await self.send(self.framer.data(data, chunk))
            finally:
                self.writers.pop(data, None)
                writer.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(self.framer.data(data, b"", fin=True))
            await self.send(self.framer.data(error, b"", fin=True))


async def serve_tunnel(request: web.Request, pod: dict[str, Any],
                       connect: Callable[[int], Awaitable[tuple[Any, Any] | str]],
                       track: set[web.WebSocketResponse]) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=(TUNNEL,), max_msg_size=0)
    await ws.prepare(request)
    track.add(ws)
    try:
        await SpdyTunnel(ws, pod, connect).run()
    finally:
        track.discard(ws)
        await ws.close()
    return ws
