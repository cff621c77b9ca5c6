"""The magic-free public API: ``async with LocalCluster(count=2) as c: await c.run(...)``.

Requests go through :class:`~jupyter_kremote.aio_client.AsyncClusterClient` on the
caller's event loop (no thread per call); only starting, shipping files by path and
shutting down, which wait on the backend, run in a worker thread. Output printed by the
agents is written to this process's stdout/stderr, labelled by rank (or group and rank)
when several run.

A cluster holds one or more named *groups* of agents, each started from its own
:class:`PodSpec` (one Job per group on Kubernetes); see :mod:`jupyter_kremote.groups`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from .client import Message
from .errors import AgentDied, RemoteError
from .mapper import RECENT, Mapper, TaskCounts, Worker, notebook_progress
from .podgroups import DEFAULT_GROUP, Group, GroupSet, check_group_name
from .remote_fn import RemoteFunction, module_files
from .session import ClusterOptions
from .spec import PodSpec, parse_duration
from .task_report import report_tasks


def _print_output(labels: dict[int, str] | None) -> Callable[[int, Message], None]:
    def hook(rank: int, msg: Message) -> None:
        if msg.kind == "stream":
            text = msg.content.get("text", "")
            if labels:
                label = labels.get(rank, f"rank {rank}")
                text = "".join(f"[{label}] {line}" for line in text.splitlines(True))
            stream = sys.stderr if msg.content.get("name") == "stderr" else sys.stdout
            stream.write(text)
            stream.flush()

    return hook


class LocalCluster:
    """A cluster of local agent processes.

    Example::

        async with LocalCluster(count=2, files=["helpers.py"]) as c:
            await c.run("import helpers; x = helpers.answer()")
            print(await c.pull("x"))                       # [42, 42]
            print(await c.call(pow, 2, 10))                # [1024, 1024]
            print(await c.map(lambda x: x * x, range(5)))  # [0, 1, 4, 9, 16]

    Several groups, each from its own spec (``count``, ``env``; pods: image, resources)::

        LocalCluster(groups={"preprocess": PodSpec(count=2), "train": PodSpec(count=1)})
    """

    backend = "local"

    def __init__(self, count: int = 1, *, name: str = "default", ttl: float | str = 3600,
                 env: dict[str, str] | None = None, files: list[str] | None = None,
                 root: str | Path = ".", connect_timeout: float = 30.0,
                 groups: dict[str, PodSpec] | None = None) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.name = name
        self.ttl = parse_duration(ttl) if isinstance(ttl, str) else float(ttl)
        self.options = ClusterOptions(count=count, backend=self.backend, env=dict(env or {}),
                                      ttl=self.ttl, connect_timeout=connect_timeout)
        self.files = list(files or [])
        self._group_files: dict[str, list[str]] = {}  # a group spec's own files
        self.root = root
        self._specs: dict[str, ClusterOptions] = {}
        for group, spec in (groups or {}).items():
            self._specs[check_group_name(group)] = self._options(spec)
            self._group_files[group] = list(spec.files)
        if not self._specs:
            self._specs[DEFAULT_GROUP] = self.options
        self._groups: GroupSet | None = None

    def _options(self, spec: PodSpec) -> ClusterOptions:
        """A group's start options: its spec, with the cluster's TTL (one for all)."""
        return ClusterOptions(
            count=spec.count, backend=self.backend, env={**self.options.env, **spec.env},
            secret_env=dict(spec.secret_env), ttl=self.ttl,
            connect_timeout=self.options.connect_timeout, templates=list(spec.templates),
            image=spec.image, cpu=spec.cpu, mem=spec.mem, gpu=spec.gpu,
            gpu_type=spec.gpu_type, namespace=spec.namespace, queue=spec.queue,
            priority=spec.priority, queue_timeout=spec.queue_timeout,
            on_preempt=spec.on_preempt)

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def groups(self) -> GroupSet:
        if self._groups is None:
            raise RuntimeError("the cluster is not started; use `async with` or `await start()`")
        return self._groups

    @property
    def cluster(self) -> Any:
        """The session-level cluster of the only (or default) group."""
        return self.groups.get(None).cluster

    async def start(self) -> LocalCluster:
        """Start every group together: all or nothing."""
        groups = GroupSet(self.name, self.root)
        try:
            await groups.start(self._specs)
            for g in groups:
                await self._ship_files(g)
        except BaseException:
            groups.close_clients()
            await asyncio.to_thread(groups.shutdown)
            raise
        self._groups = groups
        _CURRENT[0] = self
        return self

    async def add_group(self, name: str, spec: PodSpec | None = None) -> list[int]:
        """Start one more group in the running cluster; returns its ranks.

        Every agent (old and new) then knows every group's addresses."""
        name = check_group_name(name)
        options = self._options(spec or PodSpec())
        self._group_files[name] = list((spec or PodSpec()).files)
        g = await self.groups.add(name, options)
        await self._ship_files(g)
        return g.ranks

    async def __aenter__(self) -> LocalCluster:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def extend(self, duration: float | str) -> float:
        seconds = parse_duration(duration) if isinstance(duration, str) else float(duration)
        return await asyncio.to_thread(self.groups.extend, seconds)

    async def shutdown(self) -> None:
        if self._groups is not None:
            groups, self._groups = self._groups, None
            if _CURRENT[0] is self:
                _CURRENT[0] = None
            groups.close_clients()
            await asyncio.to_thread(groups.shutdown)

    # -- requests -------------------------------------------------------------------------
    async def _request(self, g: Group, kind: str, content: dict[str, Any] | None = None,
                       payload: Any = None, *, ranks: list[int] | None = None,
                       has_payload: bool | None = None, on_output: Any = None,
                       timeout: float | None = None) -> dict[int, Message]:
        c = g.cluster
        c.check_usable()
        targets = c._targets(ranks)
        try:
            return await g.client.request(kind, content, payload, ranks=targets,
                                          has_payload=has_payload, on_output=on_output,
                                          timeout=timeout)
        except AgentDied as exc:
            c.ended = str(exc).replace(" while running the request", "")
            raise AgentDied(f"{exc}; start a fresh cluster (`await cluster.shutdown()`, then "
                            "a new one)") from None

    async def _each(self, group: str | None, ranks: list[int] | None, kind: str,
                    content: dict[str, Any] | None = None, payload: Any = None, *,
                    has_payload: bool | None = None, timeout: float | None = None,
                    results: dict[tuple[str, int], Any] | None = None,
                    ) -> list[tuple[Group, int, Message]]:
        """One request to each targeted group; replies in group then rank order."""
        return await self._each_of(self.groups.targets(group, ranks), len(self.groups) > 1,
                                   kind, content, payload, has_payload=has_payload,
                                   timeout=timeout, results=results)

    async def _each_of(self, targets: list[tuple[Group, list[int]]], several: bool, kind: str,
                       content: dict[str, Any] | None = None, payload: Any = None, *,
                       has_payload: bool | None = None, timeout: float | None = None,
                       results: dict[tuple[str, int], Any] | None = None,
                       ) -> list[tuple[Group, int, Message]]:
        count = sum(len(r) for _, r in targets)

        async def one(g: Group, rs: list[int]) -> list[tuple[Group, int, Message]]:
            labels = None if count <= 1 else {
                r: (f"{g.name} {r}" if several else f"rank {r}") for r in rs}
            printer = _print_output(labels)

            def hook(rank: int, msg: Message) -> None:
                if (results is not None and msg.kind == "display"
                        and msg.content.get("metadata", {}).get("kremote_result")):
                    results[(g.name, rank)] = msg.content.get("data") or {}
                else:
                    printer(rank, msg)

            replies = await self._request(g, kind, content, payload, ranks=rs,
                                          has_payload=has_payload, on_output=hook,
                                          timeout=timeout)
            return [(g, r, replies[r]) for r in sorted(replies)]

        if len(targets) == 1:
            return await one(*targets[0])
        done = await asyncio.gather(*(one(g, rs) for g, rs in targets))
        return [x for part in done for x in part]

    async def run(self, code: str, *, group: str | None = None, ranks: list[int] | None = None,
                  timeout: float | None = None) -> list[dict[str, Any]]:
        """Run ``code`` on the agents; raise the first remote error, like a cell would.

        Returns each agent's last-expression display bundle (``{}`` when none).
        """
        results: dict[tuple[str, int], Any] = {}
        replies = await self._each(group, ranks, "execute",
                                   {"code": code, "env": {}, "execution_count": None},
                                   timeout=timeout, results=results)
        for _, rank, msg in replies:
            if msg.content.get("status") == "error":
                raise RemoteError.from_reply(rank, msg.content)
        return [results.get((g.name, r), {}) for g, r, _ in replies]

    async def call(self, fn: Callable[..., Any], *args: Any, group: str | None = None,
                   ranks: list[int] | None = None, **kwargs: Any) -> list[Any]:
        """``fn(*args, **kwargs)`` on each agent (shipped with cloudpickle, its module as a
        file when it comes from the notebook's folder); results in rank order."""
        return await self._call(fn, args, kwargs, group, ranks)

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any], group: str | None,
                    ranks: list[int] | None) -> list[Any]:
        fn = getattr(fn, "fn", fn) if isinstance(fn, RemoteFunction) else fn
        for g, _ in self.groups.targets(group, ranks):
            await self._ship_module(g, fn)
        replies = await self._each(group, ranks, "call", payload=(fn, args, kwargs))
        return [_value_or_raise(r, m) for _, r, m in replies]

    async def push(self, namespace: dict[str, Any] | None = None, *,
                   group: str | None = None, ranks: list[int] | None = None,
                   **values: Any) -> None:
        for _, r, m in await self._each(group, ranks, "push",
                                        payload={**(namespace or {}), **values}):
            _value_or_raise(r, m)

    async def pull(self, *names: str, group: str | None = None,
                   ranks: list[int] | None = None) -> Any:
        """One name: its value per agent (a list); several: a list of dicts per agent."""
        replies = await self._each(group, ranks, "pull", {"names": list(names)})
        values = [_value_or_raise(r, m) for _, r, m in replies]
        if len(names) == 1:
            return [v[names[0]] for v in values]
        return values

    # -- files ----------------------------------------------------------------------------
    async def send_files(self, *paths: str, group: str | None = None) -> int:
        sent = 0
        for g, _ in self.groups.targets(group, None):
            sent += await self._ship(g, g.cluster.files.explicit(list(paths)))
        return sent

    async def _ship_files(self, g: Group) -> None:
        """The cluster's files and the group spec's own, to a group that just started."""
        paths = self.files + [p for p in self._group_files.get(g.name, []) if p not in self.files]
        if paths:
            await self._ship(g, g.cluster.files.explicit(paths))

    async def _ship(self, g: Group, entries: list[Any]) -> int:
        """Make ``entries`` present on the group's agents; returns the bytes sent."""
        from .session import _read_blob

        if not entries:
            return 0
        wire = [e.to_wire() for e in entries]
        by_sha = {e.sha256: e for e in entries}
        sent = 0
        for _, rank, msg in await self._each_of([(g, g.ranks)], False, "files_check",
                                                {"files": wire}):
            _value_or_raise(rank, msg)
            missing = msg.content.get("missing") or []
            if missing:
                blobs = {sha: _read_blob(g.cluster.files.root / by_sha[sha].path)
                         for sha in missing}
                for _, r, m in await self._each_of([(g, [rank])], False, "files_put",
                                                   {"files": wire}, blobs):
                    _value_or_raise(r, m)
                sent += sum(memoryview(b).nbytes for b in blobs.values())
        return sent

    async def _ship_module(self, g: Group, fn: Any) -> None:
        entries = module_files(g.cluster.files, fn)
        if entries and g.shipped.get(fn.__module__) != entries:
            await self._ship(g, entries)
            g.shipped[fn.__module__] = entries

    # -- remote functions and map ---------------------------------------------------------
    def remote(self, fn: Callable[..., Any]) -> RemoteFunction:
        """``fn`` bound to this cluster: ``await cluster.remote(fn).remote(x)``."""
        return RemoteFunction(fn).on(self)

    async def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
                  group: str | None = None, chunksize: int | None = None,
                  ordered: bool = True, retries: int = 2,
                  progress: bool | None = None) -> list[Any]:
        """``[fn(x) for x in iterable]``, load-balanced over the agents (of ``group``).

        An input that raises is retried on another agent up to ``retries`` times, then
        raised naming the input; inputs of an agent that dies run on the others; late
        chunks are re-run on idle agents. ``ordered=False``: in the order they finish.
        ``progress``: a live line in the notebook (default: when in a notebook).
        """
        out: list[tuple[int, Any]] = []
        async for pair in self._map_pairs(fn, iterable, group, chunksize, retries, progress):
            out.append(pair)
        if ordered:
            out.sort(key=lambda p: p[0])
        return [v for _, v in out]

    async def map_iter(self, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
                       group: str | None = None, chunksize: int | None = None,
                       ordered: bool = False, retries: int = 2,
                       progress: bool | None = None) -> AsyncIterator[Any]:
        """Like :meth:`map`, yielding results as they come (``ordered=True``: each as soon
        as those before it are in)."""
        if not ordered:
            async for _, v in self._map_pairs(fn, iterable, group, chunksize, retries,
                                              progress):
                yield v
            return
        held: dict[int, Any] = {}
        nxt = 0
        async for i, v in self._map_pairs(fn, iterable, group, chunksize, retries, progress):
            held[i] = v
            while nxt in held:
                yield held.pop(nxt)
                nxt += 1

    async def _map_pairs(self, fn: Callable[[Any], Any], iterable: Iterable[Any],
                         group: str | None, chunksize: int | None, retries: int,
                         progress: bool | None) -> AsyncIterator[tuple[int, Any]]:
        fn = getattr(fn, "fn", fn) if isinstance(fn, RemoteFunction) else fn
        items = iterable if isinstance(iterable, (list, tuple, range)) else list(iterable)
        targets = self.groups.targets(group, None)
        several = len(self.groups) > 1
        workers = []
        for g, ranks in targets:
            g.cluster.check_usable()
            await self._ship_module(g, fn)
            hook = _print_output({r: f"{g.name} {r}" if several else f"rank {r}"
                                  for r in ranks})
            for r in ranks:
                workers.append(Worker(f"{g.name} {r}" if several else f"rank {r}",
                                      _caller(g, r, hook),
                                      lambda g=g, r=r: g.client.interrupt_nowait([r])))
        counts = TaskCounts(self.name, getattr(fn, "__qualname__", "map"), len(items))
        RECENT.append(counts)
        report_tasks()  # the panel shows the map's counts (throttled, in the background)
        show = notebook_progress() if progress is None or progress else None

        def on_progress(c: TaskCounts) -> None:
            if show is not None:
                show(c)
            report_tasks()

        mapper = Mapper(fn, items, workers, counts, chunksize=chunksize, retries=retries,
                        on_progress=on_progress)
        async for pair in mapper.results():
            yield pair


def _caller(g: Group, rank: int, hook: Any) -> Callable[[Any], Any]:
    request = g.client.request
    ranks = [rank]

    async def call(payload: Any) -> Message:
        return (await request("call", payload=payload, ranks=ranks, on_output=hook))[rank]

    return call


def _value_or_raise(rank: int, msg: Message) -> Any:
    if msg.content.get("status") == "error":
        raise RemoteError.from_reply(rank, msg.content)
    return msg.payload


#: the cluster started last: where ``await fn.remote(...)`` runs without ``.on(cluster)``
_CURRENT: list[LocalCluster | None] = [None]


def current_cluster() -> LocalCluster:
    cluster = _CURRENT[0]
    if cluster is None:
        raise RuntimeError("no running cluster: start one (`async with LocalCluster() as c`) "
                           "or say which with `fn.on(cluster)`")
    return cluster


class KubeCluster(LocalCluster):
    """A cluster of agent pods on Kubernetes, with the same API as :class:`LocalCluster`.

    Example::

        spec = PodSpec(image="myorg/train:1.4", cpu="2", mem="8Gi", gpu=1, count=2,
                       templates=["gpu"], files=["model.py"])
        async with KubeCluster(name="train", spec=spec) as c:
            await c.run("import model; model.fit()")

    Several groups (one Job each, one TTL)::

        KubeCluster(name="swimmy", groups={"preprocess": PodSpec(cpu="2", count=2),
                                           "train": PodSpec(gpu=1, count=2)})
    """

    backend = "kubernetes"

    def __init__(self, name: str = "default", spec: PodSpec | None = None, *,
                 root: str | Path = ".", groups: dict[str, PodSpec] | None = None) -> None:
        spec = spec or PodSpec()
        super().__init__(spec.count, name=name, ttl=spec.ttl, env=spec.env, files=spec.files,
                         root=root, connect_timeout=spec.connect_timeout)
        if groups:
            self._specs = {check_group_name(g): self._options(s) for g, s in groups.items()}
            self._group_files = {g: list(s.files) for g, s in groups.items()}
        else:
            self._specs = {DEFAULT_GROUP: self._options(spec)}
