"""`pods/NAME/portforward` over WebSocket, as the API server and the kubelet serve it.

Read against Kubernetes 1.31-1.35: pkg/kubelet/cri/streaming/portforward/websocket.go and
apimachinery's util/httpstream/wsstream. The client asks for ports in `ports` (repeatable,
comma-separated); each port gets two channels, data (2n) and error (2n+1), and the server's
first frame on each is the port as two little-endian bytes. Binary subprotocols
(`v4.channel.k8s.io`, or none) prefix each message with the channel byte; the base64 one
(`v4.base64.channel.k8s.io`) with the channel's ASCII digit and base64 data. One WebSocket
carries one TCP connection per port: when the pod side ends, the WebSocket closes.

The real kubelet dials 127.0.0.1:PORT inside the pod's network namespace; pods here share
the host's, so the emulator dials the pod's IP (see the README).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from typing import Any

from aiohttp import WSMsgType, web

from . import errors
from .auth import UserInfo
from .config import KubeSimConfig
from .rbac import Attributes, Authorizer
from .resources import PODS
from .spdy import TUNNEL, serve_tunnel
from .store import Store

BINARY = "v4.channel.k8s.io"
BASE64 = "v4.base64.channel.k8s.io"
#: what wsstream negotiates for port-forward ("" = no subprotocol offered: binary)
PROTOCOLS = (BINARY, BASE64)
CHUNK = 256 * 1024


def parse_ports(values: list[str]) -> list[int]:
    """The `ports` query values as the kubelet's NewV4Options parses them."""
    if not values:
        raise errors.bad_request('query parameter "port" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise errors.bad_request('query parameter "port" cannot be empty')
        for part in value.split(","):
            try:
                port = int(part)
            except ValueError:
                raise errors.bad_request(
                    f'unable to parse "{value}" as a port: strconv.ParseUint: parsing '
                    f'"{part}": invalid syntax') from None
            if not 0 < port < 65536:
                raise errors.bad_request(f'port "{value}" must be > 0')
            ports.append(port)
    return ports


def version_at_least(version: str, major: int, minor: int) -> bool:
    parts = version.lstrip("v").split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (IndexError, ValueError):
        return False


class PortForwards:
    """Serves port-forward WebSockets and remembers them (so a knob can drop them)."""

    def __init__(self, store: Store, authorizer: Authorizer | None,
                 config: KubeSimConfig) -> None:
        self.store = store
        self.authorizer = authorizer
        self.config = config
        self.open: set[web.WebSocketResponse] = set()
        self.served = 0  # WebSockets accepted, for tests that count reconnections
        #: (port, direction) armed by `drop_on_data`: the next data that way is lost and its
        #: WebSocket closed (direction "to_pod" or "from_pod")
        self.armed: set[tuple[int, str]] = set()

    async def serve(self, request: web.Request, user: UserInfo, namespace: str,
                    name: str) -> web.StreamResponse:
        pod = self.store.get(PODS, namespace, name)  # 404 pods "x" not found
        if request.method == "GET" and self.authorizer is not None and \
                version_at_least(self.config.version, 1, 35):
            # AuthorizePodWebsocketUpgradeCreatePermission (on from 1.35): a WebSocket GET
            # needs `create`, as the SPDY POST always did
            self.authorizer.check(Attributes(user, "create", True, "", "v1", "pods",
                                             "portforward", namespace, name))
        if not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(f"pod {name} does not have a host assigned")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                   .split(",") if p.strip()]
        if upgrade and TUNNEL in offered:  # kubectl: SPDY inside; ports in stream headers
            self.served += 1
            return await serve_tunnel(request, pod, lambda port: self._dial(pod, port),
                                      self.open)
        ports = parse_ports(request.query.getall("ports", []))
        if not upgrade:
            raise errors.bad_request("Upgrade request required")
        chosen = next((p for p in offered if p in PROTOCOLS), None)
        if offered and chosen is None:  # x/net/websocket answers a failed handshake so
            return web.Response(status=403, text=f"requested protocol(s) are not supported: "
                                f"{offered}; supports {['', *PROTOCOLS]}")
        ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=0,
                                   autoping=True)
        await ws.prepare(request)
        self.open.add(ws)
        self.served += 1
        try:
            await self._forward(ws, chosen == BASE64, pod, ports)
        finally:
            self.open.discard(ws)
            await ws.close()
        return ws

    async def _forward(self, ws: web.WebSocketResponse, b64: bool, pod: dict[str, Any],
                       ports: list[int]) -> None:
        lock = asyncio.Lock()

        async def send(channel: int, data: bytes) -> None:
            async with lock:
                if b64:
                    await ws.send_str(chr(ord("0") + channel) + base64.b64encode(data).decode())
                else:
                    await ws.send_bytes(bytes([channel]) + data)

        writers: dict[int, asyncio.StreamWriter] = {}
        tasks = []
        for i, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await send(2 * i, prefix)
            await send(2 * i + 1, prefix)
        for i, port in enumerate(ports):  # before reading: early client data waits in the socket
            conn = await self._connect(pod, i, port, send)
            if conn is not None:
                writers[i] = conn[1]
                tasks.append(asyncio.ensure_future(self._pump(conn[0], i, port, send)))
        if not tasks:
            return
        reader = asyncio.ensure_future(self._socket_side(ws, b64, writers, ports))
        try:
            # the connection ends when every port's pod side has ended, or the client left
            done = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
            await asyncio.wait({done, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [*tasks, reader]:
                task.cancel()
            for writer in writers.values():
                writer.close()
            await asyncio.gather(*tasks, reader, return_exceptions=True)

    @staticmethod
    async def _dial(pod: dict[str, Any], port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        """A connection to the pod's port, or the kubelet's error text."""
        meta = pod["metadata"]
        ip = (pod.get("status") or {}).get("podIP") or "127.0.0.1"
        try:
            return await asyncio.open_connection(ip, port)
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)  # as Go says it
            return (f"error forwarding port {port} to pod {meta['name']}, uid {meta['uid']}: "
                    f"failed to connect to localhost:{port} inside the pod: dial tcp4 "
                    f"127.0.0.1:{port}: connect: {why}")

    async def _connect(self, pod: dict[str, Any], index: int, port: int, send: Any
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        conn = await self._dial(pod, port)
        if isinstance(conn, str):
            await send(2 * index + 1, conn.encode())
            return None
        return conn

    def _lose(self, port: int, direction: str) -> bool:
        """Whether this data is the one `drop_on_data` armed for (then disarmed)."""
        if (port, direction) in self.armed:
            self.armed.discard((port, direction))
            return True
        return False

    async def _pump(self, reader: asyncio.StreamReader, index: int, port: int,
                    send: Any) -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data or (self.armed and self._lose(port, "from_pod")):
                return
            await send(2 * index, data)

    async def _socket_side(self, ws: web.WebSocketResponse, b64: bool,
                           writers: dict[int, asyncio.StreamWriter], ports: list[int]
                           ) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY and not b64:
                data: bytes = msg.data
            elif msg.type == WSMsgType.TEXT and b64:
                text: str = msg.data
                if not text:
                    continue
                channel = ord(text[0]) - ord("0")
                if not 0 <= channel < 256:
                    continue
                data = bytes([channel]) + base64.b64decode(text[1:])
            else:
                continue
            if len(data) < 2 or data[0] % 2:  # empty, or written to a write-only channel
                continue
            writer = writers.get(data[0] // 2)
            if writer is None:  # a port whose connection failed
                continue
            if self.armed and self._lose(ports[data[0] // 2], "to_pod"):
                return
            writer.write(data[1:])
            await writer.drain()

    def drop_on_data(self, port: int, direction: str) -> None:
        """Lose the next data sent `direction` ("to_pod" or "from_pod") on a forward of
        `port`, closing its WebSocket: a drop in the very instant a request or its reply
        crosses."""
        if direction not in ("to_pod", "from_pod"):
            raise ValueError(f"direction {direction!r}: to_pod or from_pod")
        self.armed.add((port, direction))

    async def drop(self) -> int:
        """Close every open port-forward WebSocket (an API server restart, a proxy's idle
        timeout); returns how many."""
        dropped = list(self.open)
        for ws in dropped:
            with contextlib.suppress(Exception):
                await ws.close()
        return len(dropped)
