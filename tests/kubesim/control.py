"""Knobs over HTTP: `POST /kubesim/knobs/<name>` (JSON keyword arguments), and a small
synchronous client for tests running in another process."""

from __future__ import annotations

import inspect
import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

from aiohttp import web

from .kubeconfig import read_kubeconfig

# KubeSim methods callable over HTTP.
KNOBS = ("set_unknown_images", "add_unknown_image", "oom_kill", "evict", "inject_error",
         "clear_errors", "drop_watches", "compact", "set_node", "add_node", "processes",
         "pod_workdir", "configure", "state", "create", "service_account_token",
         "preempt", "taint_node", "untaint_node", "stall_watches", "resume_watches",
         "access_log", "set_kueue", "drop_portforwards", "portforwards_served",
         "drop_portforward_on_data")


def add_routes(app: web.Application, sim: Any) -> None:
    """Register the knob routes for `sim` (a KubeSim)."""

    async def knob(request: web.Request) -> web.Response:
        name = request.match_info["name"].replace("-", "_")
        if name not in KNOBS:
            return web.json_response({"error": f"unknown knob {name!r}", "knobs": KNOBS},
                                     status=404)
        raw = await request.read()
        kwargs = json.loads(raw) if raw.strip() else {}
        try:
            result = getattr(sim, name)(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except TypeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"result": result})

    async def state(request: web.Request) -> web.Response:
        return web.json_response(sim.state())

    app.router.add_post("/kubesim/knobs/{name}", knob)
    app.router.add_get("/kubesim/state", state)


class KubeSimControl:
    """Turn the knobs of a running emulator over HTTP: `ctl.evict(namespace=..., name=...)`."""

    def __init__(self, url: str, token: str, ca_pem: bytes | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._ssl = ssl.create_default_context(cadata=ca_pem.decode()) if ca_pem else None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str]) -> KubeSimControl:
        return cls(*read_kubeconfig(path))

    def call(self, knob: str, /, **kwargs: Any) -> Any:
        """Turn `knob` with keyword arguments (`name=` among them: knob is positional)."""
        name = knob
        request = urllib.request.Request(
            f"{self.url}/kubesim/knobs/{name}", data=json.dumps(kwargs).encode(),
            method="POST", headers={"Authorization": f"Bearer {self.token}",
                                    "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30, context=self._ssl) as resp:
                return json.loads(resp.read())["result"]
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode()
            exc.close()
            raise RuntimeError(f"kubesim knob {name}: {exc.code} {detail}") from None

    def __getattr__(self, name: str) -> Any:
        if name not in KNOBS:
            raise AttributeError(name)
        return lambda **kwargs: self.call(name, **kwargs)
