"""Runtime state the kubelet keeps per pod and per container, and image references."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from .logs import LogBuffer
from .util import deep, rfc3339

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
_IMAGE_RE = re.compile(rf"(?:{_DOMAIN}(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
                       rf"(?::[\w][\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z]"
                       rf"[A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?")


def full_image_ref(image: str) -> str:
    """'python:3.11' -> 'docker.io/library/python:3.11', as containerd names it."""
    first = image.split("/", 1)[0]
    if "/" not in image:
        image = f"docker.io/library/{image}"
    elif "." not in first and ":" not in first and first != "localhost":
        image = f"docker.io/{image}"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        image += ":latest"
    return image


class Container:
    """Runtime state of one container of one pod."""

    def __init__(self, spec: dict[str, Any], init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict[str, Any] = {}
        self.ready = False
        self.restart_count = 0
        self.container_id = ""
        self.logs: list[LogBuffer] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.kill_reason: str | None = None
        self.exit_code: int | None = None

    def status(self) -> dict[str, Any]:
        image = str(self.spec.get("image", ""))
        out: dict[str, Any] = {"name": self.name, "state": deep(self.state),
                               "lastState": deep(self.last_state), "ready": self.ready,
                               "restartCount": self.restart_count, "image": image,
                               "imageID": "", "started": "running" in self.state}
        if self.container_id:
            out["containerID"] = self.container_id
            digest = hashlib.sha256(image.encode()).hexdigest()
            out["imageID"] = f"{full_image_ref(image).rsplit(':', 1)[0]}@sha256:{digest}"
        return out

    def waiting(self, reason: str, message: str | None = None) -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}


class PodRuntime:
    """One pod on the node: its folder, IP, containers and lifecycle flags."""

    def __init__(self, pod: dict[str, Any], workdir: str, ip: str) -> None:
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.node: str = pod["spec"]["nodeName"]
        self.workdir = workdir
        self.ip = ip
        self.init = [Container(c, True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c, False) for c in pod["spec"]["containers"]]
        self.init_done = not self.init
        if self.init:
            for c in self.containers:
                c.waiting("PodInitializing")
        self.terminating = False
        self.stop = asyncio.Event()
        self.evicted: str | None = None
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.started_at = rfc3339()

    def all(self) -> list[Container]:
        return self.init + self.containers

    def find(self, name: str) -> Container | None:
        return next((c for c in self.all() if c.name == name), None)


def valid_image(image: str) -> bool:
    """Whether `image` parses as a container image reference."""
    return _IMAGE_RE.fullmatch(image) is not None
