"""``jupyter kremote doctor`` / ``%remote doctor``: can a cluster start here, and if not, why.

With the credentials the product itself uses (the kubeconfig or the in-cluster service
account), each check asks the API one question and gives one line: what it found and, when
something is wrong, the fix. Nothing is created (the namespace check is a server-side dry
run). Checks that need rights the shipped Role does not give (nodes, namespace labels are
cluster-scoped) say so instead of failing.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

from .backends.kube_api import get_json
from .manifests import AGENT_PORT, MANAGED_BY, render_rbac
from .session import ClusterOptions

OK, WARN, FAIL = "ok", "warn", "FAIL"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok, warn, FAIL
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> {self.fix}" if self.fix and self.status != OK else ""
        return f"[{self.status:>4}] {self.name}: {self.detail}{fix}"


def run_doctor(name: str, options: ClusterOptions) -> list[Check]:
    """Every check for a cluster started with ``options`` (as ``%%remote`` would)."""
    from .backends import require_kubernetes

    require_kubernetes("kubernetes_validate")
    from .backends.base import StartRequest
    from .backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend()
    try:
        kl = backend.kube
    except Exception as exc:  # noqa: BLE001 - no kubeconfig, bad context...
        return [Check("API reachable", FAIL, f"no Kubernetes configuration: {exc}",
                      "set KREMOTE_KUBECONFIG or KUBECONFIG, or run in a pod")]
    ns = options.namespace or backend.settings.namespace or kl.namespace
    job = backend.render(StartRequest(name=name, spec=options.to_spec()),
                         key=None, redact=True, namespace=ns)[1]
    return kl.run(_checks(kl, ns, job, options, backend.settings.gpu_type_label), timeout=120)


async def _checks(kl: Any, ns: str, job: dict[str, Any], options: ClusterOptions,
                  gpu_label: str) -> list[Check]:
    out = [await _api(kl)]
    if out[0].status == FAIL:
        return out
    out.append(await _namespace(kl, ns))
    if out[-1].detail.endswith("does not exist"):
        return out  # nothing else can be asked of a namespace that is not there
    out.append(await _rights(kl, ns))
    out.append(await _pod_security(kl, ns, job))
    out.append(await _quota(kl, ns, job))
    out.append(await _network_policies(kl, ns, job))
    out.append(await _nodes(kl, job, options, gpu_label))
    out.append(await _kueue(kl, ns, job))
    out.append(await _pod_ips(kl, ns))
    return out


# -- helpers ----------------------------------------------------------------------------------
def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def _labels(job: dict[str, Any]) -> dict[str, str]:
    return job["spec"]["template"]["metadata"].get("labels") or {}


def _requests(job: dict[str, Any]) -> dict[str, float]:
    """What the whole cluster requests: pods, cpu (cores), memory (bytes), GPUs."""
    from .spec import parse_quantity

    count = job["spec"].get("parallelism") or 1
    total = {"pods": float(count), "cpu": 0.0, "memory": 0.0, "nvidia.com/gpu": 0.0}
    for c in _pod(job)["containers"]:
        res = c.get("resources") or {}
        req = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        for key in ("cpu", "memory", "nvidia.com/gpu"):
            if key in req:
                total[key] += float(parse_quantity(str(req[key]))) * count
    return total


# -- the checks ---------------------------------------------------------------------------------
async def _api(kl: Any) -> Check:
    status, body = await get_json(kl, "/version")
    host = kl.api.configuration.host
    if status != 200:
        return Check("API reachable", FAIL, f"{host} answered {status or 'nothing'}: {body}",
                     "check the kubeconfig's server and credentials (kubectl version)")
    return Check("API reachable", OK, f"{host} (Kubernetes {body.get('gitVersion', '?')})")


async def _namespace(kl: Any, ns: str) -> Check:
    from .backends.kube_api import api_message, api_status

    probe = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "jupyter-kremote-doctor", "namespace": ns}}
    try:  # a server-side dry run: nothing is stored
        await kl.core.create_namespaced_secret(ns, probe, dry_run="All")
    except Exception as exc:  # noqa: BLE001
        status = api_status(exc)
        if status == 404:
            return Check("namespace", FAIL, f"{ns!r} does not exist",
                         f"kubectl create namespace {ns}, or pass --namespace")
        if status == 403:  # authorization comes first: missing, or not ours to use
            return Check("namespace", FAIL, f"{ns!r}: not allowed to create there "
                         f"({api_message(exc)})", "use your own namespace (--namespace), or "
                         "ask an admin to create it and bind the shipped Role there")
        if status != 409:  # 409: a Secret of that name exists, so the namespace does too
            return Check("namespace", WARN, f"{ns!r}: could not tell ({api_message(exc)})")
    return Check("namespace", OK, f"{ns!r} exists")


async def _rights(kl: Any, ns: str) -> Check:
    from kubernetes_asyncio import client

    authz = client.AuthorizationV1Api(kl.api)
    role = next(d for d in render_rbac(namespace=ns) if d["kind"] == "Role")
    asked = [(verb, group, resource) for rule in role["rules"] for group in rule["apiGroups"]
             for resource in rule["resources"] for verb in rule["verbs"]]

    async def allowed(verb: str, group: str, resource: str) -> bool:
        plural, _, sub = resource.partition("/")
        review = await authz.create_self_subject_access_review({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "group": group,
                                            "resource": plural, "subresource": sub or None}}})
        return bool(review.status.allowed)

    answers = await asyncio.gather(*(allowed(*a) for a in asked))
    missing = [f"{verb} {resource}" for (verb, _, resource), ok in zip(asked, answers)
               if not ok]
    if missing:
        return Check("rights", FAIL, f"not allowed in {ns!r}: {', '.join(missing)}",
                     "an admin applies the shipped Role (jupyter kremote rbac, templates/"
                     "rbac.yaml) in this namespace and binds it to your ServiceAccount")
    count = sum(len(r["verbs"]) * len(r["resources"]) for r in role["rules"])
    return Check("rights", OK, f"all {count} verbs of the shipped Role are allowed in {ns!r}")


#: PodSecurity levels, strictest last
LEVELS = ("privileged", "baseline", "restricted")


def pod_security_violations(pod: dict[str, Any], level: str) -> list[str]:
    """What in ``pod`` (a pod spec) the PodSecurity ``level`` forbids (the main rules)."""
    if level not in ("baseline", "restricted"):
        return []
    out = []
    psc = pod.get("securityContext") or {}
    containers = [*pod.get("containers", []), *pod.get("initContainers", [])]
    for c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"container {c['name']} is privileged")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if level == "baseline" and added - {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER",
                                            "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                                            "SETFCAP", "SETGID", "SETPCAP", "SETUID",
                                            "SYS_CHROOT"}:
            out.append(f"container {c['name']} adds capabilities {sorted(added)}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"container {c['name']} uses a hostPort")
        if level == "restricted":
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(f"container {c['name']}: allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                out.append(f"container {c['name']}: capabilities must drop ALL")
            if added - {"NET_BIND_SERVICE"}:
                out.append(f"container {c['name']} adds capabilities {sorted(added)}")
            if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot"))):
                out.append(f"container {c['name']}: runAsNonRoot must be true")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                out.append(f"container {c['name']}: seccompProfile must be RuntimeDefault")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{key} is true")
    if any("hostPath" in v for v in pod.get("volumes") or []):
        out.append("a hostPath volume")
    return out


async def _pod_security(kl: Any, ns: str, job: dict[str, Any]) -> Check:
    status, body = await get_json(kl, f"/api/v1/namespaces/{ns}")
    if status != 200:
        return Check("PodSecurity", WARN, f"cannot read namespace {ns!r}'s labels ({status}); "
                     "the rendered pod meets \"restricted\"" if not pod_security_violations(
                         _pod(job), "restricted") else f"cannot read namespace {ns!r} ({status})")
    labels = body.get("metadata", {}).get("labels") or {}
    level = labels.get("pod-security.kubernetes.io/enforce", "privileged")
    bad = pod_security_violations(_pod(job), level)
    if bad:
        return Check("PodSecurity", FAIL, f"{ns!r} enforces {level!r}; the pod would be "
                     f"refused: {'; '.join(bad)}", "drop the template or flag that asks for "
                     "it, or use a namespace with a laxer pod-security.kubernetes.io/enforce")
    return Check("PodSecurity", OK, f"{ns!r} enforces {level!r}; the rendered pod meets it")


async def _quota(kl: Any, ns: str, job: dict[str, Any]) -> Check:
    from .spec import parse_quantity

    status, body = await get_json(kl, f"/api/v1/namespaces/{ns}/resourcequotas")
    if status != 200:
        return Check("ResourceQuota", WARN, f"cannot list ResourceQuotas ({status}: {body})",
                     "grant list on resourcequotas (the shipped Role has it)")
    need = _requests(job)
    keys = {"pods": "pods", "requests.cpu": "cpu", "cpu": "cpu", "requests.memory": "memory",
            "memory": "memory", "requests.nvidia.com/gpu": "nvidia.com/gpu",
            "limits.cpu": "cpu", "limits.memory": "memory"}
    short = []
    for q in body.get("items", []):
        hard = q.get("spec", {}).get("hard") or {}
        used = q.get("status", {}).get("used") or {}
        for key, value in hard.items():
            if key not in keys:
                continue
            left = float(parse_quantity(str(value))) - float(parse_quantity(str(used.get(key,
                                                                                      "0"))))
            if need[keys[key]] > left:
                short.append(f"{q['metadata']['name']}: {key} needs {need[keys[key]]:g}, "
                             f"{max(left, 0):g} left of {value}")
    if short:
        return Check("ResourceQuota", FAIL, "; ".join(short),
                     "ask for less (-n, --cpu, --mem, --gpu), end other clusters, or ask an "
                     "admin for a larger quota")
    n = len(body.get("items", []))
    return Check("ResourceQuota", OK, f"{n} quota(s); room for this request" if n else
                 "no ResourceQuota in the namespace")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or \
                (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or \
                (op == "DoesNotExist" and key in labels):
            return False
    return True


async def _network_policies(kl: Any, ns: str, job: dict[str, Any]) -> Check:
    status, body = await get_json(kl, f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies")
    if status != 200:
        return Check("NetworkPolicy", WARN, f"cannot list NetworkPolicies ({status}: {body})",
                     "grant list on networkpolicies (the shipped Role has it)")
    labels = _labels(job)
    blocking = []
    for pol in body.get("items", []):
        spec = pol.get("spec", {})
        types = spec.get("policyTypes") or ["Ingress"]
        if "Ingress" not in types or not _selects(spec.get("podSelector") or {}, labels):
            continue
        if not any(_admits_agent_port(rule) for rule in spec.get("ingress") or []):
            blocking.append(pol["metadata"]["name"])
    if blocking:
        return Check("NetworkPolicy", FAIL, f"{', '.join(blocking)} select(s) the agent pods "
                     f"and admit nothing on port {AGENT_PORT}-{AGENT_PORT + 1}: the kernel "
                     "cannot reach the agents", "add an ingress rule from the notebook's pod "
                     f"to ports {AGENT_PORT}-{AGENT_PORT + 1} (docs: NetworkPolicies)")
    return Check("NetworkPolicy", OK, "none drops the data plane to the agent pods")


def _admits_agent_port(rule: dict[str, Any]) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        port, end = p.get("port"), p.get("endPort")
        if port is None or port == "agent" or (
                isinstance(port, int) and port <= AGENT_PORT <= (end or port)):
            return True
    return False


async def _nodes(kl: Any, job: dict[str, Any], options: ClusterOptions,
                 gpu_label: str) -> Check:
    from .spec import parse_quantity

    status, body = await get_json(kl, "/api/v1/nodes")
    if status != 200:
        return Check("nodes", WARN, f"cannot list nodes ({status}); nodes are cluster-scoped, "
                     "so the shipped Role cannot read them", "kubectl get nodes as an admin "
                     "to see GPU types and capacity")
    need = _requests(job)
    per_pod = {k: v / need["pods"] for k, v in need.items() if k != "pods"}
    fits, gpu_nodes = [], 0
    for node in body.get("items", []):
        labels = node.get("metadata", {}).get("labels") or {}
        alloc = node.get("status", {}).get("allocatable") or {}
        if options.gpu_type and labels.get(gpu_label) != options.gpu_type:
            continue
        if float(parse_quantity(str(alloc.get("nvidia.com/gpu", "0")))) > 0:
            gpu_nodes += 1
        if all(float(parse_quantity(str(alloc.get(k, "0")))) >= v
               for k, v in per_pod.items() if v):
            fits.append(node["metadata"]["name"])
    what = (f"{options.gpu} GPU(s)" + (f" of type {options.gpu_type}" if options.gpu_type
                                       else "")) if options.gpu else "the pod"
    if not fits:
        return Check("nodes", FAIL, f"no node can hold {what} "
                     f"(cpu {per_pod['cpu']:g}, memory {per_pod['memory'] / 2**30:.1f} GiB)",
                     f"ask for less, or for a GPU type the nodes have ({gpu_label})")
    return Check("nodes", OK, f"{len(fits)} node(s) can hold {what}: {', '.join(fits[:5])}")


async def _kueue(kl: Any, ns: str, job: dict[str, Any]) -> Check:
    queue = (job["metadata"].get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    status, _ = await get_json(kl, "/apis/kueue.x-k8s.io/v1beta1")
    installed = status == 200
    if queue is None:
        return Check("Kueue", OK, ("installed" if installed else "not installed") +
                     "; not asked for (-t kueue)")
    if not installed:
        return Check("Kueue", FAIL, "-t kueue asks for Kueue, but its CRDs are not installed",
                     "install Kueue, or drop -t kueue")
    status, body = await get_json(kl, f"/apis/kueue.x-k8s.io/v1beta1/namespaces/{ns}/"
                                  f"localqueues/{queue}")
    if status == 404:
        return Check("Kueue", FAIL, f"no LocalQueue {queue!r} in {ns!r}",
                     "an admin creates it (kubectl get localqueues -A), or set the queue "
                     "the kueue template names")
    if status != 200:
        return Check("Kueue", WARN, f"cannot read LocalQueue {queue!r} ({status}: {body})")
    return Check("Kueue", OK, f"LocalQueue {queue!r} in {ns!r} feeds ClusterQueue "
                 f"{body.get('spec', {}).get('clusterQueue', '?')!r}")


async def _pod_ips(kl: Any, ns: str) -> Check:
    status, body = await get_json(kl, f"/api/v1/namespaces/{ns}/pods",
                              labelSelector=f"app.kubernetes.io/managed-by={MANAGED_BY}")
    pods = [p for p in (body.get("items", []) if status == 200 else [])
            if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")]
    if not pods:
        return Check("pod IPs", WARN, "no running agent pod to try a connection to",
                     "run doctor again while a cluster runs")
    ip = pods[0]["status"]["podIP"]
    try:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        with socket.socket(family) as s:
            s.settimeout(2)
            s.connect((ip, AGENT_PORT))
    except OSError as exc:
        return Check("pod IPs", WARN, f"pod IP {ip}:{AGENT_PORT} not reachable from here "
                     f"({exc.strerror or exc})", "nothing to do: %%remote reaches the agents "
                     "through the API server's port-forward then (--connect port-forward)")
    return Check("pod IPs", OK, f"pod IP {ip}:{AGENT_PORT} reachable from here")


def report(checks: list[Check]) -> str:
    failed = sum(c.status == FAIL for c in checks)
    tail = f"{failed} check(s) failed" if failed else "a cluster can start here"
    return "\n".join([c.line() for c in checks] + [tail]) + "\n"
