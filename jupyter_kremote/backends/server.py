"""The backend of a kernel whose clusters its Jupyter server holds (or, in hub mode, the
kremote service behind that server): the server starts and stops the agents; this kernel
only asks it, then talks to the agents itself over ZeroMQ with the key and endpoints it is
handed.
"""

from __future__ import annotations

import base64
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..client import Endpoint
from ..errors import ClusterEnded
from ..options import ClusterOptions
from ..protocol import TRACKED_PACKAGES, runtime_info
from ..server_link import ServerError, ServerLink
from .base import ClusterHandle, StartRequest

#: how long a cached view of a cluster is trusted before asking the server again (seconds)
FRESH_FOR = 1.0


#: how long a kernel waits for the server to start a cluster that may sit in a Kueue queue
#: without --queue-timeout (the stop button ends the wait sooner)
QUEUE_WAIT = 7 * 86400.0

#: how often a kernel asks the server where a starting Kubernetes cluster stands (seconds)
STAGE_POLL = 0.5


class ServerBackend:
    """A backend whose clusters the Jupyter server holds; this kernel only connects.

    The server starts and stops the agents (local processes or pods) and tells the kernel
    the key and endpoints; shutting the kernel down only lets go of them.
    """

    name = "server"
    keeps_clusters = True

    def __init__(self, link: ServerLink, backend: str) -> None:
        self.link = link
        self.inner = backend  # what the server starts: local or kubernetes
        self._ids: dict[int, str] = {}
        self._models: dict[int, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, request: StartRequest) -> ClusterHandle:
        spec = request.spec
        body: dict[str, Any] = {"name": request.name, "notebook": request.notebook,
                                "backend": self.inner}
        for f in fields(ClusterOptions):
            if f.name != "backend" and hasattr(spec, f.name):
                body[f.name] = getattr(spec, f.name)
        # the server compares the agents with this kernel's Python, not its own
        body["runtime"] = {**runtime_info(),
                           "imports": [n for n in TRACKED_PACKAGES if n in sys.modules]}
        if request.progress:
            request.progress(f"asking the Jupyter server for cluster {request.name!r}")
        timeout = spec.connect_timeout + 60
        if self.inner != "kubernetes":
            return self.attach(self.link.request("POST", "clusters", body, timeout=timeout))
        # it may wait in Kueue (the server's default queue too): no connect timeout runs
        # there, only --queue-timeout when given
        timeout += spec.queue_timeout if spec.queue_timeout is not None else QUEUE_WAIT
        return self.attach(self._start_watching(body, timeout, request))

    def _start_watching(self, body: dict[str, Any], timeout: float,
                        request: StartRequest) -> dict[str, Any]:
        """POST the start in a worker thread and, while the server starts the cluster, show
        the stage it reports (where the cluster waits in Kueue) as the cell's progress.

        The stop button (KeyboardInterrupt here) deletes the starting cluster, so that a
        queued Job does not stay in its queue after the cell gave up.
        """
        done: dict[str, Any] = {}
        finished = threading.Event()

        def post() -> None:
            try:
                done["model"] = self.link.request("POST", "clusters", body, timeout=timeout)
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
                done["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=post, name="kremote-start", daemon=True).start()
        shown = ""
        try:
            while not finished.wait(STAGE_POLL):
                model = self._starting(request)
                stage = (model or {}).get("stage") or ""
                if stage and stage != shown and request.progress:
                    request.progress(stage)
                    shown = stage
        except KeyboardInterrupt:
            model = self._starting(request)
            if model is not None:
                try:
                    self.link.request("DELETE", f"clusters/{model['id']}", timeout=30)
                except (ServerError, OSError):
                    pass  # the interrupt is what the user sees; the server's TTL ends it
            raise
        if "error" in done:
            raise done["error"]
        return done["model"]

    def _starting(self, request: StartRequest) -> dict[str, Any] | None:
        """The server's model of the cluster this kernel is starting, once it lists it (the
        listing filtered to this one cluster: no other cluster's model is built)."""
        try:
            listing = self.link.request("GET", "clusters", timeout=5, query={
                "name": request.name, "notebook": request.notebook})
        except (ServerError, OSError):
            return None
        for model in (listing or {}).get("clusters", []):
            if (model.get("name") == request.name and model.get("state") == "starting"
                    and model.get("notebook") == request.notebook):
                return model
        return None

    def attach(self, model: dict[str, Any]) -> ClusterHandle:
        """A handle on the server's running cluster ``model`` (key and endpoints fetched)."""
        conn = self.link.request("GET", f"clusters/{model['id']}/connection")
        endpoints = [Endpoint.from_json(e) for e in conn["endpoints"]]
        handle = ClusterHandle(name=model["name"], backend=self.name,
                               key=base64.b64decode(conn["key"]), endpoints=endpoints,
                               started=model["created"], deadline=conn["deadline"])
        with self._lock:
            self._ids[id(handle)] = model["id"]
            self._models[id(handle)] = (time.monotonic(), model)
        return handle

    def cluster_id(self, handle: ClusterHandle) -> str:
        return self._ids[id(handle)]

    def model(self, handle: ClusterHandle, max_age: float = FRESH_FOR) -> dict[str, Any] | None:
        """The server's view of the cluster (cached ``max_age`` s); None if it forgot it."""
        key = id(handle)
        with self._lock:
            cached = self._models.get(key)
        if cached and time.monotonic() - cached[0] < max_age:
            return cached[1]
        try:
            model = self.link.request("GET", f"clusters/{self._ids[key]}", timeout=5)
        except ServerError:
            model = None  # 404: shut down from the panel or aged out
        except OSError:
            return cached[1] if cached else {}  # the server is briefly away: assume no change
        with self._lock:
            self._models[key] = (time.monotonic(), model)  # type: ignore[assignment]
        if model and model.get("deadline"):
            handle.deadline = model["deadline"]  # extended from the panel, say
        return model

    def ended(self, handle: ClusterHandle) -> str | None:
        model = self.model(handle)
        if model is None:
            return "it was shut down from the Jupyter server"
        if model.get("state") == "ended":
            return model.get("ended") or "it ended"
        return None

    def liveness(self, handle: ClusterHandle, rank: int) -> str | None:
        why = self.ended(handle)  # the server ends whole clusters, not single ranks
        if why is None:  # or Kueue evicted it, and it waits in the queue again
            why = (self.model(handle) or {}).get("evicted")
        return f"ended: {why}" if why else None

    def requeued(self, handle: ClusterHandle) -> bool:
        """Whether Kueue evicted the server's cluster and it waits to be admitted again
        (``--on-preempt requeue``): :meth:`rejoin` then waits for its fresh agents."""
        model = self.model(handle, max_age=0.0) or {}
        return model.get("state") == "starting" and bool(model.get("evicted"))

    def rejoin(self, handle: ClusterHandle, progress: Callable[[str], None] | None = None
               ) -> None:
        """Wait while the server's requeued cluster waits in Kueue, saying where it stands,
        then take its fresh agents' endpoints (same keys). The stop button ends the wait;
        the cluster stays queued."""
        say = progress or (lambda line: None)
        said: set[str] = set()
        while True:
            model = self.model(handle, max_age=STAGE_POLL)
            if model is None:
                raise ClusterEnded("it was shut down from the Jupyter server")
            if model.get("state") == "ended":
                raise ClusterEnded(model.get("ended") or "it ended")
            if model.get("state") == "running":
                break
            stage = model.get("stage") or ""
            if stage and stage != model.get("evicted") and stage not in said:
                said.add(stage)
                say(stage)
            time.sleep(STAGE_POLL)
        # the admission is an event; its stage may have passed between two looks
        admitted = next((e["message"] for e in model.get("events") or []
                         if e.get("reason") == "Admitted"), None)
        if admitted and admitted not in said:
            say(admitted)
        conn = self.link.request("GET", f"clusters/{self._ids[id(handle)]}/connection")
        handle.endpoints = [Endpoint.from_json(e) for e in conn["endpoints"]]
        handle.key, handle.deadline = base64.b64decode(conn["key"]), conn["deadline"]

    def describe(self, handle: ClusterHandle, rank: int) -> dict[str, Any]:
        model = self.model(handle) or {}
        row: dict[str, Any] = next(
            (p for p in model.get("pods", []) if p.get("rank") == rank), {})
        keep = ("name", "where", "node", "phase", "pid", "workdir", "restarts")
        return {"where": "server", **{k: row[k] for k in keep if row.get(k) is not None}}

    def logs(self, handle: ClusterHandle, rank: int, tail: int = 200) -> str:
        reply = self.link.request("GET", f"clusters/{self._ids[id(handle)]}/logs",
                                  query={"rank": rank, "tail": tail})
        return reply["text"]

    def follow_logs(self, handle: ClusterHandle, rank: int, write: Callable[[str], None],
                    stop: threading.Event | None = None) -> None:
        self.link.stream(f"clusters/{self._ids[id(handle)]}/logs",
                         {"rank": rank, "tail": 200, "follow": 1}, write)

    def events(self, handle: ClusterHandle, n: int = 50) -> list[str]:
        reply = self.link.request("GET", f"clusters/{self._ids[id(handle)]}/events")
        events = list(reversed(reply["events"][:n]))  # oldest first, like the other backends
        return [f"{e['type']} {e['reason']} {e.get('object') or ''}: {e['message']}"
                for e in events]

    def extend(self, handle: ClusterHandle, deadline: float) -> None:
        try:
            model = self.link.request("POST", f"clusters/{self._ids[id(handle)]}/extend",
                                      {"deadline": deadline})
        except ServerError as exc:
            raise ClusterEnded(str(exc)) from None
        with self._lock:
            self._models[id(handle)] = (time.monotonic(), model)

    def stop(self, handle: ClusterHandle, grace: float = 2.0) -> None:
        cluster_id = self._ids.pop(id(handle), None)
        self._models.pop(id(handle), None)
        if cluster_id is not None:
            try:
                self.link.request("DELETE", f"clusters/{cluster_id}")
            except ServerError:
                pass  # already gone


__all__ = ["FRESH_FOR", "ServerBackend"]
