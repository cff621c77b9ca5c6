"""The wire format: signatures checked before unpickling, buffers as their own frames."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import zmq

from jupyter_kremote.protocol import CHUNK, OOB_THRESHOLD, ProtocolError, Signer, new_key


def test_numpy_array_travels_out_of_band_in_chunks_and_lands_in_one_buffer():
    s = Signer(new_key())
    arr = np.arange(1 << 20, dtype="float64")  # 8 MiB
    frames = s.encode("push", payload={"a": arr, "small": np.arange(3)})
    header, sig, pickled, *chunks = frames
    assert len(pickled) < OOB_THRESHOLD  # the pickle holds no array bytes
    assert [memoryview(c).nbytes for c in chunks] == [CHUNK] * (arr.nbytes // CHUNK)
    assert all(np.shares_memory(np.frombuffer(c, dtype="float64"), arr) for c in chunks)
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://proto-test")
    b.connect("inproc://proto-test")
    try:
        a.send_multipart(frames, copy=False)
        assert b.poll(2000)
        _, msg = Signer(s._key).receive(b)
    finally:
        a.close(0)
        b.close(0)
    out = msg.payload["a"]
    assert np.array_equal(out, arr) and out.flags.writeable
    assert msg.payload["small"].tolist() == [0, 1, 2]
    # the list-of-frames path agrees
    assert np.array_equal(Signer(s._key).decode(list(frames)).payload["a"], arr)


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
    frames[-1] = b"\0" * 8
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


def test_receive_buffers_are_reused_only_when_nothing_refers_to_them():
    from jupyter_kremote.protocol import BufferPool

    pool = BufferPool()
    kept = np.frombuffer(memoryview(pool.take(2 << 20)), dtype="uint8")
    second = pool.take(2 << 20)
    assert not np.shares_memory(kept, np.frombuffer(second, dtype="uint8"))  # still in use
    del second
    third = pool.take(2 << 20)
    assert pool.reused == 1  # the freed one came back
    assert not np.shares_memory(kept, np.frombuffer(third, dtype="uint8"))
