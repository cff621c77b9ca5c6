"""Kubernetes backend: a cluster is a key Secret plus an Indexed Job of agent pods.

Start: render the manifests from templates (validated against the official schema),
create the Secret and the Job, watch the pods, the Job and the events, and wait until
every agent answers a signed ping over CURVE-encrypted ZeroMQ, or fail fast with the
cause and the last events (deleting what was created). Stop: delete Job, pods and
Secret. The TTL is the Job's activeDeadlineSeconds, so the cluster ends even if the
kernel is gone; ``extend`` patches it.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import zmq

from ..client import ClusterClient, Endpoint
from ..errors import ClusterEnded
from ..manifests import (
    AGENT_PORT,
    KEY_ENV,
    LABEL_CLUSTER,
    LABEL_USER,
    MANAGED_BY,
    ON_PREEMPT_ANNOTATION,
    QUEUE_LABEL,
    make_network_policy,
    make_owner_reference,
    parse_selector,
    render_cluster,
    secret_name,
    services_of,
)
from ..protocol import new_key
from ..spec import PodSpec, check_dns_label, dns_safe_name, format_duration, label_value
from ..templates import TemplateResolver
from .base import ClusterHandle, StartRequest
from .kube_api import (
    SA_TOKEN,
    KubeLoop,
    KubeSettings,
    api_errors,
    api_message,
    api_status,
    retry,
)
from .kube_queue import QueueState, eviction, poll, stops
from .kube_state import (
    ClusterState,
    disruption,
    job_failure,
    name_of,
    pod_failure,
    pod_ip,
    pod_stage,
    pull_failure,
    rank_of,
    unschedulable,
)
from .kube_watch import NamespaceWatch
from .portforward import PortForward, PortForwardError

log = logging.getLogger("jupyter_kremote.kubernetes")
#: the Secret's key holding the owner's CURVE client secret key (never a pod's env)
CLIENT_SECRET_KEY = "KREMOTE_CURVE_CLIENT_SECRET"


class ClusterStartError(ClusterEnded):
    """The cluster could not start; the message names the cause and the last events."""


@dataclass
class _Kube:
    """What the backend keeps per cluster."""

    namespace: str
    job: str
    secret: str
    state: ClusterState
    label: str = ""  # the pods' kremote/cluster label
    watched: bool = False  # registered with the namespace's shared watch
    pods: dict[int, str] = field(default_factory=dict)  # rank -> the pod its agent runs in
    via: str = "direct"  # how the kernel reaches the agents: direct | port-forward
    forwards: list[PortForward] = field(default_factory=list)  # port-forward: two per rank
    service_forwards: dict[str, PortForward] = field(default_factory=dict)  # by service name
    queue: QueueState | None = None  # Kueue: the LocalQueue it waits in, and where it stands
    on_preempt: str = "requeue"  # what to do once Kueue evicts it (spec.ON_PREEMPT)
    ended: bool = False  # deleted after an eviction (--on-preempt end)
    evicted: str | None = None  # why Kueue evicted it, until it is admitted again
    #: what a requeued cluster needs to wait for its agents again (--on-preempt requeue)
    rejoin: tuple[StartRequest, bytes, bytes, bytes | None] | None = None

    def close_forwards(self) -> None:
        for fwd in self.forwards:
            fwd.close()
        self.forwards.clear()
        self.service_forwards.clear()


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, settings: KubeSettings | None = None) -> None:
        self.settings = settings or KubeSettings()
        self._clusters: dict[int, _Kube] = {}
        self._starting: set[str] = set()  # Jobs of starts in progress (queued ones too)
        self._service_lock = threading.Lock()  # one forward per service, whoever asks first

    @property
    def kube(self) -> KubeLoop:
        return KubeLoop.get(self.settings)

    # -- rendering ---------------------------------------------------------------------------
    def resolver(self, namespace: str | None = None) -> TemplateResolver:
        def configmap(name: str, key: str) -> str:
            kl = self.kube
            cm = kl.run(kl.core.read_namespaced_config_map(name, namespace or kl.namespace))
            data = cm.data or {}
            if key not in data:
                raise KeyError(f"configmap:{name}/{key}: no key {key!r}; it has "
                               f"{', '.join(sorted(data)) or 'no keys'}")
            return data[key]

        return TemplateResolver(folders=self.settings.template_path, configmap_loader=configmap,
                                configmap=self.settings.template_configmap)

    def render(self, request: StartRequest, *, key: str | None, redact: bool,
               curve_secret: str | None = None, namespace: str | None = None,
               cluster_id: str | None = None, curve_client: tuple[str, str] | None = None,
               owner_reference: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``[secret, job]``, plus the cluster's NetworkPolicy unless that is turned off.

        `curve_client` is the owner's CURVE keypair (Z85 public, secret): the agents admit
        only its public key; the secret stays in the Secret, read back by `attach`.
        """
        spec = request.spec
        if spec.name is None:
            spec.name = request.name  # the Job's kremote/name annotation, for adoption
        if spec.image is None and self.settings.image:
            spec.image = self.settings.image
        if spec.queue is None and self.settings.queue:
            spec.queue = self.settings.queue
        ns = spec.namespace or namespace or self.settings.namespace or "default"
        # a group's cluster is NAME-GROUP; its family (the NetworkPolicy's peers) is NAME
        family = request.name.removesuffix(f"-{spec.group}") if spec.group != "main" \
            else request.name
        docs = render_cluster(
            spec, cluster_id=cluster_id or dns_safe_name(request.name, "xxxxxx"),
            user=self.settings.user, notebook=request.notebook,
            resolver=self.resolver(ns), namespace=ns, key=key,
            kube_version=self.settings.kube_version, redact=redact,
            gpu_type_label=self.settings.gpu_type_label, family=family,
            agent_secrets={"KREMOTE_CURVE_SECRET": curve_secret or "<redacted>"},
            curve_clients=[curve_client[0]] if curve_client else None,
            owner_secrets={CLIENT_SECRET_KEY: curve_client[1]} if curve_client else None,
            owner_reference=owner_reference)
        if self.settings.network_policy:
            docs.append(make_network_policy(
                docs[1], owner_selector=self.owner_selector(),
                holder_selector=parse_selector(self.settings.holder_selector,
                                               "KREMOTE_HOLDER_SELECTOR") or None,
                kube_version=self.settings.kube_version))
        return docs

    def owner_selector(self) -> dict[str, str] | None:
        """The owner's notebook pod's labels (KREMOTE_OWNER_SELECTOR), None when unset."""
        text = self.settings.owner_selector.replace("{user}", label_value(self.settings.user))
        return parse_selector(text, "KREMOTE_OWNER_SELECTOR") or None

    async def _owner_reference(self, kl: KubeLoop, ns: str) -> dict[str, Any] | None:
        """An ownerReference to the owner's notebook pod in ``ns``, when there is exactly one.

        By name (KREMOTE_OWNER_POD: a server in a pod knows itself), else by the owner
        selector (z2jh's hub.jupyter.org/username). Listing, not get: the Role already lists
        pods. No pod (a laptop), several, or no right to look: no owner, the TTL still ends it.
        """
        s = self.settings
        if s.owner_pod:
            query = {"field_selector": f"metadata.name={s.owner_pod}"}
        else:
            selector = self.owner_selector()
            if not selector:
                return None
            query = {"label_selector": ",".join(f"{k}={v}" for k, v in selector.items())}
        try:
            found = await kl.core.list_namespaced_pod(ns, **query)
        except Exception as exc:  # noqa: BLE001 - the owner is a bonus, never a failure
            log.warning("no owner pod for the cluster: %s", api_message(exc))
            return None
        pods = [p for p in found.items if not p.metadata.deletion_timestamp]
        if len(pods) != 1:
            if len(pods) > 1:
                log.warning("%d pods match the owner selector; the Job gets no owner", len(pods))
            return None
        return make_owner_reference(pods[0].metadata.name, pods[0].metadata.uid)

    # -- start -------------------------------------------------------------------------------
    def start(self, request: StartRequest) -> ClusterHandle:
        kl = self.kube
        key = new_key()
        curve_public, curve_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()  # the owner's: the one admitted
        cluster_id = dns_safe_name(request.name[:20], secrets.token_hex(3))
        ns = check_dns_label(request.spec.namespace or kl.namespace, "namespace")
        owner = kl.run(self._owner_reference(kl, ns), timeout=30)
        secret_doc, job_doc, *policy = self.render(
            request, key=key.decode(), redact=False, curve_secret=curve_secret.decode(),
            namespace=kl.namespace, cluster_id=cluster_id, owner_reference=owner,
            curve_client=(client_public.decode(), client_secret.decode()))
        label = job_doc["metadata"]["labels"][LABEL_CLUSTER]
        kube = _Kube(ns, job_doc["metadata"]["name"], secret_doc["metadata"]["name"],
                     ClusterState(job_doc["metadata"]["name"]), label)
        queue = job_doc["metadata"]["labels"].get(QUEUE_LABEL)
        if queue:
            kube.queue = QueueState(queue)
            kube.on_preempt = request.spec.on_preempt
            kube.rejoin = (request, key, curve_public, client_secret)
        started = time.time()
        self._starting.add(kube.job)
        try:
            kl.run(self._create(kl, ns, secret_doc, job_doc, *policy), timeout=60)
            self._watch(kl, kube, label)
            endpoints = self._wait_ready(request, kube, key, curve_public, client_secret)
        except BaseException:
            self._starting.discard(kube.job)
            if self._keeps_queued(request, kube):
                self._unwatch(kube)  # a server stop keeps it queued: the next server adopts it
            else:
                self._teardown(kube)
            raise
        # the TTL is the Job's activeDeadlineSeconds, which counts from its startTime (set
        # when Kueue admits a queued Job), not from the time spent in the queue
        job_start = kube.state.job.get("status", {}).get("startTime")
        if job_start:
            started = _parse_time(job_start)
        handle = ClusterHandle(name=request.name, backend=self.name, key=key,
                               endpoints=endpoints, started=started,
                               deadline=started + request.spec.ttl,
                               services=services_of(job_doc))
        self._clusters[id(handle)] = kube
        self._starting.discard(kube.job)
        return handle

    def held_jobs(self) -> set[str]:
        """The Jobs of the clusters this backend holds or is starting (the orphan sweep
        leaves them alone)."""
        return {k.job for k in list(self._clusters.values())} | set(self._starting)

    @staticmethod
    def _watch(kl: KubeLoop, kube: _Kube, label: str) -> None:
        """Follow the cluster's pods, Job and events through its namespace's shared watch."""
        NamespaceWatch.register(kl, kube.namespace, label, kube.state)
        kube.watched = True

    def _unwatch(self, kube: _Kube) -> None:
        if kube.watched:
            NamespaceWatch.unregister(self.kube, kube.namespace, kube.state)
            kube.watched = False

    # -- adoption (a restarted Jupyter server takes its running clusters back) ---------------
    def find_running(self, user: str | None, namespace: str | None = None
                     ) -> list[dict[str, Any]]:
        """The unfinished Jobs of ``user`` (by label; None: every user's) in ``namespace``."""
        kl = self.kube
        ns = namespace or self.settings.namespace or kl.namespace
        selector = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        if user is not None:
            selector += f",{LABEL_USER}={label_value(user)}"

        async def go() -> list[dict[str, Any]]:
            res = await retry(lambda: kl.batch.list_namespaced_job(
                ns, label_selector=selector, _preload_content=False), "list Jobs")
            import json

            return json.loads(await res.read()).get("items", [])  # type: ignore[union-attr]

        jobs = kl.run(go(), timeout=60)
        return [j for j in jobs if not any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in j.get("status", {}).get("conditions") or [])
            and not j.get("metadata", {}).get("deletionTimestamp")]

    def _keys(self, job: dict[str, Any]) -> tuple[str, bytes, bytes, bytes | None]:
        """A cluster's Secret's name, HMAC key, agents' CURVE public key and the owner's
        CURVE client secret, read back from its Secret."""
        kl = self.kube
        meta = job["metadata"]
        ns, label = meta["namespace"], meta["labels"][LABEL_CLUSTER]
        secret = kl.run(kl.core.read_namespaced_secret(secret_name(label), ns), timeout=30)
        data = secret.data or {}
        key = base64.b64decode(data[KEY_ENV])
        curve_public = zmq.curve_public(base64.b64decode(data["KREMOTE_CURVE_SECRET"]))
        # clusters made before the client allowlist have no owner key: any client key works
        client_secret = (base64.b64decode(data[CLIENT_SECRET_KEY])
                         if CLIENT_SECRET_KEY in data else None)
        return secret.metadata.name, key, curve_public, client_secret

    @staticmethod
    def queued(job: dict[str, Any]) -> str | None:
        """The LocalQueue a Job still waits in (suspended, not yet admitted), else None."""
        queue = (job["metadata"].get("labels") or {}).get(QUEUE_LABEL)
        return queue if queue and job.get("spec", {}).get("suspend") else None

    def attach_queued(self, job: dict[str, Any], progress: Callable[[str], None] | None = None,
                      cancelled: threading.Event | None = None,
                      keep_queued: threading.Event | None = None) -> ClusterHandle:
        """A handle on a cluster whose Job waits in Kueue (a restarted server adopts it):
        wait, saying where it stands, until Kueue admits it and its agents answer, as its
        start would have. ``cancelled`` (shut down meanwhile) deletes it; any other failure
        leaves the Job to its TTL, as does ``keep_queued`` (a server stop keeping it queued)."""
        meta = job["metadata"]
        notes = meta.get("annotations") or {}
        name = notes.get("kremote/name") or meta["labels"][LABEL_CLUSTER]
        secret, key, curve_public, client_secret = self._keys(job)
        spec = job.get("spec", {})
        pod_spec = PodSpec(count=spec.get("completions") or 1,
                           ttl=spec.get("activeDeadlineSeconds") or 3600,
                           on_preempt=notes.get(ON_PREEMPT_ANNOTATION) or "requeue")
        request = StartRequest(name=name, spec=pod_spec, progress=progress, cancelled=cancelled,
                               notebook=notes.get("kremote/notebook-path", ""),
                               keep_queued=keep_queued)
        kube = _Kube(meta["namespace"], meta["name"], secret, ClusterState(meta["name"]),
                     meta["labels"][LABEL_CLUSTER], queue=QueueState(self.queued(job) or ""),
                     on_preempt=pod_spec.on_preempt)
        kube.rejoin = (request, key, curve_public, client_secret)
        self._starting.add(kube.job)
        try:
            self._watch(self.kube, kube, meta["labels"][LABEL_CLUSTER])
            endpoints = self._wait_ready(request, kube, key, curve_public, client_secret)
        except BaseException:
            self._starting.discard(kube.job)
            if cancelled is not None and cancelled.is_set() and \
                    not self._keeps_queued(request, kube):
                self._teardown(kube)
            else:
                self._unwatch(kube)
            raise
        began = _parse_time(kube.state.job["status"]["startTime"])
        handle = ClusterHandle(name=name, backend=self.name, key=key, endpoints=endpoints,
                               started=began, deadline=began + pod_spec.ttl,
                               services=services_of(job))
        self._clusters[id(handle)] = kube
        self._starting.discard(kube.job)
        return handle

    def attach(self, job: dict[str, Any], wait: float = 30.0) -> ClusterHandle:
        """A handle on a running cluster's Job (its key read back from its Secret)."""
        kl = self.kube
        meta = job["metadata"]
        ns, label = meta["namespace"], meta["labels"][LABEL_CLUSTER]
        secret, key, curve_public, client_secret = self._keys(job)
        kube = _Kube(ns, meta["name"], secret, ClusterState(meta["name"]), label)
        self._watch(kl, kube, label)
        count = job.get("spec", {}).get("completions") or 1
        end = time.monotonic() + wait
        try:
            while True:
                running = {r: p for r, p in kube.state.by_rank().items()
                           if pod_stage(p) == "Running" and pod_ip(p)}
                if len(running) == count:
                    break
                if time.monotonic() > end:
                    raise ClusterEnded(f"Job {meta['name']}: {len(running)} of {count} agents "
                                       "running; not adopted")
                kube.state.changed.wait(0.2)
                kube.state.changed.clear()
        except BaseException:
            self._unwatch(kube)
            raise
        kube.pods = {r: name_of(p) for r, p in running.items()}
        status = job.get("status", {})
        began = _parse_time(status.get("startTime") or meta["creationTimestamp"])
        ttl = job.get("spec", {}).get("activeDeadlineSeconds") or 3600
        name = (meta.get("annotations") or {}).get("kremote/name") or label
        try:
            endpoints = self._reach(kube, running, curve_public, None, client_secret)
        except BaseException:
            self._unwatch(kube)
            raise
        assert endpoints is not None  # only a start waits for Ready
        handle = ClusterHandle(name=name, backend=self.name, key=key, endpoints=endpoints,
                               started=began, deadline=began + ttl, services=services_of(job))
        self._clusters[id(handle)] = kube
        return handle

    def release(self, handle: ClusterHandle) -> None:
        """Stop watching a cluster and leave it running (its TTL still ends it)."""
        kube = self._clusters.pop(id(handle), None)
        if kube is not None:
            self._unwatch(kube)
            kube.close_forwards()

    async def _create(self, kl: KubeLoop, ns: str, secret: dict, job: dict,
                      policy: dict | None = None) -> None:
        name = secret["metadata"]["name"]
        await retry(lambda: kl.core.create_namespaced_secret(ns, secret), "create Secret")
        try:
            made = await retry(lambda: kl.batch.create_namespaced_job(ns, job), "create Job")
            # the Secret belongs to the Job alone: whoever deletes the Job (kubectl, the TTL
            # controller after ttlSecondsAfterFinished) deletes the keys with it; its owner
            # pod (until now the Secret's, should we die in between) owns the Job
            by_job = {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                      "uid": made.metadata.uid}  # type: ignore[union-attr]
            await retry(lambda: kl.core.patch_namespaced_secret(
                name, ns, {"metadata": {"ownerReferences": [by_job]}},
                _content_type="application/merge-patch+json"), "own Secret")
        except api_errors() as exc:  # anything else propagates: start's teardown cleans up
            await retry(lambda: kl.core.delete_namespaced_secret(name, ns),
                        "delete Secret", ok_status=(404,))
            raise ClusterStartError(f"the API refused the Job: {api_message(exc)}") from None
        if policy is not None:  # the Job's too: the garbage collector removes it with it
            policy["metadata"]["ownerReferences"] = [by_job]
            try:
                await retry(lambda: kl.networking.create_namespaced_network_policy(ns, policy),
                            "create NetworkPolicy")
            except Exception as exc:  # noqa: BLE001 - the caller deletes the Job (and Secret)
                raise ClusterStartError(
                    f"the API refused the NetworkPolicy: {api_message(exc)} (or set "
                    "KREMOTE_NETWORK_POLICY=off where clusters need none)") from None

    def _wait_ready(self, request: StartRequest, kube: _Kube, key: bytes,
                    curve_public: bytes, client_secret: bytes | None) -> list[Endpoint]:
        count = request.spec.count
        timeout = request.spec.connect_timeout
        say: Callable[[str], None] = request.progress or (lambda text: None)
        end = time.monotonic() + timeout
        queued_since = time.monotonic()
        evictions = len(stops(kube.state.event_list(), kube.job))  # reported (or before)
        next_poll = 0.0
        last_line = ""
        client: ClusterClient | None = None
        pulling: dict[str, float] = {}  # pod -> when its image pull first failed
        grace = self.settings.image_pull_grace
        try:
            while True:
                kube.state.changed.wait(0.2)
                if request.cancelled is not None and request.cancelled.is_set():
                    raise ClusterStartError(f"cluster {request.name!r}: the start was "
                                            "cancelled (shut down while it started)")
                kube.state.changed.clear()
                if kube.queue is not None and kube.queue.admitted and (
                        self._suspended(kube) or
                        len(stops(kube.state.event_list(), kube.job)) > evictions):
                    # evicted before every agent was up (waitForPodsReady): all or nothing,
                    # so it waits in the queue again. Its Stopped event says so even when it
                    # was admitted again before this thread looked (a busy machine); the event
                    # trails the suspension a little
                    why = self._stop_reason(kube, evictions)
                    evictions = max(evictions + 1, len(stops(kube.state.event_list(), kube.job)))
                    kube.queue.admitted, kube.queue.position = False, None
                    queued_since = time.monotonic()
                    say(f"evicted by Kueue{f' ({why})' if why else ''}; queued again")
                if kube.queue is not None and not kube.queue.admitted:
                    now = time.monotonic()
                    if self._suspended(kube):  # waiting in Kueue: no connect timeout runs
                        end = now + timeout
                        if now >= next_poll:
                            next_poll = now + 1.0
                            self._poll_queue(kube)
                            if kube.queue.line() != last_line:
                                last_line = kube.queue.line()
                                say(last_line)
                        limit = request.spec.queue_timeout
                        if limit is not None and now - queued_since > limit:
                            raise ClusterStartError(self._failure(request, kube, (
                                f"still {kube.queue.line()}; waited --queue-timeout "
                                f"{format_duration(limit)}")))
                        continue
                    if kube.queue.cluster_queue is None:  # admitted at once: name it
                        self._poll_queue(kube)
                    kube.queue.admitted = True
                    say(f"admitted after {format_duration(now - queued_since)}")
                    end = now + timeout
                pods = kube.state.by_rank()
                refused = kube.state.refused()
                if refused:  # FailedCreate: no pod will come (PodSecurity, quota, account)
                    raise ClusterStartError(self._failure(
                        request, kube, f"Kubernetes refused to create the pods: {refused}"))
                failure = None
                now = time.monotonic()
                for rank, pod in sorted(pods.items()):  # the pod's own reason is the clearest
                    failure = pod_failure(pod)
                    if failure:
                        failure = f"rank {rank}: {failure}" + self._log_tail(kube, pod)
                        break
                    pull = pull_failure(pod)
                    if pull is None:
                        pulling.pop(name_of(pod), None)
                    elif now - pulling.setdefault(name_of(pod), now) >= grace:
                        failure = (f"rank {rank}: {pull}; still failing after "
                                   f"KREMOTE_IMAGE_PULL_GRACE={grace:g}s")
                        break
                if failure is None and job_failure(kube.state.job):
                    failure = self._failed_pod(kube) or job_failure(kube.state.job)
                if failure:
                    raise ClusterStartError(self._failure(request, kube, failure))
                line = ", ".join(f"rank {r}: {pod_stage(p)}" for r, p in sorted(pods.items()))
                if line and line != last_line:
                    say(line)
                    last_line = line
                running = {r: p for r, p in pods.items()
                           if pod_stage(p) == "Running" and pod_ip(p)}
                if len(running) == count:
                    if client is None:
                        try:
                            reach = self._reach(kube, running, curve_public,
                                                request.spec.connect, client_secret,
                                                wait_ready=True)
                        except PortForwardError as exc:
                            raise ClusterStartError(self._failure(request, kube, str(exc),
                                                                  with_events=False)) from None
                        if reach is None:  # auto: probe once the agent listens (Ready)
                            continue
                        endpoints = reach
                        if kube.via == "port-forward":
                            say("agents reached through the API server's port-forward")
                        client = ClusterClient(key, endpoints, lambda r: None)
                    if len(client.control("ping", timeout=0.5)) == count:
                        kube.pods = {r: name_of(p) for r, p in running.items()}
                        return endpoints
                if time.monotonic() > end:
                    stuck = next((m for m in map(unschedulable, pods.values()) if m), None)
                    why = (f"no node can run it: {stuck}" if stuck else
                           f"agents not ready ({line or 'no pods yet'})")
                    raise ClusterStartError(self._failure(
                        request, kube, f"{why}; waited --connect-timeout {timeout:g}s"))
        finally:
            if client is not None:
                client.close()

    @staticmethod
    def _stop_reason(kube: _Kube, seen: int, wait: float = 2.0) -> str | None:
        """The message of the Job's Stopped event after the first ``seen`` (waited for a
        moment: it trails the suspension), or None."""
        end = time.monotonic() + wait
        while True:
            stopped = stops(kube.state.event_list(), kube.job)
            if len(stopped) > seen or time.monotonic() > end:
                break
            kube.state.changed.wait(0.1)
            kube.state.changed.clear()
        if len(stopped) <= seen:
            return None
        return str(stopped[-1].get("message") or stopped[-1].get("note") or "")

    def _keeps_queued(self, request: StartRequest, kube: _Kube) -> bool:
        """Whether a start given up by a server stop leaves its Job waiting in Kueue
        (keep_on_exit): only a Job that exists and is still queued."""
        return request.keep_queued is not None and request.keep_queued.is_set() and \
            kube.queue is not None and bool(kube.state.job) and self._suspended(kube)

    @staticmethod
    def _suspended(kube: _Kube) -> bool:
        """Whether the Job waits for Kueue (it is created suspended; Kueue resumes it)."""
        job = kube.state.job
        return not job or bool(job.get("spec", {}).get("suspend"))

    def _poll_queue(self, kube: _Kube) -> None:
        assert kube.queue is not None
        uid = kube.state.job.get("metadata", {}).get("uid")
        if not uid:
            return
        kl = self.kube
        try:
            kl.run(poll(kl, kube.namespace, uid, kube.queue), timeout=30)
        except Exception as exc:  # noqa: BLE001 - the next poll tries again
            log.debug("could not read the queue of %s: %s", kube.job, api_message(exc))

    def _reach(self, kube: _Kube, running: dict[int, dict], curve_public: bytes,
               connect: str | None, client_secret: bytes | None,
               wait_ready: bool = False) -> list[Endpoint] | None:
        """The agents' endpoints: their pod IPs, or local port-forward listeners when the
        kernel cannot reach pod IPs (``connect``: auto, direct, port-forward); the owner's
        CURVE client key (`client_secret`) goes with each. None: ``auto`` was refused before
        the first pod is Ready (its agent may not listen yet), so cannot tell yet."""
        mode = connect or self.settings.connect or "auto"
        ranks = sorted(running.items())
        if mode == "auto":
            in_cluster = self.settings.kubeconfig is None and os.path.exists(SA_TOKEN)
            seen = "open" if in_cluster else probe_pod_ip(pod_ip(ranks[0][1]) or "", AGENT_PORT)
            if seen == "refused" and wait_ready and not pod_ready(ranks[0][1]):
                return None  # the agent may not listen yet: ask again
            mode = "direct" if seen == "open" else "port-forward"
        if mode != "port-forward":
            return [Endpoint(r, pod_ip(p) or "", AGENT_PORT, AGENT_PORT + 1, curve_public,
                             client_secret) for r, p in ranks]
        kube.via = "port-forward"
        kube.close_forwards()
        kl = self.kube
        endpoints = []
        try:
            for rank, pod in ranks:
                data, control = (PortForward.open(kl, kube.namespace, name_of(pod), port)
                                 for port in (AGENT_PORT, AGENT_PORT + 1))
                kube.forwards += [data, control]
                endpoints.append(Endpoint(rank, "127.0.0.1", data.local_port,
                                          control.local_port, curve_public, client_secret,
                                          pod_ip(pod)))
            kube.forwards[0].check()  # a refusal (RBAC) fails the start with the API's words
        except BaseException:
            kube.close_forwards()
            raise
        return endpoints

    def _failure(self, request: StartRequest, kube: _Kube, why: str,
                 with_events: bool = True) -> str:
        if not with_events:
            return f"cluster {request.name!r} could not start: {why}"
        end = time.monotonic() + 1.0  # events trail the status a little; give them a moment
        while not kube.state.recent_events(1) and time.monotonic() < end:
            kube.state.changed.wait(0.1)
        events = kube.state.recent_events(4)
        tail = ("; last events: " + " | ".join(events)) if events else ""
        return f"cluster {request.name!r} could not start: {why}{tail}"

    def _failed_pod(self, kube: _Kube) -> str | None:
        """Why a pod of a Job that failed on its pods ended, with its log tail, read from the
        API: the Job's Failed/FailureTarget can reach us before the watch brings the failed
        pod's terminated state (two streams, no order between them), and the Job controller
        leaves a failed pod in place. Pods it deleted (the ranks it stopped, or a deadline's
        victims) exit on its SIGTERM and are not the cause."""
        conditions = kube.state.job.get("status", {}).get("conditions") or []
        cond: dict[str, Any] = next(
            (c for c in conditions if c.get("type") in ("Failed", "FailureTarget")), {})
        if cond.get("reason") not in ("BackoffLimitExceeded", "PodFailurePolicy") or \
                not kube.label:
            return None
        kl = self.kube

        async def go() -> list[dict[str, Any]]:
            res = await kl.core.list_namespaced_pod(
                kube.namespace, label_selector=f"{LABEL_CLUSTER}={kube.label}",
                _preload_content=False)
            import json

            return json.loads(await res.read()).get("items", [])

        try:
            pods = kl.run(go(), timeout=15)
        except api_errors() as exc:  # the Job's own reason is still true
            log.debug("could not read the pods of %s: %s", kube.job, api_message(exc))
            return None
        failed = [p for p in pods if p.get("status", {}).get("phase") == "Failed"
                  and not p["metadata"].get("deletionTimestamp")]
        for pod in sorted(failed, key=lambda p: rank_of(p) or 0):
            why = pod_failure(pod)
            if why:
                return f"rank {rank_of(pod)}: {why}" + self._log_tail(kube, pod)
        return None

    def _log_tail(self, kube: _Kube, pod: dict) -> str:
        state = (pod.get("status", {}).get("containerStatuses") or [{}])[0].get("state") or {}
        if "terminated" not in state:
            return ""
        text = self._read_log(kube, pod["metadata"]["name"], 5)
        return f"; its log ends: {text.strip()}" if text.strip() else ""

    # -- running clusters -------------------------------------------------------------------
    def liveness(self, handle: ClusterHandle, rank: int) -> str | None:
        kube = self._clusters.get(id(handle))
        if kube is None:
            return "was shut down"
        if kube.queue is not None:
            evicted = kube.evicted or self._evicted(kube)
            if evicted:
                return f"ended: {evicted}"
        job_failed = job_failure(kube.state.job)
        if job_failed and "TTL" in job_failed:
            return f"ended: {job_failed}"
        name = kube.pods.get(rank)
        if name is not None:  # the pod this rank's agent runs in, even if since replaced
            pod, exists = kube.state.pod_named(name)
            if not exists:
                why = (disruption(pod) if pod else None) or job_failed or \
                    f"its pod {name} was deleted"
                return f"ended: {why}"
        else:
            pod = kube.state.by_rank().get(rank)
        failure = pod_failure(pod) if pod is not None else (job_failed or "its pod is gone")
        if failure is None and job_failed:  # the pod watch may not have brought its end yet
            failure = self._failed_pod(kube) or job_failed
        return f"ended: {failure}" if failure else None

    def service_address(self, handle: ClusterHandle, name: str) -> tuple[str, int]:
        """Where this process reaches rank 0's service `name`: its pod IP and port, or, when
        the agents are reached through port-forward, a local listener opened on first use
        (kept, and closed with the agents' forwards)."""
        port = handle.services[name]
        kube = self._clusters.get(id(handle))
        if kube is None or kube.via != "port-forward":
            return handle.endpoints[0].host, port
        with self._service_lock:
            fwd = kube.service_forwards.get(name)
            if fwd is None:
                fwd = PortForward.open(self.kube, kube.namespace, kube.pods[0], port)
                kube.service_forwards[name] = fwd
                kube.forwards.append(fwd)
        return "127.0.0.1", fwd.local_port

    def _evicted(self, kube: _Kube) -> str | None:
        """Kueue evicted the Workload (preemption, PodsReady timeout): the Job is suspended
        again and its pods go. A pod may go before the Job's change arrives on its own
        watch, so give that a moment before the pod's end is read as the cause."""
        if not self._suspended(kube):
            pod_gone = any(pod_failure(p) or p["metadata"].get("deletionTimestamp")
                           for p in kube.state.pod_list()) or len(kube.state.pod_list()) < \
                len(kube.pods)
            if not pod_gone:
                return None
            end = time.monotonic() + 2.0
            while not self._suspended(kube) and time.monotonic() < end:
                kube.state.changed.wait(0.1)
            if not self._suspended(kube):
                return None
        assert kube.queue is not None
        end = time.monotonic() + 2.0  # its Stopped event trails the suspension a little
        why = eviction(kube.state.event_list(), kube.job, kube.queue.cluster_queue)
        while why is None and time.monotonic() < end:
            kube.state.changed.wait(0.1)
            why = eviction(kube.state.event_list(), kube.job, kube.queue.cluster_queue)
        why = why or "evicted by Kueue; variables on the agents are lost"
        if kube.on_preempt == "end":
            if not kube.ended:
                kube.ended = True  # the cluster ends: its Job leaves the queue
                self.kube.spawn(self._delete(self.kube, kube))
            why += "; the cluster ended (--on-preempt end)"
        else:
            why += "; it waits in the queue again and the next cell starts fresh agents " \
                "(--on-preempt requeue)"
        kube.evicted = why
        return why

    def requeued(self, handle: ClusterHandle) -> bool:
        """Whether Kueue evicted the cluster and it waits to be admitted again
        (``--on-preempt requeue``): :meth:`rejoin` then waits for fresh agents."""
        kube = self._clusters.get(id(handle))
        return kube is not None and kube.evicted is not None and kube.rejoin is not None \
            and kube.on_preempt == "requeue"

    def rejoin(self, handle: ClusterHandle, progress: Callable[[str], None] | None = None,
               cancelled: threading.Event | None = None) -> None:
        """Wait until a requeued cluster is admitted again and its fresh agents answer
        (same Job, Secret and keys); updates ``handle``'s endpoints and TTL. ``cancelled``
        (a shutdown while it waits) ends the wait with ClusterStartError."""
        kube = self._clusters[id(handle)]
        assert kube.rejoin is not None and kube.queue is not None
        request, key, curve_public, client_secret = kube.rejoin
        request = StartRequest(name=request.name, spec=request.spec,
                               notebook=request.notebook, progress=progress,
                               cancelled=cancelled)
        kube.close_forwards()
        kube.queue.admitted, kube.queue.position = False, None
        handle.endpoints = self._wait_ready(request, kube, key, curve_public, client_secret)
        kube.evicted = None
        job_start = kube.state.job.get("status", {}).get("startTime")
        handle.started = _parse_time(job_start) if job_start else time.time()
        handle.deadline = handle.started + request.spec.ttl

    def describe(self, handle: ClusterHandle, rank: int) -> dict[str, Any]:
        kube = self._clusters.get(id(handle))
        pod = kube.state.by_rank().get(rank) if kube else None
        if pod is None:
            return {"where": "-", "phase": "Pending"}
        status = pod.get("status", {})
        started = status.get("startTime")
        return {"where": pod["metadata"]["name"], "name": pod["metadata"]["name"],
                "node": pod.get("spec", {}).get("nodeName"), "phase": status.get("phase"),
                "ip": pod_ip(pod), "restarts": sum(c.get("restartCount", 0) for c in
                                                    status.get("containerStatuses") or []),
                "started": _parse_time(started) if started else None}

    def event_records(self, handle: ClusterHandle, n: int = 100) -> list[dict[str, Any]]:
        """The cluster's Kubernetes events as dicts (see docs/api.md), oldest first."""
        kube = self._clusters.get(id(handle))
        return kube.state.event_records(n) if kube else []

    def events(self, handle: ClusterHandle, n: int = 50) -> list[str]:
        kube = self._clusters.get(id(handle))
        return kube.state.recent_events(n) if kube else []

    def logs(self, handle: ClusterHandle, rank: int, tail: int = 200) -> str:
        kube = self._clusters.get(id(handle))
        pod = kube.state.by_rank().get(rank) if kube else None
        if kube is None or pod is None:
            return ""
        return self._read_log(kube, pod["metadata"]["name"], tail)

    def follow_logs(self, handle: ClusterHandle, rank: int, write: Callable[[str], None],
                    stop: threading.Event | None = None) -> None:
        kube = self._clusters.get(id(handle))
        pod = kube.state.by_rank().get(rank) if kube else None
        if kube is None or pod is None:
            return
        kl = self.kube
        chunks: queue.Queue[str] = queue.Queue()

        async def stream() -> None:
            resp = await kl.core.read_namespaced_pod_log(
                pod["metadata"]["name"], kube.namespace, container="agent", follow=True,
                _preload_content=False)
            try:
                async for chunk in resp.content.iter_any():
                    chunks.put(chunk.decode(errors="replace"))
            finally:
                resp.release()

        done = kl.spawn(stream())
        try:  # the caller's thread writes, so output lands in the caller's cell
            while not (done.done() and chunks.empty()):
                if stop is not None and stop.is_set():
                    return  # the client went away: cancelling closes the stream
                try:
                    write(chunks.get(timeout=0.2))
                except queue.Empty:
                    continue
        finally:
            done.cancel()

    def _read_log(self, kube: _Kube, pod_name: str, tail: int) -> str:
        kl = self.kube
        try:
            return kl.run(kl.core.read_namespaced_pod_log(
                pod_name, kube.namespace, container="agent", tail_lines=tail), timeout=15)
        except Exception as exc:  # noqa: BLE001 - a log is best effort
            if api_status(exc) == 400:
                return f"(no log yet: {api_message(exc)})"
            return f"(could not read the log: {api_message(exc)})"

    def extend(self, handle: ClusterHandle, deadline: float) -> None:
        kube = self._clusters[id(handle)]
        start = kube.state.job.get("status", {}).get("startTime")
        began = _parse_time(start) if start else handle.started
        seconds = max(1, math.ceil(deadline - began))
        kl = self.kube
        body = {"spec": {"activeDeadlineSeconds": seconds}}
        kl.run(retry(lambda: kl.batch.patch_namespaced_job(
            kube.job, kube.namespace, body, _content_type="application/merge-patch+json"),
            "extend"), timeout=30)

    def stop(self, handle: ClusterHandle, grace: float = 2.0) -> None:
        kube = self._clusters.pop(id(handle), None)
        if kube is not None:
            self._teardown(kube)

    def _teardown(self, kube: _Kube) -> None:
        self._unwatch(kube)
        kube.close_forwards()
        kl = self.kube
        try:
            kl.run(self._delete(kl, kube), timeout=60)
        except Exception as exc:
            log.error("could not delete cluster %s: %s", kube.job, api_message(exc))
            raise

    @staticmethod
    async def _delete(kl: KubeLoop, kube: _Kube) -> None:
        from kubernetes_asyncio import client

        opts = client.V1DeleteOptions(propagation_policy="Background")
        await retry(lambda: kl.batch.delete_namespaced_job(kube.job, kube.namespace, body=opts),
                    "delete Job", ok_status=(404,))
        for pod in [name_of(p) for p in kube.state.pod_list()]:  # at once, not when the garbage collector gets to it
            await retry(lambda pod=pod: kl.core.delete_namespaced_pod(pod, kube.namespace),
                        "delete pod", ok_status=(404,))
        await retry(lambda: kl.core.delete_namespaced_secret(kube.secret, kube.namespace),
                    "delete Secret", ok_status=(404,))


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def probe_pod_ip(ip: str, port: int, timeout: float = 1.0) -> str:
    """What a TCP connection to ``ip`` meets from here: "open" (an agent listens),
    "refused" (none yet, or a firewall's reject) or "unreachable" (a timeout, no route)."""
    import socket

    if not ip:
        return "unreachable"
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unreachable"


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
