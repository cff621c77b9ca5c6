"""Local backend: each agent is a subprocess of the kernel, bound to loopback.

The embedded default when no cluster is configured. Agents get the cluster key on
stdin (never argv or env), their own working folder, the torch.distributed variables,
and a watchdog on the kernel's pid, so that a killed kernel leaves no agent behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..client import Endpoint
from ..errors import ClusterEnded
from ..protocol import new_key
from .base import ClusterHandle, StartRequest

STOP_REASONS = {3: "stopped because its TTL ran out", 4: "stopped because its kernel went away"}


class LocalBackend:
    name = "local"

    def __init__(self) -> None:
        self._procs: dict[int, list[subprocess.Popen]] = {}
        self._dirs: dict[int, Path] = {}

    def start(self, request: StartRequest) -> ClusterHandle:
        spec = request.spec
        services, commands = template_services(request.name, spec.templates)
        key = new_key()
        base = Path(tempfile.mkdtemp(prefix=f"kremote-{_safe(request.name)}-",
                                     dir=request.workdir))
        master_port = _free_port()
        procs: list[subprocess.Popen] = []
        started = time.time()
        try:
            for rank in range(spec.count):
                procs.append(self._spawn(request, rank, base, key, master_port, commands))
            endpoints = self._wait_ready(request, procs, base)
        except BaseException:
            _kill_all(procs)
            shutil.rmtree(base, ignore_errors=True)
            raise
        handle = ClusterHandle(name=request.name, backend=self.name, key=key,
                               endpoints=endpoints, started=started,
                               deadline=started + spec.ttl, services=services)
        self._procs[id(handle)] = procs
        self._dirs[id(handle)] = base
        return handle

    def _spawn(self, request: StartRequest, rank: int, base: Path, key: bytes,
               master_port: int, commands: dict[str, str]) -> subprocess.Popen:
        spec = request.spec
        env = {
            **os.environ,
            **commands,
            **spec.env,
            **spec.secret_env,
            "KREMOTE_CLUSTER": request.name,
            "RANK": str(rank),
            "WORLD_SIZE": str(spec.count),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(spec.count),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(master_port),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("KREMOTE_KEY", None)
        env.pop("JPY_PARENT_PID", None)
        workdir = base / f"rank-{rank}"
        cmd = [sys.executable, "-m", "jupyter_kremote.agent", "--rank", str(rank),
               "--count", str(spec.count), "--host", "127.0.0.1", "--workdir", str(workdir),
               "--ttl", str(spec.ttl), "--parent-pid", str(os.getpid()),
               "--ready-file", str(base / f"rank-{rank}.ready"), "--key-stdin",
               "--cluster-dir", str(base)]
        log = open(base / f"rank-{rank}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=log, env=env,
                                    cwd=str(base), start_new_session=True)
        finally:
            log.close()
        assert proc.stdin is not None
        proc.stdin.write(key + b"\n")
        proc.stdin.close()
        return proc

    def _wait_ready(self, request: StartRequest, procs: list[subprocess.Popen],
                    base: Path) -> list[Endpoint]:
        endpoints: dict[int, Endpoint] = {}
        end = time.monotonic() + request.spec.connect_timeout
        while len(endpoints) < len(procs):
            for rank, proc in enumerate(procs):
                if rank in endpoints:
                    continue
                ready = base / f"rank-{rank}.ready"
                if ready.exists():
                    info = json.loads(ready.read_text())
                    endpoints[rank] = Endpoint(rank, "127.0.0.1", info["port"],
                                               info["control_port"])
                elif proc.poll() is not None:
                    tail = _tail(base / f"rank-{rank}.log", 5)
                    raise RuntimeError(f"agent rank {rank} {_describe_exit(proc.returncode)} "
                                       f"before it was ready; its log ends:\n{tail}")
            if time.monotonic() > end:
                raise TimeoutError(f"agents not ready within --connect-timeout "
                                   f"{request.spec.connect_timeout:g}s")
            if len(endpoints) < len(procs):
                time.sleep(0.005)
        return [endpoints[r] for r in range(len(procs))]

    def liveness(self, handle: ClusterHandle, rank: int) -> str | None:
        procs = self._procs.get(id(handle))
        if procs is None:
            return "was shut down"
        code = procs[rank].poll()
        return None if code is None else _describe_exit(code)

    def logs(self, handle: ClusterHandle, rank: int, tail: int = 200) -> str:
        base = self._dirs.get(id(handle))
        if base is None:
            return ""
        return _tail(base / f"rank-{rank}.log", tail)

    def follow_logs(self, handle: ClusterHandle, rank: int, write, stop=None) -> None:
        base = self._dirs.get(id(handle))
        if base is None:
            return
        with open(base / f"rank-{rank}.log", errors="replace") as fh:
            while stop is None or not stop.is_set():
                chunk = fh.read()
                if chunk:
                    write(chunk)
                elif self.liveness(handle, rank) is not None:
                    return
                else:
                    time.sleep(0.2)

    def events(self, handle: ClusterHandle, n: int = 50) -> list[str]:
        return []

    def extend(self, handle: ClusterHandle, deadline: float) -> None:
        pass  # local agents keep their own deadline, moved by the ``extend`` message

    def describe(self, handle: ClusterHandle, rank: int) -> dict[str, Any]:
        procs = self._procs.get(id(handle), [])
        info: dict[str, Any] = {"where": "local", "name": f"rank-{rank}",
                                "node": socket.gethostname(), "restarts": 0,
                                "started": handle.started}
        if rank < len(procs):
            info["pid"] = procs[rank].pid
            info["phase"] = "Running" if procs[rank].poll() is None else "Failed"
        base = self._dirs.get(id(handle))
        if base is not None:
            info["workdir"] = str(base / f"rank-{rank}")
        return info

    def stop(self, handle: ClusterHandle, grace: float = 2.0) -> None:
        procs = self._procs.pop(id(handle), [])
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _kill_all(procs)
        base = self._dirs.pop(id(handle), None)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    if code in STOP_REASONS:
        return STOP_REASONS[code]
    return f"exited with code {code}"


def template_services(cluster: str, templates: list[str]
                      ) -> tuple[dict[str, int], dict[str, str]]:
    """What the templates (``-t``) mean for local agents: rank 0's services, ports named
    ``kremote-<name>`` ({name: port}, served on 127.0.0.1), and the ``KREMOTE_SERVICE_<NAME>``
    commands that start them. The rest of a pod template (image, resources, volumes) has no
    meaning for local processes and is not read."""
    if not templates:
        return {}, {}
    from ..agent.services import ENV_PREFIX
    from ..manifests import services_of
    from ..templates import TemplateError, TemplateResolver, merge

    resolver = TemplateResolver()
    job: dict[str, Any] = {}
    try:
        for name in templates:
            job = merge(job, resolver.load_fragment(name, {}))
    except (TemplateError, ValueError) as exc:
        raise ClusterEnded(f"cluster {cluster!r} could not start: {exc}") from None
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    commands = {str(e["name"]): str(e["value"]) for c in pod.get("containers") or []
                for e in c.get("env") or []
                if str(e.get("name", "")).startswith(ENV_PREFIX) and e.get("value")}
    return services_of(job), commands


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:40]
