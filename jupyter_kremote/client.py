"""Kernel-side ZeroMQ client: requests to agents, live output, interrupts, liveness.

Synchronous on purpose: ``%%remote`` runs on the kernel's main thread, which must stay
interruptible by the notebook's stop button (SIGINT -> KeyboardInterrupt) and must
print output itself so that it lands in the right cell. The async public API wraps
these calls in a worker thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from .errors import AccessRefused, AgentDied, ClusterTimeout, ConnectionLost, TransferError
from .protocol import Message, ProtocolError, Signer, send, tcp_address

OutputHook = Callable[[int, Message], None]
#: answers a rank's ``input()`` (rank, prompt, password) with a line, or None to leave the
#: rank waiting; raising (StdinNotImplementedError, EOFError) raises that in the remote code
InputHook = Callable[[int, str, bool], "str | None"]
#: returns None while the rank is alive, else a description of how it ended
Liveness = Callable[[int], "str | None"]

#: the answer to ``input()`` of code run without a prompt (the Python API, `call`)
NO_STDIN = {"status": "error", "ename": "StdinNotImplementedError",
            "evalue": "input() was called, but this request has no stdin"}
TICK = 0.1  # seconds between liveness checks while waiting
INTERRUPT_GRACE = 3.0  # seconds to wait for agents to report an interrupt
#: how long a request that an agent ended because it was told to stop (SIGTERM: its pod is
#: deleted) waits for the backend to say why (an eviction, a drain) before the reply stands
STOP_EXPLAINED = 15.0
#: after a dropped connection: how long the agent may take to be reached again, and how long
#: a reply it already sent may take to arrive
RECONNECT_WAIT = 60.0
REPLY_GRACE = 10.0
_TICK_MS = int(TICK * 1000)
#: plain ints: the enum constants cost an enum operation at each use in the receive loop
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


@dataclass
class Endpoint:
    rank: int
    host: str
    port: int
    control_port: int
    curve_serverkey: bytes | None = None  # the agent's CURVE public key, when encrypted
    #: the owner's CURVE client secret key (Z85), the one the agents admit; None: a fresh
    #: key, which agents with a client allowlist refuse
    curve_secretkey: bytes | None = None
    #: where the other agents reach this one (its pod IP) when the kernel reaches it at
    #: another address (a port-forward listener on 127.0.0.1); None: at ``host``
    pod_ip: str | None = None

    @property
    def peer_host(self) -> str:
        """The agent's address as its peers see it (MASTER_ADDR, channels)."""
        return self.pod_ip or self.host

    def to_json(self) -> dict[str, Any]:
        """The REST form (``GET clusters/<id>/connection``; keys as Z85 text)."""
        return {"rank": self.rank, "host": self.host, "port": self.port,
                "control_port": self.control_port,
                "curve_serverkey": _text(self.curve_serverkey),
                "curve_secretkey": _text(self.curve_secretkey), "pod_ip": self.pod_ip}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Endpoint:
        return cls(d["rank"], d["host"], d["port"], d.get("control_port") or d["port"] + 1,
                   _bytes(d.get("curve_serverkey")), _bytes(d.get("curve_secretkey")),
                   d.get("pod_ip"))


def _text(key: bytes | None) -> str | None:
    return key.decode("ascii") if key else None


def _bytes(key: str | None) -> bytes | None:
    return key.encode("ascii") if key else None


#: what the data socket's monitor reports: the handshake's outcome and dropped connections,
#: nothing per message
_MONITOR_EVENTS = int(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                      | zmq.EVENT_DISCONNECTED)


def _not_back(rank: int) -> ConnectionLost:
    """The error of a request whose agent stayed unreachable after a dropped connection."""
    return ConnectionLost(
        f"the connection to rank {rank}'s agent dropped and did not come back in "
        f"{RECONNECT_WAIT:g}s; the agents kept their variables: run the cell again once it is "
        "back (%remote status)")


class AgentChannel:
    """The two DEALER sockets to one agent: data (requests, output) and control."""

    def __init__(self, ctx: zmq.Context, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._monitor: zmq.Socket | None = None
        self.auth_refused = False
        #: the data connection dropped since the client last looked (a port-forward closed by
        #: the API server, a reset): a request in flight may have been lost with it
        self.dropped = False
        #: the data connection's handshake succeeded since its last drop
        self.connected = True
        self.data = self._socket(ctx, endpoint, endpoint.port, self._watch_handshake)
        self.control = self._socket(ctx, endpoint, endpoint.control_port)

    @staticmethod
    def _socket(ctx: zmq.Context, endpoint: Endpoint, port: int,
                before_connect: Callable[[zmq.Socket], None] | None = None) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        # the same identity after a reconnect: the agent (ROUTER_HANDOVER) sends what it
        # answers after a dropped connection comes back to this socket
        sock.routing_id = b"k" + uuid.uuid4().bytes
        if endpoint.curve_serverkey:
            if endpoint.curve_secretkey:
                secret = endpoint.curve_secretkey
                public = zmq.curve_public(secret)
            else:
                public, secret = zmq.curve_keypair()
            sock.curve_serverkey = endpoint.curve_serverkey
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            if before_connect is not None:
                before_connect(sock)
        sock.ipv6 = ":" in endpoint.host
        sock.connect(tcp_address(endpoint.host, port))
        return sock

    def _watch_handshake(self, sock: zmq.Socket) -> None:
        """Monitor the CURVE handshake, to tell "refused" from "slow", and dropped
        connections (events only on connects and drops: nothing per message)."""
        self._monitor = sock.get_monitor_socket(_MONITOR_EVENTS)

    def refused(self) -> bool:
        """Whether the agent refused this client's key (read off the monitor, which also
        sets ``dropped``; read only while requests wait, never per message)."""
        mon = self._monitor
        while mon is not None and mon.poll(0):
            from zmq.utils.monitor import recv_monitor_message

            event = recv_monitor_message(mon)["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self.auth_refused = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.auth_refused = False
                self.connected = True
            elif event == zmq.EVENT_DISCONNECTED:
                self.dropped = True
                self.connected = False
        return self.auth_refused

    def _close_monitor(self) -> None:
        if self._monitor is not None:
            self.data.disable_monitor()
            self._monitor.close(0)
            self._monitor = None

    def close(self) -> None:
        self._close_monitor()
        self.data.close(0)
        self.control.close(0)


class ClusterClient:
    """Talks to every agent of one cluster."""

    def __init__(self, key: bytes, endpoints: list[Endpoint], liveness: Liveness) -> None:
        self.signer = Signer(key, sender="kernel")
        self.ctx: zmq.Context = zmq.Context.instance()
        self.channels = {ep.rank: AgentChannel(self.ctx, ep) for ep in endpoints}
        self.liveness = liveness
        self.ranks = sorted(self.channels)
        #: a poller and socket -> rank map per set of ranks waited on, made once
        self._pollers: dict[tuple[int, ...], tuple[zmq.Poller, dict[zmq.Socket, int]]] = {}

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()

    # -- data plane -----------------------------------------------------------------
    def request(
        self,
        kind: str,
        content: dict[str, Any] | None = None,
        payload: Any = None,
        *,
        ranks: list[int] | None = None,
        has_payload: bool | None = None,
        on_output: OutputHook | None = None,
        timeout: float | None = None,
        on_input: InputHook | None = None,
    ) -> dict[int, Message]:
        """Send one request to ``ranks`` and wait for every reply, streaming output.

        ``on_input`` answers the remote code's ``input()``; without it, input raises
        ``StdinNotImplementedError`` there. Raises KeyboardInterrupt (after interrupting
        the agents), ClusterTimeout or AgentDied; replies with ``status: error`` are
        returned, not raised.
        """
        ranks = self.ranks if ranks is None else ranks
        try:
            msg_id, frames = self.signer.request(kind, content, payload,
                                                 has_payload=has_payload)
        except Exception as exc:  # the payload does not pickle: nothing was sent
            raise TransferError(f"{type(exc).__name__}: {exc}") from exc
        channels = self.channels
        for r in ranks:
            send(channels[r].data, frames)
        return self._collect(msg_id, ranks, on_output, timeout, on_input, frames)

    def _poller(self, ranks: list[int]) -> tuple[zmq.Poller, dict[zmq.Socket, int]]:
        key = tuple(ranks)
        found = self._pollers.get(key)
        if found is None:
            if len(self._pollers) >= 64:  # many different rank subsets: start over
                self._pollers.clear()
            socks = {self.channels[r].data: r for r in ranks}
            poller = zmq.Poller()
            for s in socks:
                poller.register(s, zmq.POLLIN)
            found = self._pollers[key] = (poller, socks)
        return found

    def _collect(self, msg_id: str, ranks: list[int], on_output: OutputHook | None,
                 timeout: float | None, on_input: InputHook | None = None,
                 frames: list[Any] | None = None) -> dict[int, Message]:
        pending = set(ranks)
        replies: dict[int, Message] = {}
        poller, socks = self._poller(ranks)
        start = time.monotonic()
        deadline = start + timeout if timeout else None
        interrupted_at: float | None = None
        next_check = start + TICK
        #: ranks whose data connection dropped: until when the reconnect, then the reply,
        #: is awaited
        repair: dict[int, float] = {}
        while pending:
            try:
                self._take_ready(poller, socks, msg_id, pending, replies, on_output, on_input)
                now = time.monotonic()
                if pending and now >= next_check:
                    next_check = now + TICK
                    self._check_alive(pending)
                    self._recover(msg_id, frames, pending, repair)
                    if deadline and now > deadline and interrupted_at is None:
                        self.interrupt(sorted(pending), request=msg_id)
                        interrupted_at = now
                    if interrupted_at is not None and now - interrupted_at > INTERRUPT_GRACE:
                        break
            except KeyboardInterrupt:
                self.interrupt(sorted(pending), request=msg_id)
                streams = None if on_output is None else (
                    lambda r, m: on_output(r, m) if m.kind == "stream" else None)
                end = time.monotonic() + INTERRUPT_GRACE  # show what they print until they stop
                while pending and time.monotonic() < end:
                    self._take_ready(poller, socks, msg_id, pending, replies, streams)
                raise
        if deadline and interrupted_at is not None:
            raise ClusterTimeout(
                f"the cell ran over --timeout {timeout:g}s and was interrupted; "
                f"the agents kept their variables")
        stopping = sorted(r for r, m in replies.items() if m.content.get("stopping"))
        if stopping:  # an agent told to stop (its pod deleted) ended the request: say why
            self._explain_stop(stopping)
        return replies

    def _explain_stop(self, ranks: list[int]) -> None:
        """Raise AgentDied with the backend's reason (a preemption, say) once it knows one,
        up to STOP_EXPLAINED s; the agent's own reply may come before its pod's end is seen
        (through the Jupyter server, a monitor pass later). Without one, the reply stands."""
        end = time.monotonic() + STOP_EXPLAINED
        while True:
            for r in ranks:
                why = self.liveness(r)
                if why is not None:
                    raise AgentDied(f"rank {r} {why} while running the request")
            if time.monotonic() > end:
                return
            time.sleep(TICK)

    def _take_ready(self, poller: zmq.Poller, socks: dict[zmq.Socket, int], msg_id: str,
                    pending: set[int], replies: dict[int, Message],
                    on_output: OutputHook | None, on_input: InputHook | None = None) -> None:
        """Wait up to one tick; route what arrived for request ``msg_id``."""
        receive = self.signer.receive
        for sock, _ in poller.poll(_TICK_MS):
            rank = socks[sock]
            # poll() found a message waiting: read it, then the next ones while there are
            # more, until this rank's reply (the agent sends nothing of a request after it)
            while True:
                try:
                    _, msg = receive(sock)
                except ProtocolError:
                    msg = None
                if msg is None or msg.parent_id != msg_id:
                    pass  # refused, or late output of an earlier, abandoned request
                elif msg.kind == "reply":
                    replies[rank] = msg
                    pending.discard(rank)
                    break
                elif msg.kind == "input_request":
                    self._answer_input(sock, rank, msg, on_input)
                elif on_output is not None:
                    on_output(rank, msg)
                if not sock.getsockopt(_EVENTS) & _POLLIN:
                    break

    def _recover(self, msg_id: str, frames: list[Any] | None, pending: set[int],
                 repair: dict[int, float]) -> None:
        """Repair request ``msg_id`` on ranks whose data connection dropped while it waited
        (seen by ``_check_alive``). Once ZeroMQ has connected again, ask the agent over its
        control socket what became of the request. Never seen there: lost on the way, so
        sent again (the agent's replay window runs it at most once). Running: its reply
        comes over the new connection. Answered already: the agent sends a small reply again;
        one still missing after REPLY_GRACE (a large one, not kept) fails the request with
        one line (it ran; the agents keep their variables)."""
        now = time.monotonic()
        for r in sorted(pending):
            ch = self.channels[r]
            if ch.dropped and r not in repair:
                repair[r] = now + RECONNECT_WAIT
            if ch.dropped and ch.connected:
                ch.dropped = False
                state = self._request_state(r, msg_id)
                if state == "unknown" and frames is not None:
                    send(ch.data, frames)
                repair[r] = now + REPLY_GRACE if state == "done" else float("inf")
            if r in repair and now > repair[r]:
                others = sorted(pending - {r})
                if others:
                    self.interrupt(others, request=msg_id)
                if ch.dropped:
                    raise _not_back(r)
                raise ConnectionLost(
                    f"the connection to rank {r}'s agent dropped as it answered: the request "
                    "ran there but its reply was lost; the agents kept their variables "
                    "(look with %remote pull or run the cell again)")

    def _request_state(self, rank: int, msg_id: str) -> str:
        """What agent ``rank`` did with ``msg_id`` (running, done, unknown), asked until its
        connection is back (RECONNECT_WAIT); "" from an agent too old to tell."""
        end = time.monotonic() + RECONNECT_WAIT
        while True:
            answer = self.control("ping", {"request": msg_id}, ranks=[rank], timeout=1.0)
            if rank in answer:
                return str(answer[rank].get("request") or "")
            self._check_alive({rank})
            if time.monotonic() > end:
                raise _not_back(rank)

    def _answer_input(self, sock: zmq.Socket, rank: int, msg: Message,
                      on_input: InputHook | None) -> None:
        """Answer a rank's ``input()``; KeyboardInterrupt (the stop button) propagates."""
        prompt = str(msg.content.get("prompt", ""))
        password = bool(msg.content.get("password"))
        reply: dict[str, Any]
        if on_input is None:
            reply = NO_STDIN
        else:
            try:
                value = on_input(rank, prompt, password)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - raised again in the remote code
                reply = {"status": "error", "ename": type(exc).__name__, "evalue": str(exc)}
            else:
                if value is None:
                    return  # this rank waits: stdin belongs to another
                reply = {"status": "ok", "value": str(value)}
        send(sock, self.signer.encode("input_reply", reply, parent_id=msg.msg_id))

    def _check_alive(self, ranks: set[int]) -> None:
        check_access(self.channels, ranks)
        for r in sorted(ranks):
            why = self.liveness(r)
            if why is not None:
                others = sorted(ranks - {r})
                if others:
                    self.interrupt(others)
                raise AgentDied(f"rank {r} {why} while running the request")

    # -- control plane --------------------------------------------------------------
    def control(self, kind: str, content: dict[str, Any] | None = None, *,
                ranks: list[int] | None = None, timeout: float = 2.0) -> dict[int, dict]:
        """A control request (ping, interrupt, extend, shutdown); missing answers omitted."""
        ranks = self.ranks if ranks is None else ranks
        msg_id, frames = self.signer.request(kind, content)
        poller = zmq.Poller()
        socks = {}
        for r in ranks:
            sock = self.channels[r].control
            sock.send_multipart(frames)
            socks[sock] = r
            poller.register(sock, zmq.POLLIN)
        out: dict[int, dict] = {}
        end = time.monotonic() + timeout
        while len(out) < len(ranks) and time.monotonic() < end:
            for sock, _ in poller.poll(50):
                try:
                    msg = self.signer.decode(sock.recv_multipart())
                except ProtocolError:
                    continue
                if msg.parent_id == msg_id:
                    out[socks[sock]] = msg.content
        return out

    def interrupt(self, ranks: list[int] | None = None, request: str = "") -> dict[int, dict]:
        """Interrupt what ``ranks`` run; only request ``request`` when named, so that an
        interrupt delivered late (its control connection was slow) spares the next cell."""
        return self.control("interrupt", {"request": request} if request else None,
                            ranks=ranks)


def check_access(channels: dict[int, AgentChannel], ranks: set[int] | list[int]) -> None:
    """Raise AccessRefused when an agent of ``ranks`` refused this client's CURVE key."""
    for r in sorted(ranks):
        ch = channels[r]
        if ch.refused():
            ep = ch.endpoint
            raise AccessRefused(
                f"rank {r} at {tcp_address(ep.host, ep.port)} refused this client's CURVE key: "
                "a cluster's agents admit only their owner's client; connect with the "
                "connection info its owner's server gives (GET clusters/<id>/connection)")
