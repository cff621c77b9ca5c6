"""The magic-free public API: ``async with LocalCluster(count=2) as c: await c.run(...)``.

Each call runs the synchronous session code in a worker thread, so an event loop (a
script's, or a notebook's) keeps running while agents work. Output printed by the
agents is written to this process's stdout/stderr, labelled by rank when several run.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .client import Message
from .errors import RemoteError
from .session import Cluster, ClusterOptions
from .spec import PodSpec, parse_duration


def _print_output(label: bool) -> Callable[[int, Message], None]:
    def hook(rank: int, msg: Message) -> None:
        if msg.kind == "stream":
            text = msg.content.get("text", "")
            if label:
                text = "".join(f"[rank {rank}] {line}" for line in text.splitlines(True))
            stream = sys.stderr if msg.content.get("name") == "stderr" else sys.stdout
            stream.write(text)
            stream.flush()

    return hook


class LocalCluster:
    """A cluster of local agent processes.

    Example::

        async with LocalCluster(count=2, files=["helpers.py"]) as c:
            await c.run("import helpers; x = helpers.answer()")
            print(await c.pull("x"))          # [42, 42]
            print(await c.call(pow, 2, 10))   # [1024, 1024]
    """

    backend = "local"

    def __init__(self, count: int = 1, *, name: str = "default", ttl: float | str = 3600,
                 env: dict[str, str] | None = None, files: list[str] | None = None,
                 root: str | Path = ".", connect_timeout: float = 30.0) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.name = name
        self.options = ClusterOptions(
            count=count, backend=self.backend, env=dict(env or {}),
            ttl=parse_duration(ttl) if isinstance(ttl, str) else float(ttl),
            connect_timeout=connect_timeout)
        self.files = list(files or [])
        self.root = root
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("the cluster is not started; use `async with` or `await start()`")
        return self._cluster

    async def start(self) -> LocalCluster:
        self._cluster = await asyncio.to_thread(Cluster, self.name, self.options, self.root)
        if self.files:
            entries = self._cluster.files.explicit(self.files)
            await asyncio.to_thread(self._cluster.send_files, entries)
        return self

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def run(self, code: str, *, ranks: list[int] | None = None,
                  timeout: float | None = None) -> list[dict[str, Any]]:
        """Run ``code`` on the agents; raise the first remote error, like a cell would.

        Returns each rank's last-expression display bundle (``{}`` when none).
        """
        results: dict[int, dict[str, Any]] = {}
        printer = _print_output(label=len(ranks or self.cluster.ranks) > 1)

        def hook(rank: int, msg: Message) -> None:
            if msg.kind == "display" and msg.content.get("metadata", {}).get("kremote_result"):
                results[rank] = msg.content.get("data") or {}
            else:
                printer(rank, msg)

        replies = await asyncio.to_thread(self.cluster.run, code, ranks=ranks, on_output=hook,
                                          timeout=timeout)
        for rank, content in replies.items():
            if content.get("status") == "error":
                raise RemoteError.from_reply(rank, content)
        return [results.get(r, {}) for r in sorted(replies)]

    async def call(self, fn: Callable[..., Any], *args: Any, ranks: list[int] | None = None,
                   **kwargs: Any) -> list[Any]:
        """``fn(*args, **kwargs)`` on each agent (shipped with cloudpickle); rank order."""
        hook = _print_output(label=len(ranks or self.cluster.ranks) > 1)
        return await asyncio.to_thread(self.cluster.call, fn, *args, ranks=ranks,
                                       on_output=hook, **kwargs)

    async def push(self, namespace: dict[str, Any] | None = None, *,
                   ranks: list[int] | None = None, **values: Any) -> None:
        await asyncio.to_thread(self.cluster.push, {**(namespace or {}), **values}, ranks=ranks)

    async def pull(self, *names: str, ranks: list[int] | None = None) -> Any:
        """One name: its value per rank (a list); several: a list of dicts per rank."""
        values = await asyncio.to_thread(self.cluster.pull, list(names), ranks=ranks)
        if len(names) == 1:
            return [values[r][names[0]] for r in sorted(values)]
        return [values[r] for r in sorted(values)]

    async def send_files(self, *paths: str) -> int:
        entries = self.cluster.files.explicit(list(paths))
        return await asyncio.to_thread(self.cluster.send_files, entries)

    async def extend(self, duration: float | str) -> float:
        seconds = parse_duration(duration) if isinstance(duration, str) else float(duration)
        return await asyncio.to_thread(self.cluster.extend, seconds)

    async def shutdown(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            await asyncio.to_thread(cluster.shutdown)


class KubeCluster(LocalCluster):
    """A cluster of agent pods on Kubernetes, with the same API as :class:`LocalCluster`.

    Example::

        spec = PodSpec(image="myorg/train:1.4", cpu="2", mem="8Gi", gpu=1, count=2,
                       templates=["gpu"], files=["model.py"])
        async with KubeCluster(name="train", spec=spec) as c:
            await c.run("import model; model.fit()")
    """

    backend = "kubernetes"

    def __init__(self, name: str = "default", spec: PodSpec | None = None, *,
                 root: str | Path = ".") -> None:
        spec = spec or PodSpec()
        super().__init__(spec.count, name=name, ttl=spec.ttl, env=spec.env, files=spec.files,
                         root=root, connect_timeout=spec.connect_timeout)
        o = self.options
        o.secret_env = dict(spec.secret_env)
        o.templates = list(spec.templates)
        o.image, o.cpu, o.mem, o.gpu = spec.image, spec.cpu, spec.mem, spec.gpu
        o.gpu_type, o.namespace = spec.gpu_type, spec.namespace

