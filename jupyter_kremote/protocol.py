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
import math
import os
import pickle
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import zmq

PROTOCOL_VERSION = "1.1"
#: buffers at least this large travel out-of-band, in frames of their own
OOB_THRESHOLD = 64 * 1024
#: messages older than this (seconds) are refused as possible replays
MAX_AGE = 300.0
#: large buffers travel in frames of this size (1 MiB measured fastest: 4 MiB and one
#: huge frame were 1.5-2x slower): libzmq streams them faster than one
#: huge frame, and the receiver lands them straight in one buffer (``recv_into``)
CHUNK = 1024 * 1024

# The hot path (one request and its reply per cell) uses these prepared pieces rather
# than building them per message: a JSON encoder made once (``json.dumps`` with options
# makes a new one per call), plain-int ZeroMQ constants (the enum ones cost an enum
# operation per use), and the header assembled around pre-serialised constant parts.
# None of it changes what is signed or checked: see Signer.request and Signer._verify.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode  # as json.dumps(..., separators)
_DECODE = json.JSONDecoder().decode
_STR = json.encoder.encode_basestring_ascii  # what _ENCODE does with a str
_isfinite = math.isfinite
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_HEADER_START = '{"v":' + _ENCODE(PROTOCOL_VERSION) + ',"id":"'


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
    #: why a signed payload could not be unpickled ("ModuleNotFoundError: ..."), else ""
    payload_error: str = ""


def tcp_address(host: str, port: int | None = None) -> str:
    """A ZeroMQ TCP address; IPv6 hosts (pod IPs on IPv6 clusters) go in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}" if port is None else f"tcp://{host}:{port}"


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


def _json(value: Any) -> str:
    """``value`` as ``_ENCODE`` writes it, without the encoder for the common types."""
    kind = type(value)
    if kind is str:
        return _STR(value)
    if value is None:
        return "null"
    if kind is int:
        return int.__repr__(value)
    if kind is float and _isfinite(value):  # NaN and infinities: as the encoder writes them
        return float.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    return _ENCODE(value)


def _new_id() -> str:
    """``uuid.uuid4().hex``, without building a UUID object."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    return b.hex()


class Signer:
    """Signs outgoing and verifies incoming messages with one cluster key."""

    def __init__(self, key: bytes, sender: str = "") -> None:
        if not key:
            raise ValueError("a non-empty key is required")
        self._key = key
        self.sender = sender or uuid.uuid4().hex[:12]
        #: HMAC-SHA256 keyed once; each message hashes into a copy of it
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._sender_part = ',"sender":' + _json(self.sender) + ',"time":'
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.rejected = 0

    def _digest(self, header: bytes | memoryview, payload: bytes | memoryview | None) -> bytes:
        mac = self._mac.copy()
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
        return self.request(kind, content, payload, has_payload=has_payload,
                            parent_id=parent_id, rank=rank)[1]

    def request(
        self,
        kind: str,
        content: dict[str, Any] | None = None,
        payload: Any = None,
        *,
        has_payload: bool | None = None,
        parent_id: str = "",
        rank: int | None = None,
    ) -> tuple[str, list[Any]]:
        """(message id, frames): the id is what replies name as their parent."""
        if has_payload is None:
            has_payload = payload is not None
        frames_tail: list[Any] = []
        pickled: bytes | None = None
        nbytes: list[int] = []
        if has_payload:
            pickled, buffers = dumps(payload)
            frames_tail = [pickled]
            for buf in buffers:
                view = buf.cast("B") if buf.contiguous else memoryview(bytes(buf))
                nbytes.append(view.nbytes)
                frames_tail += [view[i:i + CHUNK] for i in range(0, view.nbytes, CHUNK)]
        # The header JSON, byte for byte what ``_ENCODE`` makes of the dict
        # {"v", "id", "kind", "sender", "time", "parent", "rank", "pickled", "nbytes",
        # "content"} (in that order), assembled from parts: the constant ones are
        # serialised once per signer, the content dict by the JSON encoder.
        msg_id = _new_id()
        hbytes = "".join((
            _HEADER_START, msg_id, '","kind":', _json(kind), self._sender_part,
            _json(time.time()), ',"parent":', _json(parent_id), ',"rank":', _json(rank),
            ',"pickled":', _json(has_payload), ',"nbytes":',
            "[" + ",".join(map(str, nbytes)) + "]" if nbytes else "[]",
            ',"content":', _ENCODE(content) if content else "{}", "}",
        )).encode()
        if frames_tail:
            return msg_id, [hbytes, self._digest(hbytes, pickled), *frames_tail]
        return msg_id, [hbytes, self._digest(hbytes, pickled)]

    def seen(self, msg_id: str) -> bool:
        """Whether a message with this id was accepted (within the replay window)."""
        return msg_id in self._seen

    def _verify(self, hraw: bytes, sig: bytes, payload: memoryview | None) -> dict[str, Any]:
        """Check signature, freshness and replay; return the header. Counts rejections."""
        try:
            header = _DECODE(hraw.decode())  # UTF-8 (what _ENCODE writes is ASCII)
            if bool(header.get("pickled")) != (payload is not None):
                raise ProtocolError("payload frame does not match the header")
            if not hmac.compare_digest(sig, self._digest(hraw, payload)):
                raise ProtocolError("bad signature")
            msg_id = header["id"]
            if abs(time.time() - float(header["time"])) > MAX_AGE:
                raise ProtocolError("stale message")
            if msg_id in self._seen:
                raise ProtocolError("replayed message")
            self._seen[msg_id] = None
            if len(self._seen) > 50_000:
                self._seen.popitem(last=False)
            return header
        except ProtocolError:
            self.rejected += 1
            raise
        except (ValueError, KeyError, TypeError) as exc:
            self.rejected += 1
            raise ProtocolError(f"malformed message: {exc}") from None

    def decode(self, frames: list[Any]) -> Message:
        """Verify then decode a whole list of frames (buffers possibly chunked).

        Nothing is unpickled before the signature, freshness and replay checks pass.
        """
        if len(frames) < 2:
            self.rejected += 1
            raise ProtocolError("truncated message")
        hraw, sig = _bytes_of(frames[0]), _bytes_of(frames[1])
        try:
            pickled = bool(json.loads(hraw).get("pickled"))
        except ValueError:
            pickled = False
        payload = _view_of(frames[2]) if pickled and len(frames) > 2 else None
        header = self._verify(hraw, sig, payload)
        chunks = [_view_of(f) for f in frames[3:]]
        buffers = []
        for n in header.get("nbytes", []):
            if chunks and chunks[0].nbytes == n:
                buffers.append(chunks.pop(0))  # one frame: use its memory as it is
                continue
            buf = bytearray(n)
            off = 0
            while off < n and chunks:
                c = chunks.pop(0)
                buf[off:off + c.nbytes] = c
                off += c.nbytes
            if off != n:
                break
            buffers.append(memoryview(buf))
        if len(buffers) != len(header.get("nbytes", [])) or chunks:
            self.rejected += 1
            raise ProtocolError("buffer lengths do not match the signed header")
        return self._message(header, payload, buffers)

    def receive(self, sock: Any, router: bool = False) -> tuple[bytes, Message]:
        """Read one message from ``sock`` (a message must be waiting): verify header and
        payload first, then receive the buffers straight into their final memory.

        Returns (peer identity or b"", message). Unverified messages are drained and
        dropped with ProtocolError, without allocating what their header asks for.
        """
        # header and signature are small: copied out (cheaper than zmq.Frame objects);
        # the pickle may be large: kept in the receive memory
        getsockopt = sock.getsockopt
        peer = sock.recv() if router else b""
        hraw = sock.recv()
        if not getsockopt(_RCVMORE):
            self.rejected += 1
            raise ProtocolError("truncated message")
        sig = sock.recv()
        more = getsockopt(_RCVMORE)
        payload = None
        if more:
            frame = sock.recv(copy=False)
            payload, more = frame.buffer, frame.more
        try:
            header = self._verify(hraw, sig, payload)
        except ProtocolError:
            if more:
                _drain(sock)
            raise
        buffers = []
        for n in header.get("nbytes", []):
            view = memoryview(RECEIVE_POOL.take(n))
            off = 0
            while off < n and more:
                got = sock.recv_into(view[off:])
                more = sock.getsockopt(zmq.RCVMORE)
                off += got
            if off != n:
                if more:
                    _drain(sock)
                self.rejected += 1
                raise ProtocolError("buffer lengths do not match the signed header")
            buffers.append(view)
        if more:
            _drain(sock)
            self.rejected += 1
            raise ProtocolError("buffer lengths do not match the signed header")
        return peer, self._message(header, payload, buffers)

    @staticmethod
    def _message(header: dict[str, Any], payload: memoryview | None,
                 buffers: list[memoryview]) -> Message:
        error = ""
        try:
            value = loads(payload, buffers) if payload is not None else None
        except Exception as exc:  # noqa: BLE001 - signed but not loadable here: say why
            value, error = None, f"{type(exc).__name__}: {exc}"
        return Message(
            kind=header["kind"],
            content=header.get("content") or {},
            payload=value,
            has_payload=payload is not None,
            msg_id=header["id"],
            parent_id=header.get("parent", ""),
            rank=header.get("rank"),
            payload_error=error,
        )


class BufferPool:
    """Receive buffers reused once nothing refers to them any more.

    A fresh 256 MiB buffer costs ~65,000 page faults each time it is filled; pushing a
    new version of an array (or pulling one again) can instead land in the memory of
    the previous one, freed by then. A buffer is reused only when the pool holds the
    only reference to it, so no live object ever sees its bytes change.
    """

    def __init__(self, per_size: int = 2, max_bytes: int = 1 << 30,
                 min_size: int = 1 << 20) -> None:
        self.per_size, self.max_bytes, self.min_size = per_size, max_bytes, min_size
        self._bufs: OrderedDict[int, list[bytearray]] = OrderedDict()
        self.reused = 0

    def take(self, n: int) -> bytearray:
        if n < self.min_size:
            return bytearray(n)
        bufs = self._bufs.setdefault(n, [])
        self._bufs.move_to_end(n)
        for i in range(len(bufs)):
            if sys.getrefcount(bufs[i]) == 2:  # the list's reference and the argument's
                self.reused += 1
                return bufs[i]
        buf = bytearray(n)
        bufs.append(buf)
        if len(bufs) > self.per_size:
            bufs.pop(0)
        while sum(n * len(b) for n, b in self._bufs.items()) > self.max_bytes:
            self._bufs.popitem(last=False)
        return buf


RECEIVE_POOL = BufferPool()


def send(sock: Any, frames: list[Any]) -> None:
    """Send frames: small messages copied (cheaper than pinning), large ones zero-copy."""
    for f in frames:
        if (len(f) if type(f) is bytes else memoryview(f).nbytes) >= OOB_THRESHOLD:
            sock.send_multipart(frames, copy=False)
            return
    # all small (the usual request or reply: header, signature, maybe a small pickle):
    # frame by frame, as send_multipart(copy=True) does, without its per-frame checks
    last = frames[-1]
    for f in frames[:-1]:
        sock.send(f, _SNDMORE)
    sock.send(last)


def _drain(sock: Any) -> None:
    while sock.getsockopt(zmq.RCVMORE):
        sock.recv(copy=False)


def _bytes_of(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    return bytes(getattr(frame, "buffer", frame))


def _view_of(frame: Any) -> memoryview:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return memoryview(frame)
    return frame.buffer  # zmq.Frame: the receive memory itself, writable, no copy


#: packages whose versions must match on both sides for pickled objects to load alike
TRACKED_PACKAGES = ("numpy", "pandas", "torch", "cloudpickle")


def runtime_info() -> dict[str, Any]:
    """Python and imported package versions, for drift checks against the kernel."""
    versions = {}
    for name in TRACKED_PACKAGES:
        mod = sys.modules.get(name)
        if mod is not None:
            versions[name] = getattr(mod, "__version__", "")
    return {"python": "%d.%d.%d" % sys.version_info[:3], "packages": versions}
