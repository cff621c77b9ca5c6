"""Only holders of the cluster key can run code on an agent (issue 2, 10)."""

from __future__ import annotations

import json

import psutil
import pytest
import zmq

from conftest import wait_for

from jupyter_kremote.protocol import Signer, new_key
from jupyter_kremote.session import Cluster, ClusterOptions


@pytest.fixture
def cluster(tmp_path):
    c = Cluster("sec", ClusterOptions(count=1), root=tmp_path)
    yield c
    c.shutdown()


def _dealer(cluster) -> zmq.Socket:
    ep = cluster.handle.endpoints[0]
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://{ep.host}:{ep.port}")
    return sock


def _marker_code(path) -> str:
    return f"open({str(path)!r}, 'a').write('x')"


def test_process_without_the_key_cannot_run_code(cluster, tmp_path):
    marker = tmp_path / "pwned"
    sock = _dealer(cluster)
    forged = Signer(new_key()).encode("execute", {"code": _marker_code(marker)})
    sock.send_multipart(forged)
    unsigned = [forged[0], b"", *forged[2:]]
    sock.send_multipart(unsigned)
    sock.send_multipart([b"garbage"])
    # nothing answers a forged request, and nothing ran
    assert sock.poll(1000) == 0
    assert wait_for(lambda: cluster.status()[0]["dropped"] == 3, 60)  # a loaded agent is slow
    assert not marker.exists()
    # the key holder still can
    cluster.run(_marker_code(marker))
    assert marker.read_text() == "x"


def test_tampered_and_replayed_messages_are_dropped(cluster, tmp_path):
    marker = tmp_path / "count"
    signer = Signer(cluster.handle.key)
    sock = _dealer(cluster)
    frames = signer.encode("execute", {"code": _marker_code(marker)})
    sock.send_multipart(frames)
    while True:  # the genuine request runs: its output, then its reply
        assert sock.poll(60_000)
        if json.loads(sock.recv_multipart()[0])["kind"] == "reply":
            break
    sock.send_multipart(frames)  # replay
    header = json.loads(frames[0])
    header["content"]["code"] = _marker_code(marker) + " * 2"
    sock.send_multipart([json.dumps(header).encode(), *frames[1:]])  # tampered
    assert sock.poll(1000) == 0
    assert wait_for(lambda: cluster.status()[0]["dropped"] == 2, 60)
    assert marker.read_text() == "x"


def test_agents_listen_on_loopback_and_key_is_not_in_argv_or_env(cluster):
    pid = next(iter(cluster.status()))["pid"]
    proc = psutil.Process(pid)
    listening = [c.laddr for c in proc.net_connections(kind="tcp") if c.status == "LISTEN"]
    assert len(listening) == 2  # data and control sockets
    assert all(addr.ip == "127.0.0.1" for addr in listening)
    key = cluster.handle.key.decode()
    assert key not in " ".join(proc.cmdline())
    assert key not in json.dumps(proc.environ())
    assert key not in cluster.logs(0)


def test_an_interrupt_for_another_request_spares_the_running_one(cluster):
    """The kernel names the request it interrupts: one that reaches the agent late (its
    control connection was slow) must not stop the cell that runs by then."""
    import threading

    results: list = []
    cell = threading.Thread(target=lambda: results.append(cluster.run(
        "import time\nfor _ in range(600): time.sleep(0.1)\nprint('done')")), daemon=True)
    cell.start()
    try:
        assert wait_for(lambda: cluster.client.control("ping").get(0, {}).get("busy"), 60)
        late = cluster.client.interrupt(request="an-earlier-request")
        assert late == {0: {"status": "ok", "interrupted": False}}
        assert cluster.client.control("ping")[0]["busy"] and cell.is_alive()
    finally:
        cluster.client.interrupt()  # no request named: whatever runs
        cell.join(15)
    assert results and results[0][0]["ename"] == "KeyboardInterrupt", results


def test_agents_started_with_sigint_ignored_still_stop_on_interrupt(tmp_path):
    """A server or script started in the background by a non-interactive shell passes
    SIGINT on ignored; its agents must still turn the stop button into KeyboardInterrupt."""
    import signal
    import threading

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        c = Cluster("ignored", ClusterOptions(count=1), root=tmp_path)
    finally:
        signal.signal(signal.SIGINT, before)
    try:
        results: list = []
        cell = threading.Thread(target=lambda: results.append(c.run(
            "import time\nfor _ in range(600): time.sleep(0.1)")), daemon=True)
        cell.start()
        assert wait_for(lambda: c.client.control("ping").get(0, {}).get("busy"), 60)
        c.client.interrupt()
        cell.join(15)
        assert results and results[0][0]["ename"] == "KeyboardInterrupt", results
    finally:
        c.shutdown()
