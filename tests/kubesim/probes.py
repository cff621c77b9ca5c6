"""Readiness probes run by the kubelet: tcpSocket, httpGet and exec."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .util import within


def resolve_port(port: Any, container: dict[str, Any]) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    return None


async def probe_once(probe: dict[str, Any], container: dict[str, Any], pod_ip: str,
                     env: dict[str, str], cwd: str) -> bool:
    """Run a probe once; True on success."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        return bool(await within(_probe(probe, container, pod_ip, env, cwd), timeout))
    except (asyncio.TimeoutError, OSError):
        return False


async def _probe(probe: dict[str, Any], container: dict[str, Any], pod_ip: str,
                 env: dict[str, str], cwd: str) -> bool:
    if "tcpSocket" in probe:
        spec = probe["tcpSocket"] or {}
        port = resolve_port(spec.get("port"), container)
        if port is None:
            return False
        _, writer = await asyncio.open_connection(spec.get("host") or pod_ip, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    if "httpGet" in probe:
        spec = probe["httpGet"] or {}
        port = resolve_port(spec.get("port"), container)
        if port is None:
            return False
        host = spec.get("host") or pod_ip
        reader, writer = await asyncio.open_connection(host, port)
        headers = "".join(f"{h['name']}: {h['value']}\r\n" for h in spec.get("httpHeaders") or [])
        writer.write(f"GET {spec.get('path') or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     f"User-Agent: kube-probe/1.31\r\n{headers}Connection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        line = await reader.readline()
        writer.close()
        parts = line.split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    if "exec" in probe:
        command = (probe["exec"] or {}).get("command") or []
        if not command:
            return False
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            return await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
    return True  # grpc and anything else: treated as passing
