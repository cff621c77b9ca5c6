"""kubesim's pods/portforward against independent clients: kr8s' PortForward, `kubectl
port-forward` (SPDY over WebSocket), and a raw aiohttp WebSocket that checks the wire format
(channels, port prefixes, subprotocols, RBAC)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

try:
    from tests.kubesim import KubeSimThread
except ImportError:  # tests/ is on sys.path but the repository root is not
    from kubesim import KubeSimThread  # type: ignore

NS = "default"
PORT = 7000
KUBECTL = "/usr/bin/kubectl"
# a TCP service in a pod: answers each line with "echo: LINE" (bound to its pod IP, as the agent)
ECHO = f"""
import os, socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"echo: " + line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((os.environ["KUBESIM_POD_IP"], {PORT}), H).serve_forever()
"""


def pod(name: str, command: str | None = ECHO, node: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{
        "name": "main", "image": "python:3.11-slim",
        **({"command": [sys.executable, "-u", "-c", command]} if command else {}),
        "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1}}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": spec}


def role(name: str, verbs: list[str]) -> list[dict[str, Any]]:
    """A ServiceAccount `name` that may get pods and use `verbs` on pods/portforward."""
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    if verbs:
        rules.append({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs})
    meta = {"name": name, "namespace": NS}
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
             "rules": rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                           "kind": "Role", "name": name},
             "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}]}]


@pytest.fixture(scope="module")
def ks(tmp_path_factory):
    ks = KubeSimThread(rbac=True, pod_ips="unique").start()
    try:
        ks.call("create", pod("echo"))
        for name, verbs in (("forwarder", ["get", "create"]), ("reader", [])):
            for doc in role(name, verbs):
                ks.call("create", doc)
        deadline = time.monotonic() + 30
        while not _pod_ready(ks, "echo"):
            assert time.monotonic() < deadline, "the echo pod never became ready"
            time.sleep(0.05)
        yield ks
    finally:
        ks.stop()


def _pod_ready(ks: Any, name: str) -> bool:
    from kubesim.resources import PODS  # type: ignore

    obj = ks.call(lambda sim: sim.store.get(PODS, NS, name))
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in obj.get("status", {}).get("conditions") or [])


def kubeconfig(ks: Any, tmp_path: Path, account: str | None = None) -> str:
    token = ks.call("service_account_token", NS, account) if account else None
    return ks.write_kubeconfig(tmp_path / f"kubeconfig-{account}", token=token)


def url_and_headers(ks: Any, account: str | None = None, path: str = "") -> tuple[str, dict]:
    token = ks.call("service_account_token", NS, account) if account else ks.sim.token
    base = ks.sim.url.replace("http://", "ws://")
    return base + path, {"Authorization": f"Bearer {token}"}


def test_kr8s_portforward_reaches_the_pod(ks, tmp_path):
    """kr8s' own PortForward (an independent client) carries a TCP conversation."""
    import kr8s.asyncio
    from kr8s.asyncio.objects import Pod
    from kr8s.asyncio.portforward import PortForward

    path = kubeconfig(ks, tmp_path, "forwarder")

    async def go() -> list[bytes]:
        api = await kr8s.asyncio.api(kubeconfig=path)
        echo = await Pod.get("echo", namespace=NS, api=api)
        async with PortForward(echo, PORT, local_port="auto") as port:
            replies = []
            for word in (b"one", b"two"):  # two TCP connections: one WebSocket each
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(word + b"\n" + b"x" * 300_000 + b"\n")
                await writer.drain()
                replies.append(await reader.readline())
                big = await reader.readexactly(300_007)  # crosses several WebSocket frames
                assert big == b"echo: " + b"x" * 300_000 + b"\n"
                writer.close()
            return replies

    before = ks.call("portforwards_served")
    assert asyncio.run(go()) == [b"echo: one\n", b"echo: two\n"]
    assert ks.call("portforwards_served") - before == 2
    decisions = ks.call("access_log", user=f"system:serviceaccount:{NS}:forwarder")
    assert {(d["verb"], d["resource"], d["allowed"]) for d in decisions} >= {
        ("get", "pods/portforward", True)}


async def _open(ks: Any, query: str, protocols: tuple[str, ...] = ("v4.channel.k8s.io",),
                account: str | None = None, pod_name: str = "echo") -> Any:
    url, headers = url_and_headers(ks, account,
                                   f"/api/v1/namespaces/{NS}/pods/{pod_name}/portforward")
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(f"{url}?{query}", headers=headers, protocols=protocols)
    except BaseException:
        await session.close()
        raise
    return session, ws


def test_wire_format_two_ports_and_prefixes(ks):
    """Channels 0/1 for the first port and 2/3 for the second; each channel's first frame is
    its port, little-endian; a refused port reports on its error channel."""
    async def go() -> tuple[list[bytes], bytes, bytes]:
        session, ws = await _open(ks, f"ports={PORT}&ports=7001")
        try:
            first = [(await ws.receive_bytes(timeout=60)) for _ in range(4)]
            await ws.send_bytes(b"\x00hello\n")
            reply, error = b"", b""
            while not (reply.endswith(b"\n") and error):
                msg = await ws.receive_bytes(timeout=60)
                if msg[0] == 0:
                    reply += msg[1:]
                else:
                    assert msg[0] == 3, msg
                    error += msg[1:]
            assert ws.protocol == "v4.channel.k8s.io"
            return first, reply, error
        finally:
            await ws.close()
            await session.close()

    first, reply, error = asyncio.run(go())
    assert error.startswith(b"error forwarding port 7001 to pod echo, uid "), error
    assert b"connection refused" in error.lower(), error
    assert first == [b"\x00" + struct.pack("<H", PORT), b"\x01" + struct.pack("<H", PORT),
                     b"\x02" + struct.pack("<H", 7001), b"\x03" + struct.pack("<H", 7001)]
    assert reply == b"echo: hello\n"


def test_base64_subprotocol(ks):
    async def go() -> tuple[str, str, bytes]:
        session, ws = await _open(ks, f"ports={PORT}", ("v4.base64.channel.k8s.io",))
        try:
            prefix = await ws.receive_str(timeout=60)
            await ws.receive_str(timeout=60)
            await ws.send_str("0" + base64.b64encode(b"b64\n").decode())
            reply = await ws.receive_str(timeout=60)
            return ws.protocol, prefix, base64.b64decode(reply[1:]) if reply[0] == "0" else b""
        finally:
            await ws.close()
            await session.close()

    protocol, prefix, reply = asyncio.run(go())
    assert protocol == "v4.base64.channel.k8s.io"
    assert prefix == "0" + base64.b64encode(struct.pack("<H", PORT)).decode()
    assert reply == b"echo: b64\n"


def test_refusals_as_the_api_server_answers(ks):
    async def status(query: str, protocols: tuple[str, ...] = ("v4.channel.k8s.io",),
                     account: str | None = None, pod_name: str = "echo") -> tuple[int, str]:
        try:
            session, ws = await _open(ks, query, protocols, account, pod_name)
        except aiohttp.WSServerHandshakeError as exc:
            url, headers = url_and_headers(
                ks, account, f"/api/v1/namespaces/{NS}/pods/{pod_name}/portforward")
            async with aiohttp.ClientSession() as s, s.get(
                    url.replace("ws://", "http://") + "?" + query, headers=headers) as r:
                return exc.status, await r.text()
        await ws.close()
        await session.close()
        return 101, ""

    async def go() -> list[tuple[int, str]]:
        return [await status(f"ports={PORT}", account="reader"),
                await status(""),
                await status("ports=http"),
                await status(f"ports={PORT}", ("v5.channel.k8s.io",)),  # exec only
                await status(f"ports={PORT}", pod_name="missing")]

    forbidden, no_ports, bad_port, protocol, missing = asyncio.run(go())
    assert forbidden[0] == 403 and (
        'User \\"system:serviceaccount:default:reader\\" cannot get resource '
        '\\"pods/portforward\\" in API group \\"\\" in the namespace \\"default\\"'
        in forbidden[1]), forbidden
    assert no_ports[0] == 400 and 'query parameter \\"port\\" is required' in no_ports[1]
    assert bad_port[0] == 400 and "unable to parse" in bad_port[1]
    assert protocol[0] == 403
    assert missing[0] == 404 and 'pods \\"missing\\" not found' in missing[1]


def test_websocket_needs_create_from_1_35(ks, tmp_path):
    """AuthorizePodWebsocketUpgradeCreatePermission: from 1.35 the WebSocket GET also needs
    `create` (a Role with get only is refused), before it `get` was enough."""
    for doc in role("getter", ["get"]):
        ks.call("create", doc)

    async def attempt() -> int:
        try:
            session, ws = await _open(ks, f"ports={PORT}", account="getter")
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        await session.close()
        return 101

    assert asyncio.run(attempt()) == 101
    ks.call("configure", version="v1.35.0")
    try:
        assert asyncio.run(attempt()) == 403
        denied = ks.call("access_log", user=f"system:serviceaccount:{NS}:getter",
                         allowed=False)
        assert [(d["verb"], d["resource"]) for d in denied] == [("create", "pods/portforward")]
    finally:
        ks.call("configure", version="v1.31.0")


def test_drop_closes_the_websocket_and_the_pod_connection(ks):
    async def go() -> tuple[int, Any]:
        session, ws = await _open(ks, f"ports={PORT}")
        try:
            for _ in range(2):
                await ws.receive_bytes(timeout=60)
            dropped = await asyncio.to_thread(ks.call, "drop_portforwards")
            msg = await ws.receive(timeout=60)
            return dropped, msg.type
        finally:
            await ws.close()
            await session.close()

    dropped, kind = asyncio.run(go())
    assert dropped == 1 and kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ks.call("portforwards_served") >= 1


def test_unscheduled_pod_has_no_host(ks):
    ks.call("create", pod("nowhere", command=None, node=None) | {
        "spec": {"containers": [{"name": "main", "image": "python:3.11-slim"}],
                 "nodeSelector": {"no-such": "label"}}})

    async def go() -> tuple[int, str]:
        try:
            session, ws = await _open(ks, f"ports={PORT}", pod_name="nowhere")
        except aiohttp.WSServerHandshakeError as exc:
            url, headers = url_and_headers(ks, None,
                                           f"/api/v1/namespaces/{NS}/pods/nowhere/portforward")
            async with aiohttp.ClientSession() as s, s.get(
                    url.replace("ws://", "http://") + f"?ports={PORT}", headers=headers) as r:
                return exc.status, await r.text()
        await ws.close()
        await session.close()
        return 101, ""

    code, text = asyncio.run(go())
    assert code == 400 and "pod nowhere does not have a host assigned" in text


@pytest.mark.skipif(not os.path.exists(KUBECTL), reason="kubectl is not installed")
def test_kubectl_port_forward(ks, tmp_path):
    """`kubectl port-forward` (1.31+: SPDY tunnelled over a WebSocket) with a ServiceAccount
    that holds get/create on pods/portforward: two connections, a large reply, and a port
    nothing listens on, which kubectl reports with the kubelet's error."""
    path = kubeconfig(ks, tmp_path, "forwarder")
    proc = subprocess.Popen([KUBECTL, "--kubeconfig", path, "port-forward", "pod/echo",
                             f":{PORT}", ":7001"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        local: dict[int, int] = {}
        deadline = time.monotonic() + 30
        while len(local) < 2:  # "Forwarding from 127.0.0.1:41234 -> 7000"
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
            line = proc.stdout.readline()
            found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
            if found:
                local[int(found[2])] = int(found[1])
        for word in (b"one", b"two"):
            with socket.create_connection(("127.0.0.1", local[PORT]), timeout=10) as s:
                s.sendall(word + b"\n" + b"y" * 200_000 + b"\n")
                got = b""
                while got.count(b"\n") < 2:
                    chunk = s.recv(1 << 16)
                    assert chunk, got[:100]
                    got += chunk
                assert got == b"echo: " + word + b"\necho: " + b"y" * 200_000 + b"\n"
        with socket.create_connection(("127.0.0.1", local[7001]), timeout=10) as s:
            assert s.recv(100) == b""  # the pod side refused: kubectl closes the connection
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "error forwarding port 7001 to pod echo" in err, err
    assert "connection refused" in err, err
