"""Wire protocol between the kernel-side client and the agents.

Every message is a ZeroMQ multipart message::

    [header JSON, signature, payload?, *buffers]

The header is a JSON object (see :class:`Header`). ``payload`` is a cloudpickle
(protocol 5) stream present when ``header["pickled"]`` is true; ``buffers`` are its
out-of-band buffers (NumPy arrays and other large contiguous data), each in its own
frame so that neither side copies them.

The signature is HMAC-SHA256 over the header and the payload, checked with
:func:`hmac.compare_digest` *before* anything is unpickled (as in Jupyter's wire
protocol). Out-of-band buffers are covered through their lengths in the signed header
but not hashed: they are inert bytes that only a signed pickle can reference, and
hashing hundreds of megabytes would halve transfer speed. On pods, CURVE encryption
protects them in transit. See docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

PROTOCOL_VERSION = "1.0"
#: buffers at least this large travel out-of-band, in frames of their own
OOB_THRESHOLD = 64 * 1024
#: messages older than this (seconds) are refused as possible replays
MAX_AGE = 300.0


class ProtocolError(Exception):
    """A message that cannot be accepted (bad signature, replay, malformed)."""


@dataclass
class Message:
    """One decoded message.

    ``kind`` is the message type (``execute``, ``stream``, ``result``...),
    ``content`` its JSON-able fields, ``payload`` the unpickled object, if any.
    """

    kind: str
    content: dict[str, Any] = field(default_factory=dict)
    payload: Any = None
    has_payload: bool = False
    msg_id: str = ""
    parent_id: str = ""
    rank: int | None = None


def new_key() -> bytes:
    """A fresh per-cluster secret key (hex, so it can travel in env and YAML)."""
    return os.urandom(32).hex().encode()


def dumps(obj: Any) -> tuple[bytes, list[memoryview]]:
    """Pickle ``obj`` with large buffers taken out of band (zero-copy)."""
    buffers: list[memoryview] = []

    def take(buf: pickle.PickleBuffer) -> bool:
        view = buf.raw()
        if view.nbytes < OOB_THRESHOLD:
            return True  # small: keep it in the pickle stream
        buffers.append(view)
        return False

    data = cloudpickle.dumps(obj, protocol=5, buffer_callback=take)
    return data, buffers


def loads(data: bytes | memoryview, buffers: list[Any]) -> Any:
    return pickle.loads(data, buffers=buffers)


class Signer:
    """Signs outgoing and verifies incoming messages with one cluster key."""

    def __init__(self, key: bytes, sender: str = "") -> None:
        if not key:
            raise ValueError("a non-empty key is required")
        self._key = key
        self.sender = sender or uuid.uuid4().hex[:12]
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.rejected = 0

    def _digest(self, header: bytes | memoryview, payload: bytes | memoryview | None) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        mac.update(header)
        if payload is not None:
            mac.update(payload)
        return mac.hexdigest().encode()

    def encode(
        self,
        kind: str,
        content: dict[str, Any] | None = None,
        payload: Any = None,
        *,
        has_payload: bool | None = None,
        parent_id: str = "",
        rank: int | None = None,
    ) -> list[Any]:
        """Frames for one message; pass ``payload`` to pickle an object along."""
        if has_payload is None:
            has_payload = payload is not None
        frames_tail: list[Any] = []
        pickled: bytes | None = None
        if has_payload:
            pickled, buffers = dumps(payload)
            frames_tail = [pickled, *buffers]
        header = {
            "v": PROTOCOL_VERSION,
            "id": uuid.uuid4().hex,
            "kind": kind,
            "sender": self.sender,
            "time": time.time(),
            "parent": parent_id,
            "rank": rank,
            "pickled": has_payload,
            "nbytes": [memoryview(f).nbytes for f in frames_tail[1:]],
            "content": content or {},
        }
        hbytes = json.dumps(header, separators=(",", ":")).encode()
        return [hbytes, self._digest(hbytes, pickled), *frames_tail]

    def decode(self, frames: list[Any]) -> Message:
        """Verify then decode; raise :class:`ProtocolError` on anything suspect.

        Nothing is unpickled before the signature, freshness and replay checks pass.
        """
        try:
            if len(frames) < 2:
                raise ProtocolError("truncated message")
            hraw = _bytes_of(frames[0])
            sig = _bytes_of(frames[1])
            header = json.loads(hraw)
            pickled = bool(header.get("pickled"))
            payload_frame = _view_of(frames[2]) if pickled and len(frames) > 2 else None
            if pickled and payload_frame is None:
                raise ProtocolError("missing payload frame")
            if not hmac.compare_digest(sig, self._digest(hraw, payload_frame)):
                raise ProtocolError("bad signature")
            msg_id = header["id"]
            if abs(time.time() - float(header["time"])) > MAX_AGE:
                raise ProtocolError("stale message")
            if msg_id in self._seen:
                raise ProtocolError("replayed message")
            self._seen[msg_id] = None
            if len(self._seen) > 50_000:
                self._seen.popitem(last=False)
            buffers = [_view_of(f) for f in frames[3:]]
            if [b.nbytes for b in buffers] != list(header.get("nbytes", [])):
                raise ProtocolError("buffer lengths do not match the signed header")
        except ProtocolError:
            self.rejected += 1
            raise
        except (ValueError, KeyError, TypeError) as exc:
            self.rejected += 1
            raise ProtocolError(f"malformed message: {exc}") from None
        payload = loads(payload_frame, buffers) if payload_frame is not None else None
        return Message(
            kind=header["kind"],
            content=header.get("content") or {},
            payload=payload,
            has_payload=pickled,
            msg_id=msg_id,
            parent_id=header.get("parent", ""),
            rank=header.get("rank"),
        )


def _bytes_of(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    return bytes(getattr(frame, "buffer", frame))


def _view_of(frame: Any) -> memoryview:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return memoryview(frame)
    return frame.buffer  # zmq.Frame: the receive memory itself, writable, no copy


def runtime_info() -> dict[str, Any]:
    """Python and imported package versions, for drift checks against the kernel."""
    versions = {}
    for name in ("numpy", "pandas", "cloudpickle", "torch"):
        mod = sys.modules.get(name)
        if mod is not None:
            versions[name] = getattr(mod, "__version__", "")
    return {"python": "%d.%d.%d" % sys.version_info[:3], "packages": versions}
