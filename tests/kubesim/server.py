"""`KubeSim`: start/stop the emulator and turn its knobs; `KubeSimThread` for sync tests."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from . import control
from .admission import Admission
from .api import Api
from .auth import Authenticator
from .config import KubeSimConfig
from .controllers import ControllerManager
from .disruption import TERMINATION_BY_KUBELET, Disruptions
from .events import EventRecorder
from .faults import ErrorInjector, ErrorRule
from .gc import Deleter
from .jobs import JobController
from .kubeconfig import kubeconfig_dict, write_kubeconfig
from .kubelet import Kubelet
from .kueue import Kueue
from .rbac import Authorizer, bootstrap_policy
from .resources import (
    CRDS,
    KUEUE_GROUPS,
    KUEUE_TYPES,
    NAMESPACES,
    NODES,
    SERVICEACCOUNTS,
    STORED,
    ResourceType,
    by_kind,
)
from .scheduler import NodeSpec, Scheduler
from .store import Store
from .tls import make_certificate
from .validation import prepare_create


class KubeSim:
    """A Kubernetes API emulator with a scheduler, Job controller, GC and local kubelet.

    Use `async with KubeSim(**settings) as sim:` (settings are KubeSimConfig fields), then
    `sim.url`, `sim.token`, `sim.write_kubeconfig(path)`. Knob methods must be called on the
    emulator's event loop (from the test's coroutine, or via KubeSimThread.call).
    """

    def __init__(self, config: KubeSimConfig | None = None, **settings: Any) -> None:
        self.config = dataclasses.replace(config or KubeSimConfig(), **settings)
        self.store = Store(self.config.history_limit)
        self.recorder = EventRecorder(self.store)
        self.injector = ErrorInjector()
        self.authenticator = Authenticator(self.store, self.config.token)
        self.url = ""
        self.https_url: str | None = None
        self.ca_pem: bytes | None = None
        self.root = ""
        self._runner: web.AppRunner | None = None
        self._manager: ControllerManager | None = None
        self.kubelet: Kubelet | None = None
        self.deleter: Deleter | None = None
        self.api: Api | None = None
        self.disruptions: Disruptions | None = None
        self.kueue: Kueue | None = None

    @property
    def token(self) -> str:
        return self.config.token

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> KubeSim:
        """Serve; a start that fails stops what it began (and removes its folder)."""
        try:
            return await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> KubeSim:
        cfg = self.config
        self.root = cfg.workdir or tempfile.mkdtemp(prefix="kubesim-")
        os.makedirs(self.root, exist_ok=True)
        self.store.add_listener(self._default_service_account)
        for rt, obj in bootstrap_policy():
            self.store.create(rt, prepare_create(rt, obj))
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(NAMESPACES, prepare_create(NAMESPACES, {"metadata": {"name": ns}}))
        for node in cfg.nodes:
            self.store.create(NODES, node.to_object(cfg.version))
        self.kubelet = Kubelet(self.store, self.recorder, cfg, self.root, cfg.host, 0)
        self.deleter = Deleter(self.store, self.kubelet.has_containers)
        scheduler = Scheduler(self.store, self.recorder, cfg.scheduler_retry,
                              cfg.scheduler_retry_max)
        admission = Admission(self.store)
        self.kueue = Kueue(self.store, self.recorder, cfg)
        admission.webhooks.append(self.kueue.webhook)
        jobs = JobController(self.store, self.recorder, self.deleter, admission)
        self.store.add_listener(self.kubelet.on_change)
        self._manager = ControllerManager(self.store, scheduler, jobs, self.deleter,
                                          cfg.controller_interval)
        self.disruptions = Disruptions(self.store, self.recorder, self.deleter)
        self._manager.disruptions = self.disruptions
        self._manager.kueue = self.kueue
        self.api = Api(self.store, self.deleter, self.kubelet, cfg, self.injector,
                       self.authenticator, Authorizer(self.store) if cfg.rbac else None,
                       admission, self.disruptions)
        self.api.kueue = self.kueue
        app = self.api.app()
        control.add_routes(app, self)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, shutdown_timeout=1.0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{cfg.host}:{port}"
        certificate = make_certificate(self.root, cfg.host) if cfg.tls else None
        if certificate is not None:
            context, self.ca_pem = certificate
            tls_site = web.TCPSite(self._runner, cfg.host, 0, ssl_context=context,
                                   shutdown_timeout=1.0)
            await tls_site.start()
            self.https_url = f"https://{cfg.host}:{self._runner.addresses[-1][1]}"
        self.api.server_address = f"{cfg.host}:{port}"
        self.kubelet.api_port = port
        self.set_kueue(cfg.kueue)
        self._manager.start()
        return self

    async def stop(self) -> None:
        """Stop controllers, kill every pod process, close streams and the server."""
        if self._manager is not None:
            await self._manager.stop()
        if self.kubelet is not None:
            await self.kubelet.shutdown()
        self.store.drop_watches()
        if self.api is not None:
            await self.api.close_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.root and not self.config.keep_workdirs and not self.config.workdir:
            shutil.rmtree(self.root, ignore_errors=True)

    async def __aenter__(self) -> KubeSim:  # noqa: PYI034 (Self needs Python 3.11)
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _endpoint(self, tls: bool | None) -> tuple[str, bytes | None]:
        if tls is None:
            tls = self.https_url is not None
        if tls and self.https_url is None:
            raise RuntimeError("no HTTPS listener (tls=False, or no openssl command)")
        return (self.https_url, self.ca_pem) if tls else (self.url, None)  # type: ignore

    def kubeconfig(self, namespace: str = "default", tls: bool | None = None,
                   token: str | None = None) -> dict[str, Any]:
        url, ca = self._endpoint(tls)
        return kubeconfig_dict(url, token or self.token, namespace, ca_pem=ca)

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default",
                         tls: bool | None = None, token: str | None = None) -> str:
        """A kubeconfig file: the HTTPS endpoint when there is one (kubectl needs it to send
        the token), else plain HTTP; `tls=False` forces the plain one. The token is the
        admin's unless given (e.g. one from `service_account_token`)."""
        url, ca = self._endpoint(tls)
        return write_kubeconfig(path, url, token or self.token, namespace, ca_pem=ca)

    # ------------------------------------------------------------------ objects and identities
    def _default_service_account(self, change: Any) -> None:
        """The ServiceAccount controller: every new namespace gets a `default` account."""
        if change.rt is NAMESPACES and change.type == "ADDED":
            name = change.obj["metadata"]["name"]
            if self.store.peek(SERVICEACCOUNTS, name, "default") is None:
                self.store.create(SERVICEACCOUNTS, prepare_create(SERVICEACCOUNTS, {
                    "metadata": {"name": "default", "namespace": name}}))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create any served object as the admin would (no admission): namespaces, Roles,
        bindings, ServiceAccounts, quotas... `obj` names its apiVersion and kind."""
        rt = by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        if rt is None:
            raise TypeError(f"kubesim does not serve {obj.get('apiVersion')} "
                            f"{obj.get('kind')}")
        return self.store.create(rt, prepare_create(rt, obj))

    def set_kueue(self, installed: bool = True) -> None:
        """Install (or remove) Kueue: its CRDs listed, kueue.x-k8s.io and its visibility API
        served, queued Jobs admitted (kueue.py)."""
        assert self.api is not None
        self.config.kueue = installed
        self.api.hidden = () if installed else KUEUE_GROUPS
        for rt in KUEUE_TYPES:
            name = f"{rt.plural}.{rt.group}"
            present = self.store.peek(CRDS, "", name) is not None
            if installed and not present:
                self.store.create(CRDS, prepare_create(CRDS, _crd(rt)))
            elif not installed and present:
                self.store.remove(CRDS, "", name)

    def service_account_token(self, namespace: str, name: str,
                              expiration_seconds: int = 3600) -> str:
        """A token for ServiceAccount `namespace/name`, as `kubectl create token` gets one."""
        answer = self.authenticator.issue(namespace, name, {"spec": {
            "expirationSeconds": expiration_seconds}})
        return str(answer["status"]["token"])

    # ------------------------------------------------------------------ knobs
    def set_unknown_images(self, images: list[str] | None = None,
                           prefixes: list[str] | None = None) -> None:
        """Images that fail to pull (exact names) and name prefixes that do."""
        if images is not None:
            self.config.unknown_images = set(images)
        if prefixes is not None:
            self.config.unknown_image_prefixes = list(prefixes)

    def add_unknown_image(self, image: str) -> None:
        self.config.unknown_images.add(image)

    def oom_kill(self, namespace: str, name: str, container: str | None = None) -> int:
        """SIGKILL a container; it terminates with reason OOMKilled, exit code 137."""
        assert self.kubelet is not None
        return self.kubelet.oom_kill(namespace, name, container)

    def evict(self, namespace: str, name: str, message: str | None = None) -> None:
        """Node-pressure eviction: DisruptionTarget (TerminationByKubelet), then phase Failed,
        reason Evicted, an Evicted event."""
        assert self.kubelet is not None and self.disruptions is not None
        self.disruptions.mark(namespace, name, TERMINATION_BY_KUBELET,
                              message or "The node was low on resource: memory.")
        self.kubelet.evict(namespace, name, message)

    def preempt(self, namespace: str, name: str, preemptor: str = "") -> None:
        """Scheduler preemption of a pod: DisruptionTarget (PreemptionByScheduler), a
        Preempted event, then a graceful delete (no status.reason)."""
        assert self.disruptions is not None
        self.disruptions.preempt(namespace, name, preemptor)

    def taint_node(self, node: str = "kubesim-node-0", key: str = "example.com/maintenance",
                   value: str = "", effect: str = "NoExecute") -> list[str]:
        """Taint a node. NoExecute deletes the pods that do not tolerate it (DisruptionTarget
        DeletionByTaintManager, a TaintManagerEviction event); returns them as ns/name.
        NoSchedule and NoExecute keep new pods off the node."""
        assert self.disruptions is not None
        return self.disruptions.taint(node, key, value, effect)

    def untaint_node(self, node: str = "kubesim-node-0", key: str = "example.com/maintenance"
                     ) -> None:
        assert self.disruptions is not None
        self.disruptions.untaint(node, key)

    def inject_error(self, code: int = 500, count: int = 1, verb: str | None = None,
                     method: str | None = None, path: str | None = None,
                     resource: str | None = None, retry_after: int = 1,
                     message: str | None = None) -> None:
        """The next `count` requests matching all given filters answer `code` as a Status."""
        self.injector.add(ErrorRule(code, count, verb, method, path, resource, retry_after,
                                    message))

    def clear_errors(self) -> None:
        self.injector.clear()

    def drop_watches(self) -> int:
        """End every open watch stream; returns how many were open."""
        return self.store.drop_watches()

    async def drop_portforwards(self) -> int:
        """Close every open pods/portforward WebSocket from the server side (an API server
        restart, a proxy's idle timeout); returns how many were open."""
        assert self.api is not None
        return await self.api.portforwards.drop()

    def drop_portforward_on_data(self, port: int, direction: str) -> None:
        """The next data crossing a port-forward of `port` that way ("to_pod", "from_pod")
        is lost and its WebSocket closed (a drop in the instant a request crosses)."""
        assert self.api is not None
        self.api.portforwards.drop_on_data(port, direction)

    def portforwards_served(self) -> int:
        """How many port-forward WebSockets were accepted so far."""
        assert self.api is not None
        return self.api.portforwards.served

    def access_log(self, user: str | None = None, allowed: bool | None = None
                   ) -> list[dict[str, Any]]:
        """RBAC decisions on requests (empty unless rbac=True): user, verb, group, resource
        (with /subresource), namespace, name, path, allowed; filtered by user/outcome."""
        assert self.api is not None
        if self.api.authorizer is None:
            return []
        return [e for e in self.api.authorizer.log if (user is None or e["user"] == user)
                and (allowed is None or e["allowed"] == allowed)]

    def stall_watches(self, resource: str = "", future: bool = False) -> int:
        """Open watches of `resource` (plural, "" for all) stop sending without closing;
        `future=True` stalls new ones too. Returns how many were stalled."""
        return self.store.stall_watches(resource, future)

    def resume_watches(self) -> int:
        return self.store.resume_watches()

    def compact(self) -> int:
        """Compact history: watches from older resourceVersions get 410 Gone."""
        return self.store.compact()

    def add_node(self, name: str, cpu: str = "8", memory: str = "32Gi", gpus: int = 0,
                 labels: dict[str, str] | None = None) -> None:
        spec = NodeSpec(name, str(cpu), str(memory), int(gpus), labels=dict(labels or {}))
        self.config.nodes.append(spec)
        self.store.create(NODES, spec.to_object(self.config.version))

    def set_node(self, name: str = "kubesim-node-0", cpu: str | None = None,
                 memory: str | None = None, gpus: int | None = None) -> None:
        """Change a node's capacity (pending pods are reconsidered at once)."""
        spec = next(n for n in self.config.nodes if n.name == name)
        if cpu is not None:
            spec.cpu = str(cpu)
        if memory is not None:
            spec.memory = str(memory)
        if gpus is not None:
            spec.gpus = int(gpus)

        def update(node: dict[str, Any]) -> None:
            node["status"]["allocatable"] = spec.allocatable()
            node["status"]["capacity"] = spec.allocatable()
        self.store.mutate(NODES, "", name, update)

    def configure(self, **settings: Any) -> None:
        """Change settings of the running emulator (timings, extra_env, image_entrypoints)."""
        for key, value in settings.items():
            if not hasattr(self.config, key):
                raise TypeError(f"unknown setting {key!r}")
            setattr(self.config, key, value)

    def processes(self) -> list[dict[str, Any]]:
        """The live container processes: namespace, pod, container, pid."""
        assert self.kubelet is not None
        return [{"namespace": rt.namespace, "pod": rt.name, "container": c.name,
                 "pid": c.proc.pid}
                for rt in self.kubelet.pods.values() for c in rt.all() if c.proc is not None]

    def pod_workdir(self, namespace: str, name: str) -> str | None:
        assert self.kubelet is not None
        rt = self.kubelet.find(namespace, name)
        return rt.workdir if rt else None

    def state(self) -> dict[str, Any]:
        """A summary for debugging: objects by resource, processes, armed errors."""
        return {"url": self.url, "resourceVersion": self.store.resource_version,
                "objects": {rt.plural: [f"{o['metadata'].get('namespace', '')}/"
                                        f"{o['metadata']['name']}"
                                        for o in self.store.iter_objects(rt)] for rt in STORED},
                "processes": self.processes(), "watches": self.store.watch_count,
                "errors": [dataclasses.asdict(r) for r in self.injector.rules]}


def _crd(rt: ResourceType) -> dict[str, Any]:
    names = {"plural": rt.plural, "singular": rt.singular, "kind": rt.kind,
             "listKind": f"{rt.kind}List", "shortNames": list(rt.short_names)}
    return {"metadata": {"name": f"{rt.plural}.{rt.group}"},
            "spec": {"group": rt.group, "names": names,
                     "scope": "Namespaced" if rt.namespaced else "Cluster",
                     "versions": [{"name": rt.version, "served": True, "storage": True,
                                   "subresources": {"status": {}}}]},
            "status": {"acceptedNames": names, "storedVersions": [rt.version],
                       "conditions": [{"type": "Established", "status": "True",
                                       "reason": "InitialNamesAccepted"}]}}


class KubeSimThread:
    """KubeSim on its own event loop in a background thread, for synchronous tests.

        with KubeSimThread(pod_ips="unique") as ks:
            ks.write_kubeconfig(path)
            ks.call("evict", "default", "pod-name")
    """

    def __init__(self, config: KubeSimConfig | None = None, **settings: Any) -> None:
        self._config, self._settings = config, settings
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self.sim: KubeSim | None = None

    def start(self) -> KubeSimThread:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self.sim = KubeSim(self._config, **self._settings)
                self._loop.run_until_complete(self.sim.start())
            except BaseException as exc:  # noqa: BLE001 (re-raised in the starting thread)
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="kubesim", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self.sim is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.sim.stop(), self._loop).result(60)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()
        self._thread = None

    def __enter__(self) -> KubeSimThread:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.sim is not None
        return self.sim.url

    @property
    def token(self) -> str:
        assert self.sim is not None
        return self.sim.token

    def write_kubeconfig(self, path: str | os.PathLike[str], namespace: str = "default",
                         tls: bool | None = None, token: str | None = None) -> str:
        assert self.sim is not None
        return self.sim.write_kubeconfig(path, namespace, tls, token)

    def call(self, fn: str | Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a KubeSim method (by name) or `fn(sim, ...)` on the emulator's loop."""
        sim = self.sim
        assert sim is not None

        async def invoke() -> Any:
            result = getattr(sim, fn)(*args, **kwargs) if isinstance(fn, str) \
                else fn(sim, *args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(60)
