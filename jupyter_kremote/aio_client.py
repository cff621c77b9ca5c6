"""Kernel-side ZeroMQ client for the async API, driven by the event loop itself.

The magics keep :class:`~jupyter_kremote.client.ClusterClient` (synchronous, so that the
stop button interrupts a cell). The public async API (``LocalCluster``, ``map``, remote
functions) uses this twin instead: each agent's sockets are registered with the running
loop (``add_reader`` on ZeroMQ's edge-triggered FD), replies are routed to futures by
request id, and many requests can be in flight at once (a map keeps every agent busy)
without a thread per call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import zmq

from .client import (
    INTERRUPT_GRACE,
    NO_STDIN,
    TICK,
    AgentChannel,
    Endpoint,
    Liveness,
    OutputHook,
    check_access,
)
from .errors import AccessRefused, AgentDied, ClusterTimeout
from .protocol import Message, ProtocolError, Signer, send

#: how long a lone request waits on its socket before handing over to the event loop
SPIN_MS = 1
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


@dataclass(eq=False)
class _Call:
    """One request in flight: who still owes a reply, and where output goes."""

    pending: set[int]
    future: asyncio.Future
    on_output: OutputHook | None = None
    replies: dict[int, Message] = field(default_factory=dict)
    deadline: float | None = None
    interrupted_at: float | None = None
    watched: bool = False  # liveness and timeout checked by the client's ticker


class AsyncClusterClient:
    """Talks to every agent of one cluster from an asyncio event loop.

    The sockets are attached to the loop that first uses them; a later loop (a second
    ``asyncio.run``) takes them over.
    """

    def __init__(self, key: bytes, endpoints: list[Endpoint], liveness: Liveness) -> None:
        self.signer = Signer(key, sender="kernel-aio")
        ctx = zmq.Context.instance()
        self.channels = {ep.rank: AgentChannel(ctx, ep) for ep in endpoints}
        self.ranks = sorted(self.channels)
        self.liveness = liveness
        self._calls: dict[str, _Call] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds: list[int] = []
        self._ticker: asyncio.TimerHandle | None = None
        self.closed = False

    # -- event loop wiring ------------------------------------------------------------
    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return loop
        self._detach()
        for rank, ch in self.channels.items():
            for sock in (ch.data, ch.control):
                fd = sock.getsockopt(zmq.FD)
                loop.add_reader(fd, self._readable, sock, rank)
                self._fds.append(fd)
                self._readable(sock, rank)  # anything that came while detached
        self._loop = loop
        return loop

    def _detach(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            for fd in self._fds:
                loop.remove_reader(fd)
        self._fds = []

    def _readable(self, sock: zmq.Socket, rank: int) -> None:
        """Route every waiting message; ZeroMQ's FD is edge-triggered, so drain it all."""
        if self.closed:
            return
        receive = self.signer.receive
        calls = self._calls
        while sock.getsockopt(_EVENTS) & _POLLIN:
            try:
                _, msg = receive(sock)
            except ProtocolError:
                continue
            call = calls.get(msg.parent_id)
            if call is None:
                continue  # late output or reply of an abandoned request
            if msg.kind == "reply":
                call.replies[rank] = msg
                call.pending.discard(rank)
                if not call.pending and not call.future.done():
                    call.future.set_result(None)
            elif msg.kind == "input_request":  # no prompt here: input() raises remotely
                send(sock, self.signer.encode("input_reply", NO_STDIN, parent_id=msg.msg_id))
            elif call.on_output is not None:
                try:
                    call.on_output(rank, msg)
                except Exception as exc:  # noqa: BLE001 - a broken hook fails its request
                    if not call.future.done():
                        call.future.set_exception(exc)

    def _send(self, sock: zmq.Socket, rank: int, frames: list[Any]) -> None:
        send(sock, frames)
        # a send can take in a reply without the FD signalling again: look now
        if sock.getsockopt(_EVENTS) & _POLLIN:
            assert self._loop is not None
            self._loop.call_soon(self._readable, sock, rank)

    def close(self) -> None:
        self.closed = True
        self._detach()
        for call in self._calls.values():
            if not call.future.done():
                call.future.cancel()
        for ch in self.channels.values():
            ch.close()

    # -- data plane -------------------------------------------------------------------
    async def request(
        self,
        kind: str,
        content: dict[str, Any] | None = None,
        payload: Any = None,
        *,
        ranks: list[int] | None = None,
        has_payload: bool | None = None,
        on_output: OutputHook | None = None,
        timeout: float | None = None,
    ) -> dict[int, Message]:
        """Send one request to ``ranks`` and wait for every reply, streaming output.

        Raises AgentDied, ClusterTimeout (after interrupting), or CancelledError (after
        interrupting the agents, when the awaiting task is cancelled); replies with
        ``status: error`` are returned, not raised.
        """
        loop = self._attach()
        ranks = self.ranks if ranks is None else ranks
        msg_id, frames = self.signer.request(kind, content, payload, has_payload=has_payload)
        call = _Call(set(ranks), loop.create_future(), on_output)
        if timeout:
            call.deadline = loop.time() + timeout
        self._calls[msg_id] = call
        try:
            for r in ranks:
                self._send(self.channels[r].data, r, frames)
            if len(ranks) == 1 and len(self._calls) == 1:
                # nothing else in flight: wait briefly on the socket itself, as the
                # synchronous client does, so that a quick reply costs no trip through
                # the event loop; then read what came (poll may have taken the FD's
                # edge, so look in any case). Longer requests continue on the loop.
                sock = self.channels[ranks[0]].data
                sock.poll(SPIN_MS)
                self._readable(sock, ranks[0])
            await self._wait(loop, call, msg_id)
        finally:
            del self._calls[msg_id]
        if call.interrupted_at is not None:
            raise ClusterTimeout(
                f"the request ran over its timeout of {timeout:g}s and was interrupted; "
                "the agents kept their variables")
        return call.replies

    async def _wait(self, loop: asyncio.AbstractEventLoop, call: _Call, msg_id: str) -> None:
        if call.future.done():
            call.future.result()
            return
        call.watched = True
        if self._ticker is None:  # one timer for every request in flight
            self._ticker = loop.call_later(TICK, self._tick, loop)
        try:
            await call.future
        except asyncio.CancelledError:
            if call.pending:
                self.interrupt_nowait(sorted(call.pending), request=msg_id)
            raise

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every TICK while requests wait: liveness (once per rank), then timeouts."""
        self._ticker = None
        waiting = [(i, c) for i, c in self._calls.items() if c.watched and not c.future.done()]
        if not waiting or self.closed:
            return
        gone = {r: why for r in set().union(*(c.pending for _, c in waiting))
                if (why := self.liveness(r)) is not None}
        now = loop.time()
        for msg_id, call in waiting:
            dead = sorted(r for r in call.pending if r in gone)
            try:
                check_access(self.channels, call.pending)
            except AccessRefused as exc:
                call.future.set_exception(exc)
                continue
            if dead:
                others = sorted(call.pending - set(dead))
                if others:
                    self.interrupt_nowait(others, request=msg_id)
                call.future.set_exception(
                    AgentDied(f"rank {dead[0]} {gone[dead[0]]} while running the request"))
            elif call.deadline is not None and now > call.deadline:
                if call.interrupted_at is None:
                    call.interrupted_at = now
                    self.interrupt_nowait(sorted(call.pending), request=msg_id)
                elif now - call.interrupted_at > INTERRUPT_GRACE:
                    call.future.set_result(None)  # reported as ClusterTimeout by request()
        self._ticker = loop.call_later(TICK, self._tick, loop)

    # -- control plane ----------------------------------------------------------------
    async def control(self, kind: str, content: dict[str, Any] | None = None, *,
                      ranks: list[int] | None = None, timeout: float = 2.0) -> dict[int, dict]:
        """A control request; ranks that do not answer within ``timeout`` are left out."""
        loop = self._attach()
        ranks = self.ranks if ranks is None else ranks
        msg_id, frames = self.signer.request(kind, content)
        call = _Call(set(ranks), loop.create_future())
        self._calls[msg_id] = call
        try:
            for r in ranks:
                self._send(self.channels[r].control, r, frames)
            await asyncio.wait([call.future], timeout=timeout)
        finally:
            del self._calls[msg_id]
        return {r: m.content for r, m in call.replies.items()}

    def interrupt_nowait(self, ranks: list[int], request: str = "") -> None:
        """Ask ``ranks`` to interrupt what they run (only ``request``, when named: an
        interrupt that arrives late must not stop the next one); answers are not awaited."""
        if self.closed or self._loop is None:
            return
        _, frames = self.signer.request("interrupt", {"request": request} if request else None)
        for r in ranks:
            self._send(self.channels[r].control, r, frames)

