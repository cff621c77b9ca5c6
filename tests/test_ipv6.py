"""Agents on IPv6 addresses (pod IPs of IPv6 clusters): bind and connect as tcp://[::1]:port."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import wait_for


def test_agent_on_ipv6_loopback_answers_requests(tmp_path):
    from jupyter_kremote.client import ClusterClient, Endpoint
    from jupyter_kremote.protocol import new_key, tcp_address

    assert tcp_address("::1", 5) == "tcp://[::1]:5"
    assert tcp_address("10.0.0.1", 5) == "tcp://10.0.0.1:5"
    key = new_key()
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_kremote.agent", "--host", "::1", "--workdir",
         str(tmp_path / "work"), "--ready-file", str(ready), "--key-stdin",
         "--parent-pid", str(os.getpid()), "--cluster-dir", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.stdin.write(key + b"\n")
    proc.stdin.close()
    client = None
    try:
        if not wait_for(ready.exists, 60):
            pytest.fail(f"agent not ready: {proc.stderr.read().decode()}")
        info = json.loads(ready.read_text())
        client = ClusterClient(key, [Endpoint(0, "::1", info["port"], info["control_port"])],
                               lambda r: None)
        assert client.control("ping", timeout=60)[0]["status"] == "ok"
        client.request("push", payload={"v": 41}, timeout=30)
        assert client.request("pull", {"names": ["v"]}, timeout=30)[0].payload == {"v": 41}
        client.control("shutdown")
        assert proc.wait(10) == 0
        assert not (tmp_path / "work").exists()  # an agent removes its work folder on exit
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
