"""The wire format: signatures checked before unpickling, buffers as their own frames."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from jupyter_kremote.protocol import OOB_THRESHOLD, ProtocolError, Signer, new_key


def test_numpy_array_travels_out_of_band_and_decodes_without_copy():
    s = Signer(new_key())
    arr = np.arange(1 << 20, dtype="float64")
    frames = s.encode("push", payload={"a": arr, "small": np.arange(3)})
    header, sig, pickled, *buffers = frames
    assert len(buffers) == 1 and memoryview(buffers[0]).nbytes == arr.nbytes
    assert len(pickled) < OOB_THRESHOLD  # the pickle holds no array bytes
    received = [bytes(f) for f in frames[:3]] + [bytearray(buffers[0])]
    msg = s.decode(received)
    out = msg.payload["a"]
    assert np.array_equal(out, arr)
    assert np.shares_memory(out, np.frombuffer(received[3], dtype="float64"))  # no copy
    assert msg.payload["small"].tolist() == [0, 1, 2]


def test_bad_signature_is_refused_before_unpickling(monkeypatch):
    sender, receiver = Signer(new_key()), Signer(new_key())
    frames = sender.encode("push", payload={"x": 1})

    def boom(*a, **k):
        raise AssertionError("unpickled an unauthenticated message")

    monkeypatch.setattr(pickle, "loads", boom)
    with pytest.raises(ProtocolError, match="bad signature"):
        receiver.decode(frames)
    assert receiver.rejected == 1


def test_buffer_lengths_are_bound_to_the_signed_header():
    s = Signer(new_key())
    frames = s.encode("push", payload={"a": np.zeros(OOB_THRESHOLD)})
    frames[3] = b"\0" * 8
    with pytest.raises(ProtocolError, match="buffer lengths"):
        Signer(s._key).decode(frames)


def test_replay_and_stale_messages_are_refused(monkeypatch):
    s = Signer(new_key())
    r = Signer(s._key)
    frames = s.encode("ping")
    assert r.decode(frames).kind == "ping"
    with pytest.raises(ProtocolError, match="replayed"):
        r.decode(frames)
    import jupyter_kremote.protocol as protocol

    old = s.encode("ping")
    monkeypatch.setattr(protocol.time, "time", lambda: 10**10)
    with pytest.raises(ProtocolError, match="stale"):
        r.decode(old)
