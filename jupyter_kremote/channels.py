"""On the agents: where the other groups are, and channels to stream objects to them.

Example (a preprocess rank feeds train rank 0; arrays travel zero-copy)::

    # on the train group
    import jupyter_kremote as kremote
    inbox = kremote.Inbox()                     # listens on this rank's channel address
    for batch in inbox.stream(senders=2):       # until both preprocess ranks close
        step(batch)

    # on the preprocess group
    out = kremote.Outbox("train", rank=0)       # or Outbox("train"): round-robin over ranks
    for batch in batches():
        out.send(batch)
    out.close()

Messages are signed with the cluster's channel key (``KREMOTE_CHANNEL_KEY``, given to
every agent of the cluster and to no one else) and checked before anything is unpickled.
Only the protocol module is imported: this runs inside the agents.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import zmq

from .protocol import ProtocolError, Signer, send

_END = "end"


def group() -> str:
    """This agent's group (``main`` in a one-group cluster)."""
    return os.environ.get("KREMOTE_GROUP", "main")


def groups() -> list[str]:
    return [g for g in os.environ.get("KREMOTE_GROUPS", group()).split(",") if g]


def rank() -> int:
    return int(os.environ.get("KREMOTE_RANK", "0"))


def peers(name: str | None = None) -> list[str]:
    """The channel addresses (``host:port``) of group ``name``'s ranks, in rank order."""
    name = name or group()
    value = os.environ.get(f"KREMOTE_GROUP_{name.upper().replace('-', '_')}_ADDRS")
    if value is None:
        raise LookupError(f"no group {name!r} in this cluster (groups: {', '.join(groups())})")
    return value.split(",") if value else []


def _signer() -> Signer:
    key = os.environ.get("KREMOTE_CHANNEL_KEY", "")
    if not key:
        raise RuntimeError("no channel key: channels work on the agents of a cluster "
                           "started by jupyter-kremote")
    return Signer(key.encode(), sender=f"{group()}-{rank()}")


class Inbox:
    """Receives what other agents send to this one (one per agent)."""

    def __init__(self) -> None:
        self._signer = _signer()
        addr = peers(group())[rank()]
        self.sock = zmq.Context.instance().socket(zmq.PULL)
        self.sock.linger = 0
        self.sock.ipv6 = addr.startswith("[")  # "[fd00::5]:5557"
        self.sock.bind(f"tcp://{addr}")
        self.address = addr

    def recv(self, timeout: float | None = None) -> Any:
        """The next object sent here; TimeoutError after ``timeout`` seconds."""
        while True:
            if timeout is not None and not self.sock.poll(int(timeout * 1000)):
                raise TimeoutError(f"nothing arrived at {self.address} within {timeout:g}s")
            try:
                _, msg = self._signer.receive(self.sock)
            except ProtocolError:
                continue  # unsigned or replayed: dropped
            return _Ended if msg.kind == _END else msg.payload

    def stream(self, senders: int = 1, timeout: float | None = None) -> Iterator[Any]:
        """Objects as they arrive, until ``senders`` outboxes have closed."""
        open_ = senders
        while open_:
            item = self.recv(timeout)
            if item is _Ended:
                open_ -= 1
            else:
                yield item

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Outbox:
    """Sends objects to the ranks of group ``to`` (one rank, or round-robin over all)."""

    def __init__(self, to: str, rank: int | None = None) -> None:
        self._signer = _signer()
        addrs = peers(to)
        if rank is not None:
            if not 0 <= rank < len(addrs):
                raise ValueError(f"group {to!r} has ranks 0-{len(addrs) - 1}, not {rank}")
            addrs = [addrs[rank]]
        self.sock = zmq.Context.instance().socket(zmq.PUSH)
        self.sock.ipv6 = any(a.startswith("[") for a in addrs)
        for a in addrs:
            self.sock.connect(f"tcp://{a}")
        self.targets = len(addrs)

    def send(self, obj: Any) -> None:
        send(self.sock, self._signer.encode("data", payload=obj))

    def close(self, timeout: float = 30.0) -> None:
        """Tell every target this outbox is done, deliver what is queued, and close."""
        for _ in range(self.targets):
            send(self.sock, self._signer.encode(_END))
        self.sock.close(linger=int(timeout * 1000))

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _EndMarker:
    pass


_Ended = _EndMarker()
