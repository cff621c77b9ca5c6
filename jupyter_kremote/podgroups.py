"""Named groups of agents in one cluster, each from its own spec (Swimmy's preprocess +
train), and what every agent learns about the others.

Each group is started as one session-level :class:`~jupyter_kremote.session.Cluster`
(on Kubernetes: one Job, one Secret), named after the cluster (``swimmy-train``); the
default group of a one-group cluster keeps the cluster's own name. Groups start
together, all or nothing, and share one TTL. Once a group starts, every agent of every
group gets, through the ``env`` request:

- ``KREMOTE_GROUP`` (its own group), ``KREMOTE_GROUPS`` (all, comma-separated);
- ``KREMOTE_GROUP_<NAME>_ADDRS``: each rank's channel address ``host:port``, in rank order;
- ``KREMOTE_CHANNEL_KEY``: the key that signs channel messages between agents (not the
  cluster key: user code on the agents can read it, and must not be able to drive them).

:mod:`jupyter_kremote.channels` reads these on the agents (``kremote.peers("train")``,
``Inbox`` and ``Outbox``).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .aio_client import AsyncClusterClient
from .protocol import new_key
from .session import Cluster, ClusterOptions

DEFAULT_GROUP = "main"
#: on pods (each with its own IP) the channel listens on this port
CHANNEL_PORT = 5557
_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$")


def check_group_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"group name {name!r}: use 1-20 lowercase letters, digits or '-', "
                         "starting with a letter (it names the group's Job): e.g. train")
    return name


def env_name(group: str) -> str:
    """``KREMOTE_GROUP_<NAME>_ADDRS`` for ``group`` (``-`` becomes ``_``)."""
    return f"KREMOTE_GROUP_{group.upper().replace('-', '_')}_ADDRS"


@dataclass(eq=False)
class Group:
    """One started group: its session cluster and its async client."""

    name: str
    cluster: Cluster
    client: AsyncClusterClient
    addrs: list[str] = field(default_factory=list)  # channel address per rank
    shipped: dict[str, Any] = field(default_factory=dict)  # module -> files sent

    @property
    def ranks(self) -> list[int]:
        return self.cluster.ranks


class GroupSet:
    """The groups of one API cluster, in the order they started."""

    def __init__(self, name: str, root: str | Path) -> None:
        self.name = name
        self.root = root
        self.channel_key = new_key().decode()
        self._groups: dict[str, Group] = {}
        self.deadline: float | None = None  # one TTL for every group

    def __iter__(self) -> Iterator[Group]:
        return iter(list(self._groups.values()))

    def __len__(self) -> int:
        return len(self._groups)

    def names(self) -> list[str]:
        return list(self._groups)

    def get(self, name: str | None) -> Group:
        if name is None:
            if len(self._groups) == 1:
                return next(iter(self._groups.values()))
            raise ValueError(f"cluster {self.name!r} has groups {', '.join(self._groups)}; "
                             "say which with group=...")
        if name not in self._groups:
            raise ValueError(f"no group {name!r} in cluster {self.name!r} (groups: "
                             f"{', '.join(self._groups)}); add it with add_group({name!r}, ...)")
        return self._groups[name]

    def targets(self, group: str | None, ranks: list[int] | None) -> list[tuple[Group, list[int]]]:
        """Where a request goes: one group (or every group when ``group`` is None)."""
        if group is None and len(self._groups) > 1:
            if ranks is not None:
                raise ValueError("ranks are numbered per group: give group=... with ranks")
            return [(g, g.ranks) for g in self._groups.values()]
        g = self.get(group)
        return [(g, g.cluster._targets(ranks))]

    def _cluster_name(self, group: str) -> str:
        return self.name if group == DEFAULT_GROUP else f"{self.name}-{group}"

    # -- starting -------------------------------------------------------------------------
    async def start(self, specs: dict[str, ClusterOptions]) -> None:
        """Start every group at once; if one fails, stop the others and raise its error."""
        names = [check_group_name(n) for n in specs]
        for n in names:
            specs[n].group = n
        started = await asyncio.gather(
            *(asyncio.to_thread(Cluster, self._cluster_name(n), specs[n], self.root)
              for n in names), return_exceptions=True)
        errors = [s for s in started if isinstance(s, BaseException)]
        if errors:
            for s in started:
                if isinstance(s, Cluster):
                    await asyncio.to_thread(s.shutdown)
            raise errors[0]
        for n, c in zip(names, started, strict=True):
            self._adopt(n, c)  # type: ignore[arg-type]
        self.deadline = min(g.cluster.deadline for g in self)
        await self._announce()

    async def add(self, name: str, options: ClusterOptions) -> Group:
        if name in self._groups:
            raise ValueError(f"cluster {self.name!r} already has a group {name!r}")
        options.group = check_group_name(name)
        if self.deadline is not None:  # the cluster's TTL, not a fresh one
            options.ttl = max(self.deadline - time.time(), 1.0)
        cluster = await asyncio.to_thread(Cluster, self._cluster_name(name), options,
                                          self.root)
        g = self._adopt(name, cluster)
        try:
            await self._announce()
        except BaseException:
            self._groups.pop(name)
            g.client.close()
            await asyncio.to_thread(cluster.shutdown)
            raise
        return g

    def _adopt(self, name: str, cluster: Cluster) -> Group:
        h = cluster.handle
        client = AsyncClusterClient(h.key, h.endpoints, cluster._liveness)
        g = self._groups[name] = Group(name, cluster, client, channel_addrs(h.endpoints))
        return g

    async def _announce(self) -> None:
        """Tell every agent where every group's agents are."""
        shared = peers_env({g.name: g.addrs for g in self}, self.channel_key)
        for g in self:
            replies = await g.client.request(
                "env", {"env": {**shared, "KREMOTE_GROUP": g.name}}, timeout=60)
            _check_env(g.name, {r: m.content for r, m in replies.items()})

    # -- the end ----------------------------------------------------------------------------
    def extend(self, seconds: float) -> float:
        deadline = 0.0
        for g in self:
            deadline = max(deadline, g.cluster.extend(seconds))
        self.deadline = deadline
        return deadline

    def close_clients(self) -> None:
        """Close the async clients (on their event loop's thread, before shutdown)."""
        for g in self:
            g.client.close()

    def shutdown(self) -> None:
        errors = []
        for g in self:
            g.client.close()
            try:
                g.cluster.shutdown()
            except Exception as exc:  # noqa: BLE001 - stop the others first, then report
                errors.append(exc)
        self._groups.clear()
        if errors:
            raise errors[0]


def peers_env(addrs: dict[str, list[str]], key: str) -> dict[str, str]:
    """What every agent of a cluster of groups learns (its own KREMOTE_GROUP aside)."""
    return {"KREMOTE_GROUPS": ",".join(addrs), "KREMOTE_CHANNEL_KEY": key,
            **{env_name(g): ",".join(a) for g, a in addrs.items()}}


def _check_env(group: str, replies: dict[int, dict[str, Any]]) -> None:
    for r, content in replies.items():
        if content.get("status") != "ok":
            raise RuntimeError(f"group {group} rank {r} refused its peers' addresses: "
                               f"{content.get('evalue')}")


class GroupFamily:
    """The groups of a notebook's ``%%remote`` cluster: the cluster itself (group
    ``main``) and one session cluster per ``%remote group add`` (``NAME-GROUP``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = new_key().decode()
        self.members: dict[str, tuple[Cluster, list[str]]] = {}

    def cluster_name(self, group: str) -> str:
        return self.name if group == DEFAULT_GROUP else f"{self.name}-{group}"

    def add(self, group: str, cluster: Cluster) -> None:
        self.members[group] = (cluster, channel_addrs(cluster.handle.endpoints))
        self.announce()

    def announce(self) -> None:
        live = {g: m for g, m in self.members.items() if m[0].ended is None}
        shared = peers_env({g: addrs for g, (_, addrs) in live.items()}, self.key)
        for g, (cluster, _) in live.items():
            replies = cluster._request("env", {"env": {**shared, "KREMOTE_GROUP": g}},
                                       timeout=60)
            _check_env(g, {r: m.content for r, m in replies.items()})


def channel_addrs(endpoints: list[Any]) -> list[str]:
    """Each agent's channel address: pods listen on CHANNEL_PORT of their own IP; agents
    that share 127.0.0.1 (local processes) each get a free port of their own."""
    out = []
    for ep in endpoints:
        peer = ep.peer_host  # the pod IP, also when the kernel goes through port-forward
        host = f"[{peer}]" if ":" in peer else peer  # IPv6 pod IPs
        out.append(f"{host}:{_free_port() if peer == '127.0.0.1' else CHANNEL_PORT}")
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
