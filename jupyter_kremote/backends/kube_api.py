"""Shared Kubernetes API access: one event loop thread, one API client, retries, watches.

The kernel's side of jupyter-kremote is synchronous (see client.py), while
kubernetes_asyncio is async: every API call runs on one background event loop
(:class:`KubeLoop`), with one ``ApiClient`` shared by all clusters of the process and
closed at exit. ``kubernetes_asyncio`` is imported here only, lazily: it costs ~1.5 s.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("jupyter_kremote.kubernetes")
T = TypeVar("T")

RETRY_STATUS = {409, 429, 500, 502, 503, 504}
SA_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def own_pod_name() -> str | None:
    """``KREMOTE_OWNER_POD``; unset, in a pod (``KUBERNETES_SERVICE_HOST`` set), the pod's
    name, which Kubernetes puts in ``HOSTNAME`` (z2jh's notebook pods: ``jupyter-<user>``)."""
    named = os.environ.get("KREMOTE_OWNER_POD")
    if named is not None:
        return named or None
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return os.environ.get("HOSTNAME") or None
    return None


@dataclass
class KubeSettings:
    """Where the API is and which defaults apply (env vars, else traitlets config)."""

    kubeconfig: str | None = field(default_factory=lambda: os.environ.get("KREMOTE_KUBECONFIG")
                                   or os.environ.get("KUBECONFIG"))
    context: str | None = field(default_factory=lambda: os.environ.get("KREMOTE_KUBE_CONTEXT"))
    namespace: str | None = field(default_factory=lambda: os.environ.get("KREMOTE_NAMESPACE"))
    kube_version: str = field(default_factory=lambda: os.environ.get("KREMOTE_KUBE_VERSION",
                                                                     "1.33.0"))
    image: str | None = field(default_factory=lambda: os.environ.get("KREMOTE_IMAGE"))
    template_path: list[str] = field(default_factory=lambda: [
        p for p in os.environ.get("KREMOTE_TEMPLATE_PATH", "").split(os.pathsep) if p])
    template_configmap: str | None = field(
        default_factory=lambda: os.environ.get("KREMOTE_TEMPLATE_CONFIGMAP") or None)
    gpu_type_label: str = field(default_factory=lambda: os.environ.get(
        "KREMOTE_GPU_TYPE_LABEL", "nvidia.com/gpu.product"))
    user: str = field(default_factory=lambda: os.environ.get("JUPYTERHUB_USER")
                      or os.environ.get("USER") or "user")
    #: seconds an ErrImagePull / ImagePullBackOff may last before the start fails (a
    #: registry hiccup clears by itself; a wrong image name does not)
    image_pull_grace: float = field(default_factory=lambda: float(os.environ.get(
        "KREMOTE_IMAGE_PULL_GRACE", "10")))
    #: each cluster gets a NetworkPolicy (ingress from its owner's notebook pod and its own
    #: pods only); "off" for a kernel that reaches pod IPs from outside any pod
    network_policy: bool = field(default_factory=lambda: os.environ.get(
        "KREMOTE_NETWORK_POLICY", "on").lower() not in ("off", "0", "false", "no"))
    #: the labels of the owner's notebook pod ({user}: the user's name as a label value);
    #: z2jh labels it hub.jupyter.org/username. Empty: no pod is the owner.
    owner_selector: str = field(default_factory=lambda: os.environ.get(
        "KREMOTE_OWNER_SELECTOR", "hub.jupyter.org/username={user}"))
    #: the labels of the pod that holds the clusters when that is not the owner's notebook
    #: pod: the hub's kremote service, which pings, watches and stops the agents itself
    holder_selector: str = field(default_factory=lambda: os.environ.get(
        "KREMOTE_HOLDER_SELECTOR", ""))
    #: the owner's notebook pod by name: KREMOTE_OWNER_POD, else in a pod the pod's own name
    #: (the server in a pod knows itself); "" for none (then the owner selector)
    owner_pod: str | None = field(default_factory=own_pod_name)
    #: how the kernel reaches the agents: "direct" (pod IPs), "port-forward" (through the
    #: API server), or "auto" (direct inside the cluster or when a pod IP answers, else
    #: port-forward); `%%remote --connect` overrides it per cluster
    connect: str = field(default_factory=lambda: os.environ.get("KREMOTE_CONNECT", "auto"))
    #: the admin's default Kueue LocalQueue (``--queue`` wins)
    queue: str | None = field(default_factory=lambda: os.environ.get("KREMOTE_QUEUE") or None)
    #: the watches' server timeoutSeconds (the client gives up a little after it)
    watch_timeout: int = field(default_factory=lambda: int(os.environ.get(
        "KREMOTE_WATCH_TIMEOUT", "60")))


class KubeLoop:
    """A daemon thread running an event loop, with the shared API client on it."""

    _instance: KubeLoop | None = None
    _lock = threading.Lock()

    def __init__(self, settings: KubeSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="kremote-kube",
                                        daemon=True)
        self._thread.start()
        self.api: Any = None
        self.namespace = "default"
        self.run(self._connect())
        atexit.register(self.close)

    @classmethod
    def get(cls, settings: KubeSettings | None = None) -> KubeLoop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(settings or KubeSettings())
            return cls._instance

    async def _connect(self) -> None:
        from kubernetes_asyncio import client, config

        s = self.settings
        if s.kubeconfig is None and os.path.exists(SA_TOKEN):
            config.load_incluster_config()  # re-reads the rotating token on its own
            with open(SA_TOKEN.replace("token", "namespace")) as fh:
                self.namespace = fh.read().strip()
        else:
            cfg = client.Configuration()
            await config.load_kube_config(config_file=s.kubeconfig, context=s.context,
                                          client_configuration=cfg)
            client.Configuration.set_default(cfg)
            try:
                _, active = config.list_kube_config_contexts(config_file=s.kubeconfig)
                self.namespace = active.get("context", {}).get("namespace") or "default"
            except Exception:  # noqa: BLE001 - a namespace-less context is fine
                pass
        if s.namespace:
            self.namespace = s.namespace
        self.api = client.ApiClient()

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait, staying interruptible (Ctrl-C cancels it)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout)
        except (KeyboardInterrupt, concurrent.futures.TimeoutError):
            fut.cancel()
            raise

    def spawn(self, coro: Awaitable[Any]) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def close(self) -> None:
        if self.api is not None and self.loop.is_running():
            try:
                self.run(self.api.close(), timeout=2)
            except Exception:  # noqa: BLE001 - at exit
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)

    # -- typed API groups -----------------------------------------------------------------
    @property
    def core(self) -> Any:
        from kubernetes_asyncio import client

        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> Any:
        from kubernetes_asyncio import client

        return client.BatchV1Api(self.api)

    @property
    def networking(self) -> Any:
        from kubernetes_asyncio import client

        return client.NetworkingV1Api(self.api)


def api_status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def api_errors() -> tuple[type[BaseException], ...]:
    """What a failed API call raises: the API's refusal, or no answer (connection, timeout).
    Other exceptions are bugs and propagate as they are."""
    import aiohttp
    from kubernetes_asyncio.client.exceptions import ApiException

    return (ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def api_message(exc: BaseException) -> str:
    """The ``message`` of a Kubernetes Status body, else the exception text."""
    import json

    body = getattr(exc, "body", None)
    if body:
        try:
            return json.loads(body).get("message") or str(exc)
        except (ValueError, AttributeError):
            return str(body)[:300]
    return str(exc)


async def retry(call: Callable[[], Awaitable[T]], what: str, attempts: int = 6,
                ok_status: tuple[int, ...] = ()) -> T | None:
    """Call the API, retrying 409/429/5xx with backoff (honouring Retry-After).

    A status in ``ok_status`` (say 404 on delete) returns None instead of raising.
    """
    delay = 0.2
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as exc:
            status = api_status(exc)
            if status in ok_status:
                return None
            if status not in RETRY_STATUS or attempt == attempts - 1:
                raise
            headers = getattr(exc, "headers", None) or {}
            wait = float(headers.get("Retry-After", delay)) if headers else delay
            log.info("%s: API answered %s, retrying in %.1fs", what, status, wait)
            await asyncio.sleep(min(wait, 5.0) * (1 + random.random() * 0.2))
            delay = min(delay * 2, 5.0)
    return None


def watch_limit(timeout_seconds: int) -> float:
    """The client's timeout for a watch: above the server's ``timeoutSeconds``, so a silently
    stalled connection ends and the watch starts again."""
    return timeout_seconds + min(10.0, max(2.0, timeout_seconds / 6))


class Reflector:
    """List then watch objects matching a selector; resume on timeouts, re-list on 410.

    ``on_event(type, obj_dict)`` sees every change (``SYNC`` for listed objects). A re-list
    replaces what the consumer knows: objects deleted during a watch gap are reported
    ``DELETED``. Each watch has a client timeout above the server's ``timeoutSeconds``, so a
    stalled connection ends. Errors back off and retry; it stops only when told to.
    """

    def __init__(self, list_fn: Callable[..., Any], namespace: str, on_event: Callable,
                 label_selector: str = "", field_selector: str = "",
                 timeout_seconds: int = 60) -> None:
        self.list_fn = list_fn
        self.namespace = namespace
        self.on_event = on_event
        self.selector = {k: v for k, v in (("label_selector", label_selector),
                                            ("field_selector", field_selector)) if v}
        self.timeout_seconds = timeout_seconds
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.relists = 0
        self.known: dict[str, dict[str, Any]] = {}  # name -> last object seen

    async def run(self) -> None:
        import aiohttp
        from kubernetes_asyncio import watch

        backoff = 0.2
        limit = aiohttp.ClientTimeout(total=watch_limit(self.timeout_seconds), sock_connect=10)
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                w = watch.Watch()
                async with w.stream(self.list_fn, self.namespace,
                                    resource_version=self.resource_version,
                                    timeout_seconds=self.timeout_seconds,
                                    allow_watch_bookmarks=True, _request_timeout=limit,
                                    **self.selector) as stream:
                    async for event in stream:
                        raw = event.get("raw_object") or {}
                        rv = raw.get("metadata", {}).get("resourceVersion")
                        if rv:
                            self.resource_version = rv
                        if event["type"] != "BOOKMARK":
                            self._remember(event["type"], raw)
                            self.on_event(event["type"], raw)
                backoff = 0.2
            except asyncio.TimeoutError:  # the connection stalled: watch again from here
                log.info("watch of %s stalled past %ss; watching again",
                         getattr(self.list_fn, "__name__", "objects"),
                         watch_limit(self.timeout_seconds))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - watches must never stop silently
                if api_status(exc) == 410:
                    self.resource_version = None  # too old: list again
                    continue
                log.warning("watch of %s failed (%s); retrying in %.1fs",
                            getattr(self.list_fn, "__name__", "objects"), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _list(self) -> None:
        result = await retry(lambda: self.list_fn(self.namespace, _preload_content=False,
                                                  **self.selector), "list")
        import json

        body = json.loads(await result.read())  # type: ignore[union-attr]
        self.relists += 1
        items = body.get("items", [])
        listed = {_key(item) for item in items}
        for key in [k for k in self.known if k not in listed]:  # deleted during the gap
            self.on_event("DELETED", self.known.pop(key))
        for item in items:
            self._remember("SYNC", item)
            self.on_event("SYNC", item)
        self.resource_version = body.get("metadata", {}).get("resourceVersion")
        self.synced.set()

    def _remember(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.known.pop(_key(obj), None)
        else:
            self.known[_key(obj)] = obj


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"


async def get_json(kl: Any, path: str, **query: str) -> tuple[int, Any]:
    """GET a raw API path: (status, the JSON body, or the Status message when not 200)."""
    try:
        resp = await kl.api.call_api(path, "GET", query_params=list(query.items()),
                                     auth_settings=["BearerToken"], _preload_content=False)
    except Exception as exc:  # noqa: BLE001 - not even an answer
        return 0, str(exc)
    try:
        raw = await resp.read()
    finally:
        resp.release()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {"message": raw[:200].decode(errors="replace")}
    if resp.status != 200:
        return resp.status, body.get("message") or f"HTTP {resp.status}"
    return 200, body
