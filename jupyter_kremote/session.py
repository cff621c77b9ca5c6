"""Per-kernel state: this notebook's clusters, their agent connections and file cache.

A :class:`Cluster` is one started set of agents with a synchronous API (``run``,
``call``, ``push``, ``pull``, ``send_files``, ``extend``, ``shutdown``); the magics and
the public :class:`~jupyter_kremote.LocalCluster` both sit on it. A cluster that ended
(TTL, an agent that died, shutdown) refuses further work with a message that says how
to go on.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backends import Backend, ClusterHandle, StartRequest, get_backend
from .client import ClusterClient, InputHook, Message, OutputHook
from .errors import AgentDied, ClusterEnded, ClusterTimeout, RemoteError, TransferError
from .files import FileCollector, FileEntry
from .options import ClusterOptions
from .protocol import TRACKED_PACKAGES, runtime_info

#: how an agent ends *because* another failed; the other one names the cause
_CONSEQUENCES = ("code 0", "pod is gone", "the Job failed")


class Cluster:
    """One running cluster of agents."""

    def __init__(self, name: str, options: ClusterOptions, root: str | Path = ".",
                 progress: Callable[[str], None] | None = None, notebook: str = "", *,
                 backend: Backend | None = None, handle: ClusterHandle | None = None,
                 runtime: dict[str, Any] | None = None, check_drift: bool = True,
                 cancelled: threading.Event | None = None,
                 keep_queued: threading.Event | None = None) -> None:
        """Start a cluster, or with ``handle`` attach to one that runs already (adoption).

        ``runtime`` is what the agents are compared with (a kernel's ``runtime_info()`` plus
        its ``imports``; by default this process's). Attaching never shuts the cluster down:
        busy agents keep their cell (their versions were compared when it started), and a
        failure only lets go of it.
        """
        self.name = name
        self.options = options
        self.backend = backend or get_backend(options.backend)
        self.files = FileCollector(root)
        self.handle: ClusterHandle = handle or self.backend.start(StartRequest(
            name=name, spec=options.to_spec(), notebook=notebook, progress=progress,
            cancelled=cancelled, keep_queued=keep_queued))
        self.client = ClusterClient(self.handle.key, self.handle.endpoints, self._liveness)
        self.ended: str | None = None  # why the cluster can no longer run work
        self.last_activity = time.time()
        self._lock = threading.RLock()
        self.warnings: list[str] = []
        #: the agents' comms mirrored in the kernel (relay.CommRelay), made on first use
        self.comms: Any = None
        try:
            if check_drift and self.options.backend != "local":  # local: the kernel's Python
                busy = handle is not None and self._busy()
                if busy:
                    self.warnings.append(f"agents busy ({busy}): versions not compared again")
                else:
                    self._check_drift(runtime)
            if handle is None and self.options.backend != "local":
                rank0 = self.handle.endpoints[0].peer_host  # torch.distributed: rank 0 is master
                self.client.request("env", {"env": {"MASTER_ADDR": rank0,
                                                    "MASTER_PORT": "29500"}}, timeout=30)
        except BaseException:
            if handle is None:
                self.shutdown()
            else:
                self.detach()  # someone else's running cluster: never shut it down here
            raise

    def _busy(self) -> str:
        """The ranks that are running a cell or do not answer, as text ("" if none)."""
        pings = self.client.control("ping", timeout=2.0)
        return ", ".join(f"rank {r}" for r in self.ranks
                         if r not in pings or pings[r].get("busy"))

    def _check_drift(self, runtime: dict[str, Any] | None = None) -> None:
        """Same Python major.minor as the kernel (cloudpickle needs it); warn on packages."""
        here = runtime or runtime_info()
        # one round trip: the agents also import what this kernel has imported, to compare
        names = list(here.get("imports") or []) if runtime else \
            [n for n in TRACKED_PACKAGES if n in sys.modules]
        replies = self.client.request("info", {"imports": names}, timeout=60)
        for rank, msg in sorted(replies.items()):
            there = msg.content
            if there.get("python", "").rsplit(".", 1)[0] != here["python"].rsplit(".", 1)[0]:
                raise ClusterEnded(
                    f"rank {rank} runs Python {there.get('python')} but this kernel runs "
                    f"Python {here['python']}; use an image with Python "
                    f"{here['python'].rsplit('.', 1)[0]} (--image), since objects travel "
                    "pickled")
        theirs = replies[min(replies)].content.get("packages", {})
        for name in names:
            mine, other = (here.get("packages") or {}).get(name), theirs.get(name)
            if other and mine and other != mine:
                self.warnings.append(
                    f"{name} {other} on the agents, {mine} in this kernel: objects may not "
                    f"unpickle alike; pin {name}=={mine} in the image or install it there")

    # -- state --------------------------------------------------------------------------
    @property
    def ranks(self) -> list[int]:
        return self.client.ranks

    @property
    def deadline(self) -> float:
        return self.handle.deadline

    def _liveness(self, rank: int) -> str | None:
        return self.backend.liveness(self.handle, rank)

    def check_usable(self, rejoin: bool = True) -> None:
        """Raise ClusterEnded if the TTL ran out or an agent is gone. A cluster Kueue
        requeued first waits to be admitted again, then carries on with fresh agents;
        ``rejoin=False`` (the Jupyter server's monitor, which waits elsewhere) raises."""
        if self.ended is None:
            # a backend that shares the cluster (the Jupyter server) knows why it ended
            cluster_ended = getattr(self.backend, "ended", None)
            why = cluster_ended(self.handle) if cluster_ended else None
            if why:
                self.ended = why
            elif time.time() >= self.deadline:
                self.ended = "its TTL ran out"
            else:
                gone = [(r, why) for r in self.ranks if (why := self._liveness(r)) is not None]
                # name the cause: a rank that failed, not one stopped because of it (code 0)
                gone.sort(key=lambda rw: any(t in rw[1] for t in _CONSEQUENCES))
                if gone:
                    self.ended = f"agent rank {gone[0][0]} {gone[0][1]}"
        # evicted while a cell ran, or while idle (found just now): not on a plain cell's path
        if rejoin and self.ended is not None and self._requeued():
            self._rejoin()
        if self.ended is not None:
            raise ClusterEnded(
                f"cluster {self.name!r} ended: {self.ended}. Start a fresh one with "
                f"`%remote restart{'' if self.name == 'default' else ' --name ' + self.name}` "
                "(variables on the agents are lost)")

    def _requeued(self) -> bool:
        """Whether Kueue evicted the cluster and it waits in the queue again."""
        requeued = getattr(self.backend, "requeued", None)
        return requeued is not None and requeued(self.handle)

    def _rejoin(self) -> None:
        """Kueue evicted the cluster and requeued it: wait for its fresh agents (the same
        keys), saying where it stands on stderr, as the start-up table would."""
        def say(line: str) -> None:
            print(f"[kremote] cluster {self.name!r}: {line}", file=sys.stderr, flush=True)

        say(f"{self.ended}")
        self.rejoin(say)

    def rejoin(self, progress: Callable[[str], None],
               cancelled: threading.Event | None = None) -> None:
        """Wait until Kueue admits the requeued cluster again and its fresh agents answer,
        then talk to those (the Jupyter server does this for the clusters it holds).
        ``cancelled`` (set by a shutdown) gives up the wait."""
        extra = {"cancelled": cancelled} if cancelled is not None else {}
        self.backend.rejoin(self.handle, progress, **extra)  # type: ignore[attr-defined]
        self.client.close()
        self.client = ClusterClient(self.handle.key, self.handle.endpoints, self._liveness)
        self.ended = None
        rank0 = self.handle.endpoints[0].peer_host
        self.client.request("env", {"env": {"MASTER_ADDR": rank0, "MASTER_PORT": "29500"}},
                            timeout=30)

    def _request(self, kind: str, content: dict[str, Any] | None = None, payload: Any = None,
                 *, ranks: list[int] | None = None, has_payload: bool | None = None,
                 on_output: OutputHook | None = None,
                 timeout: float | None = None,
                 on_input: InputHook | None = None) -> dict[int, Message]:
        with self._lock:
            self.check_usable()
            targets = self._targets(ranks)
            self.last_activity = time.time()
            try:
                return self.client.request(kind, content, payload, ranks=targets,
                                           has_payload=has_payload, on_output=on_output,
                                           timeout=timeout, on_input=on_input)
            except AgentDied as exc:
                self.ended = str(exc).replace(" while running the request", "")
                if self._requeued():
                    raise AgentDied(str(exc)) from None  # it says what comes next
                raise AgentDied(
                    f"{exc}; start a fresh cluster with `%remote restart` "
                    "(`%remote logs` shows what the agent printed)") from None

    def _targets(self, ranks: list[int] | None) -> list[int]:
        if ranks is None:
            return self.ranks
        bad = [r for r in ranks if r not in self.ranks]
        if bad:
            raise ValueError(f"no rank {bad[0]} in cluster {self.name!r} "
                             f"(ranks 0-{len(self.ranks) - 1})")
        return list(ranks)

    # -- work -----------------------------------------------------------------------------
    def run(self, code: str, *, ranks: list[int] | None = None,
            on_output: OutputHook | None = None, timeout: float | None = None,
            env: dict[str, str] | None = None,
            execution_count: int | None = None,
            on_input: InputHook | None = None,
            parent_msg_id: str = "") -> dict[int, dict[str, Any]]:
        """Run a cell; return each rank's reply content (errors returned, not raised).

        ``execution_count`` numbers the remote cell like the notebook's (``Cell In[7]``);
        ``on_input`` answers the cell's ``input()`` (else it raises StdinNotImplementedError);
        ``parent_msg_id`` is the notebook message being run (ipywidgets' Output widget).
        """
        content = {"code": code, "env": env or {}, "execution_count": execution_count,
                   "parent_msg_id": parent_msg_id}
        replies = self._request("execute", content, ranks=ranks,
                                on_output=on_output, timeout=timeout, on_input=on_input)
        return {r: m.content for r, m in sorted(replies.items())}

    def comm(self, rank: int, content: dict[str, Any], buffers: list[bytes] | None = None, *,
             on_output: OutputHook | None = None,
             on_input: InputHook | None = None) -> dict[str, Any]:
        """Deliver a frontend comm message to the rank whose comm it is; its reply."""
        replies = self._request("comm", content, buffers or None, ranks=[rank],
                                on_output=on_output, on_input=on_input)
        return replies[rank].content

    def call(self, fn: Callable[..., Any], *args: Any, ranks: list[int] | None = None,
             on_output: OutputHook | None = None, **kwargs: Any) -> list[Any]:
        """Call ``fn(*args, **kwargs)`` on each agent; results in rank order."""
        try:
            replies = self._request("call", payload=(fn, args, kwargs), ranks=ranks,
                                    on_output=on_output)
        except TransferError as exc:
            raise TransferError(f"cannot send the call of {_name_of(fn)} and its arguments: "
                                f"{exc}") from None
        return [_value_or_raise(r, m) for r, m in sorted(replies.items())]

    def push(self, namespace: dict[str, Any], *, ranks: list[int] | None = None) -> None:
        try:
            replies = self._request("push", payload=dict(namespace), ranks=ranks)
        except TransferError as exc:
            raise TransferError(f"cannot push {_culprits(namespace)}: {exc}") from None
        for r, m in sorted(replies.items()):
            if m.content.get("unloadable"):
                raise TransferError(f"cannot push {_culprits(namespace, m.content['evalue'])}: "
                                    f"{m.content['evalue']}; ship the module with --files or "
                                    "install it where the agents run") from None
            _value_or_raise(r, m)

    def pull(self, names: list[str], *, ranks: list[int] | None = None) -> dict[int, dict]:
        """Each rank's values of ``names`` (NameError naming the rank if one is missing)."""
        replies = self._request("pull", {"names": list(names)}, ranks=ranks)
        return {r: _value_or_raise(r, m) for r, m in sorted(replies.items())}

    def send_files(self, entries: list[FileEntry], *, ranks: list[int] | None = None) -> int:
        """Make ``entries`` present on the agents; returns the number of bytes sent."""
        if not entries:
            return 0
        wire = [e.to_wire() for e in entries]
        replies = self._request("files_check", {"files": wire}, ranks=ranks)
        by_sha = {e.sha256: e for e in entries}
        sent = 0
        for rank, msg in sorted(replies.items()):
            _value_or_raise(rank, msg)
            missing = msg.content.get("missing") or []
            if not missing:
                continue
            blobs = {sha: _read_blob(self.files.root / by_sha[sha].path) for sha in missing}
            self._request("files_put", {"files": wire}, blobs, ranks=[rank])
            sent += sum(memoryview(b).nbytes for b in blobs.values())
        return sent

    # -- lifecycle -----------------------------------------------------------------------------
    def extend(self, seconds: float) -> float:
        """Move the TTL deadline ``seconds`` later; returns the new deadline."""
        self.check_usable()
        deadline = max(self.handle.deadline, time.time()) + seconds
        self.backend.extend(self.handle, deadline)
        answers = self.client.control("extend", {"deadline": deadline})
        if len(answers) < len(self.ranks):
            raise ClusterEnded(f"cluster {self.name!r}: not every agent answered the extend")
        self.handle.deadline = deadline
        return deadline

    def events(self, n: int = 50) -> list[str]:
        return self.backend.events(self.handle, n)

    def follow_logs(self, rank: int, write: Callable[[str], None],
                    stop: threading.Event | None = None) -> None:
        """Stream rank's log to ``write`` until the agent ends or Ctrl-C."""
        self._targets([rank])
        self.backend.follow_logs(self.handle, rank, write, stop)

    def status(self, timeout: float = 1.0) -> list[dict[str, Any]]:
        pings = self.client.control("ping", timeout=timeout) if self.ended is None else {}
        rows = []
        for r in self.ranks:
            why = self._liveness(r)
            ping = pings.get(r, {})
            state = (why if why else "busy" if ping.get("busy") else
                     "idle" if ping else "not answering")
            rows.append({"rank": r, "state": state, **self.backend.describe(self.handle, r),
                         "dropped": ping.get("dropped", 0),
                         "last_request": ping.get("last_request")})
        return rows

    def telemetry(self, timeout: float = 1.0) -> dict[int, dict[str, Any]]:
        """Each answering rank's telemetry sample (docs/api.md), asked on the control
        socket so that busy agents answer too; ranks that do not answer are left out."""
        if self.ended is not None:
            return {}
        answers = self.client.control("telemetry", timeout=timeout)
        return {r: a["sample"] for r, a in sorted(answers.items())
                if a.get("status") == "ok" and isinstance(a.get("sample"), dict)}

    def logs(self, rank: int, tail: int = 200) -> str:
        self._targets([rank])
        return self.backend.logs(self.handle, rank, tail)

    @property
    def shared(self) -> bool:
        """True when the cluster outlives this process (held by the Jupyter server)."""
        return bool(getattr(self.backend, "keeps_clusters", False))

    def detach(self) -> None:
        """Close this process's connections and leave the agents running."""
        self.client.close()

    def shutdown(self) -> None:
        if self.comms is not None:
            self.comms.close_all()
        if self.ended is None:
            self.client.control("shutdown", timeout=0.5)
            self.ended = "it was shut down"
        self.client.close()
        self.backend.stop(self.handle)


def _value_or_raise(rank: int, msg: Message) -> Any:
    if msg.content.get("status") == "error":
        raise RemoteError.from_reply(rank, msg.content)
    if msg.payload_error:
        raise TransferError(f"rank {rank} sent a value this kernel cannot load: "
                            f"{msg.payload_error}")
    return msg.payload


def _culprits(namespace: dict[str, Any], why: str = "") -> str:
    """The names among ``namespace`` whose values do not pickle, or name the module ``why``
    says is missing (looked for only after a failure, so the normal path pays nothing)."""
    import re

    from .protocol import dumps

    module = re.search(r"No module named '([^']+)'", why)
    bad = []
    for name, value in namespace.items():
        try:
            data, _ = dumps(value)
        except Exception:  # noqa: BLE001 - looking for the culprit
            bad.append(name)
            continue
        if module and module.group(1).encode() in data:
            bad.append(name)
    return ", ".join(map(repr, bad or list(namespace)))


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _read_blob(path: Path) -> bytes:
    import pickle

    return pickle.PickleBuffer(path.read_bytes())  # type: ignore[return-value]


class Session:
    """The clusters of one kernel, by name.

    Inside a Jupyter server with the kremote extension the server holds the clusters (they
    outlive a kernel restart, and a new kernel reattaches to them); otherwise they belong to
    this process and are shut down when it exits.
    """

    def __init__(self, root: str | Path | None = None, notebook: str = "",
                 server: Any = "auto") -> None:
        self.root = Path(root or Path.cwd())
        if server == "auto":
            from .server_link import ServerLink

            server = ServerLink.discover()
        #: the Jupyter server's extension holding this kernel's clusters, or None
        self.server = server
        #: the notebook's path, for labels; JupyterLab's kernels get it in JPY_SESSION_NAME
        from .server_link import notebook_path

        self.notebook = notebook or notebook_path(server, self.root)
        self.clusters: dict[str, Cluster] = {}
        self.specs: dict[str, ClusterOptions] = {}
        #: why this notebook's clusters that the server still lists as ended ended (e.g. "its
        #: owner's server stopped"), by name: the next cell that starts one says so
        self.ended: dict[str, str] = {}
        atexit.register(self.shutdown_all)
        if self.server is not None:
            self.reattach()

    def reattach(self) -> list[str]:
        """Connect to the server's running clusters of this notebook (after a restart)."""
        from .backends.server import ServerBackend

        names = []
        for model in self.server.request("GET", "clusters")["clusters"]:
            name = model["name"]
            if model["notebook"] == self.notebook and model["state"] == "ended" \
                    and model.get("ended"):
                self.ended[name] = model["ended"]
            if (model["notebook"] != self.notebook or model["state"] != "running"
                    or name in self.clusters):
                continue
            options = ClusterOptions(count=model["count"], backend=model["backend"],
                                     ttl=model["ttl"], gpu=model["gpu"],
                                     templates=list(model.get("templates") or []),
                                     namespace=model.get("namespace"),
                                     group=model.get("group") or "main")
            backend = ServerBackend(self.server, options.backend)
            try:
                handle = backend.attach(model)
                self.clusters[name] = Cluster(name, options, self.root, notebook=self.notebook,
                                              backend=backend, handle=handle)
            except Exception:  # noqa: BLE001, S112 - it ended meanwhile: a cell starts anew
                continue
            self.specs[name] = options
            names.append(name)
        return names

    def get(self, name: str) -> Cluster:
        if name not in self.clusters:
            raise KeyError(f"no cluster named {name!r}; a `%%remote"
                           f"{'' if name == 'default' else ' --name ' + name}` cell starts it")
        return self.clusters[name]

    def ensure(self, name: str, options: ClusterOptions,
               progress: Callable[[str], None] | None = None) -> Cluster:
        cluster = self.clusters.get(name)
        if cluster is None:
            backend = None
            if self.server is not None:
                from .backends.server import ServerBackend

                backend = ServerBackend(self.server, options.backend)
            cluster = Cluster(name, options, self.root, progress=progress,
                              notebook=self.notebook, backend=backend)
            self.clusters[name] = cluster
            self.specs[name] = options
        return cluster

    def restart(self, name: str, options: ClusterOptions | None = None) -> Cluster:
        old = self.clusters.pop(name, None)
        if old is not None:
            old.shutdown()
            options = options or old.options
        return self.ensure(name, options or self.specs.get(name) or ClusterOptions())

    def shutdown(self, name: str) -> None:
        self.get(name)
        self.clusters.pop(name).shutdown()

    def shutdown_all(self) -> None:
        for name in list(self.clusters):
            try:
                cluster = self.clusters.pop(name)
                # the server's clusters outlive a kernel restart: only let go of them
                cluster.detach() if cluster.shared else cluster.shutdown()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass


__all__ = ["Cluster", "ClusterEnded", "ClusterOptions", "ClusterTimeout", "Session"]
