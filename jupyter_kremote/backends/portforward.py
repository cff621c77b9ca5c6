"""Reach a pod's port through the API server: ``pods/NAME/portforward`` over WebSocket.

Used when the kernel (or its server) cannot reach pod IPs, e.g. JupyterLab on a laptop with
a kubeconfig. A :class:`PortForward` listens on ``127.0.0.1:<local port>``; each TCP
connection accepted there opens its own WebSocket (as ``kubectl port-forward`` opens a
stream per connection), so a dropped WebSocket is repaired by the client reconnecting:
ZeroMQ does that by itself. The bytes are opaque here: the agents' CURVE encryption runs
end to end through the tunnel.

Wire format (the kubelet's ``v4.channel.k8s.io``): channel 0 carries data, channel 1 errors,
each message starts with its channel byte, and the server's first message on each channel is
the port (two little-endian bytes). Everything runs on the shared :class:`KubeLoop`, with the
API client's own aiohttp session (its TLS settings and credentials).

Example::

    fwd = PortForward.open(kube_loop, "ml", "train-0-x7k2p", 5555)
    sock.connect(f"tcp://127.0.0.1:{fwd.local_port}")
    ...
    fwd.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import quote

log = logging.getLogger("jupyter_kremote.kubernetes")

PROTOCOL = "v4.channel.k8s.io"
CHUNK = 1024 * 1024
RBAC_HINT = ("jupyter-kremote needs get and create on pods/portforward there: an admin "
             "applies the shipped Role (templates/rbac.yaml)")


class PortForwardError(RuntimeError):
    """The API server refused a port-forward; the message is one line naming why."""


class PortForward:
    """One local listener forwarding to one port of one pod (see the module docstring)."""

    def __init__(self, kube: Any, namespace: str, pod: str, port: int) -> None:
        self.kube = kube  # a KubeLoop: its loop and its API client
        self.namespace = namespace
        self.pod = pod
        self.port = port
        self.local_port = 0
        self.connections = 0  # WebSockets opened so far (one per TCP connection)
        self.last_error = ""  # the last refusal or error-channel message, for messages
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._open: set[tuple[Any, asyncio.StreamWriter]] = set()  # (WebSocket, TCP) pairs

    # -- synchronous face (kernel threads) ----------------------------------------------------
    @classmethod
    def open(cls, kube: Any, namespace: str, pod: str, port: int) -> PortForward:
        """Listen on 127.0.0.1 (a free port) and return once listening."""
        fwd = cls(kube, namespace, pod, port)
        kube.run(fwd.start(), timeout=30)
        return fwd

    def check(self, timeout: float = 30.0) -> None:
        """Open and close one WebSocket, so a refusal (RBAC, a missing pod) fails now, with
        the API's message, rather than as a cell that never gets an answer."""
        self.kube.run(self._check(), timeout=timeout)

    def close(self) -> None:
        """Stop listening and end every forwarded connection."""
        if self.kube.loop.is_running():
            with contextlib.suppress(Exception):
                self.kube.run(self.stop(), timeout=10)

    # -- on the loop ----------------------------------------------------------------------------
    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.local_port = self._server.sockets[0].getsockname()[1]
        return self.local_port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for ws, writer in list(self._open):  # each connection's task then ends by itself
            writer.close()
            with contextlib.suppress(Exception):
                await ws.close()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _url(self) -> str:
        host = self.kube.api.configuration.host.rstrip("/")
        return (f"{host}/api/v1/namespaces/{quote(self.namespace)}/pods/{quote(self.pod)}"
                f"/portforward?ports={self.port}")

    async def _headers(self) -> dict[str, str]:
        auth = (await self.kube.api.configuration.auth_settings()).get("BearerToken")
        return {"Authorization": auth["value"]} if auth and auth.get("value") else {}

    async def _connect(self) -> Any:
        """A WebSocket to the pod's port, or PortForwardError with the API's message."""
        import aiohttp

        session = self.kube.api.rest_client.pool_manager
        headers = await self._headers()
        cfg = self.kube.api.configuration  # the kubeconfig's proxy, as the API client uses it
        via = {"proxy": cfg.proxy, "proxy_headers": cfg.proxy_headers} if cfg.proxy else {}
        close = aiohttp.ClientWSTimeout(ws_close=5) if hasattr(aiohttp, "ClientWSTimeout") \
            else 5.0  # aiohttp < 3.10 takes the close timeout as a number
        try:
            return await session.ws_connect(self._url(), headers=headers, protocols=(PROTOCOL,),
                                            max_msg_size=0, autoping=True, timeout=close,
                                            **via)
        except aiohttp.WSServerHandshakeError as exc:
            # the handshake error has no body: ask again without the upgrade to read the
            # API's Status (the API server authorizes before it looks at the upgrade)
            message = ""
            with contextlib.suppress(Exception):
                async with session.get(self._url(), headers=headers, **via) as resp:
                    message = json.loads(await resp.text()).get("message", "")
            what = f"port-forward to pod {self.namespace}/{self.pod} port {self.port}"
            text = f"{what} refused ({exc.status}): {message or exc.message}"
            if exc.status == 403:
                text += f"; {RBAC_HINT}"
            self.last_error = text
            raise PortForwardError(text) from None

    async def _check(self) -> None:
        ws = await self._connect()
        try:
            error = await self._first_error(ws)
        finally:
            await ws.close()
        if error:
            self.last_error = error
            raise PortForwardError(error)

    @staticmethod
    async def _first_error(ws: Any) -> str:
        """The error channel's text if the pod side refused at once, else "" (after both
        channels' port prefixes arrived)."""
        import aiohttp

        seen: set[int] = set()
        while len(seen) < 2:
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                return f"port-forward closed before it started ({msg.type.name})"
            channel = msg.data[0]
            if channel in seen and channel == 1:
                return msg.data[1:].decode(errors="replace")
            seen.add(channel)
        return ""

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            ws = await self._connect()
        except asyncio.CancelledError:
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]
            raise
        except PortForwardError as exc:
            log.warning("%s", exc)
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]
            return
        except Exception as exc:  # noqa: BLE001 - the API is unreachable: the client retries
            self.last_error = f"port-forward to pod {self.pod}: {exc}"
            log.warning("%s", self.last_error)
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]
            return
        self.connections += 1
        self._open.add((ws, writer))
        up = asyncio.ensure_future(self._upstream(reader, ws))
        down = asyncio.ensure_future(self._downstream(ws, writer))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # either side ended: end both, so the client sees the drop and reconnects
            up.cancel()
            down.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            writer.close()
            self._open.discard((ws, writer))
            with contextlib.suppress(Exception):
                await ws.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    @staticmethod
    async def _upstream(reader: asyncio.StreamReader, ws: Any) -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            await ws.send_bytes(b"\x00" + data)

    async def _downstream(self, ws: Any, writer: asyncio.StreamWriter) -> None:
        import aiohttp

        seen: set[int] = set()
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                continue
            channel = msg.data[0]
            if channel not in seen:  # the port prefix that opens each channel
                seen.add(channel)
                continue
            if channel == 0:
                writer.write(memoryview(msg.data)[1:])
                await writer.drain()
            elif channel == 1:
                # e.g. refused while the agent starts: ZeroMQ connects again
                self.last_error = msg.data[1:].decode(errors="replace")
                log.info("port-forward to pod %s: %s", self.pod, self.last_error)
        writer.close()  # the WebSocket ended: let the client see it at once and reconnect
