"""Side-effect-free builders for the Kubernetes objects of one cluster, and their validation.

`render_cluster` turns a `PodSpec` into the manifests a backend creates, in order: the Secret
holding the cluster's signing key (and `-e KEY` values), then the Job. Nothing here talks to the
API server, so the output can be printed (`to_yaml`, like `kubectl --dry-run=client -o yaml`),
compared in tests, and checked against the API schema (`validate`) before anything is sent.

Secret values never appear in the Job: the agent reads them through `secretKeyRef`. `to_yaml`
redacts Secret data unless told otherwise, so printed manifests are safe to paste.
"""

from __future__ import annotations

import base64
import copy
import importlib.metadata
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from .spec import (
    PodSpec,
    SpecError,
    check_dns_label,
    check_dns_subdomain,
    check_label_value,
    dns_safe_name,
    label_value,
    parse_quantity,
)
from .templates import TemplateResolver, merge

__all__ = [
    "AGENT_CONTAINER",
    "AGENT_PORT",
    "DEFAULT_KUBE_VERSION",
    "LABEL_CLUSTER",
    "LABEL_FAMILY",
    "LABEL_GROUP",
    "LABEL_NOTEBOOK",
    "LABEL_USER",
    "MANAGED_BY",
    "REDACTED",
    "SERVICE_PORT_PREFIX",
    "ManifestError",
    "job_name",
    "make_network_policy",
    "make_owner_reference",
    "make_secret",
    "redact",
    "render_cluster",
    "render_rbac",
    "render_service_rbac",
    "secret_name",
    "services_of",
    "to_yaml",
    "validate",
]

AGENT_CONTAINER = "agent"
AGENT_PORT = 5555
DEFAULT_KUBE_VERSION = "1.33.0"
MANAGED_BY = "jupyter-kremote"
LABEL_CLUSTER = "kremote/cluster"
LABEL_USER = "kremote/user"
LABEL_NOTEBOOK = "kremote/notebook"
LABEL_GROUP = "kremote/group"
LABEL_FAMILY = "kremote/family"  # the cluster all groups belong to (the NetworkPolicy's peers)
#: Kueue: the LocalQueue a Job waits in, and its WorkloadPriorityClass
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: a queued Job's --on-preempt (requeue | end), read back when a restarted server adopts it
ON_PREEMPT_ANNOTATION = "kremote/on-preempt"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
REDACTED = "<redacted>"
#: a container port named ``kremote-<name>`` is rank 0's service ``<name>`` (TensorBoard, ...)
SERVICE_PORT_PREFIX = "kremote-"
KEY_ENV = "KREMOTE_KEY"
GPU_RESOURCE = "nvidia.com/gpu"
# The Job controller writes the index here; the agent's rank is read from it (downward API).
COMPLETION_INDEX_FIELD = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
# Indexed Job pods are named <job>-<index>-<random>, and their hostname <job>-<index> must stay
# a 63-character label: 52 leaves room for the index.
_JOB_NAME_MAX = 52
_SECRET_KEY_RE = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_LABEL_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PORT_NAME_RE = re.compile(r"[-a-z0-9]+")


class ManifestError(ValueError):
    """A manifest the API server would refuse; one line: kind, name, field path and reason."""


def job_name(cluster_id: str) -> str:
    """The Job's name for a cluster id; backends and the monitor must agree on it."""
    return dns_safe_name(MANAGED_BY, cluster_id, max_len=_JOB_NAME_MAX)


def secret_name(cluster_id: str) -> str:
    """The name of the Secret holding the cluster's key and secret env."""
    return dns_safe_name(MANAGED_BY, cluster_id, "key", max_len=63)


def services_of(job: Mapping[str, Any]) -> dict[str, int]:
    """The services a Job's pods declare: ports named ``kremote-<name>`` -> {name: port}.

    Example:
        >>> services_of({"spec": {"template": {"spec": {"containers": [{"name": "agent",
        ...     "ports": [{"name": "kremote-tb", "containerPort": 6006}]}]}}}})
        {'tb': 6006}
    """
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    found: dict[str, int] = {}
    for container in pod.get("containers") or []:
        for port in container.get("ports") or []:
            name = str(port.get("name") or "")
            if name.startswith(SERVICE_PORT_PREFIX) and isinstance(port.get("containerPort"), int):
                found.setdefault(name[len(SERVICE_PORT_PREFIX):], port["containerPort"])
    return found


def make_owner_reference(pod_name: str, pod_uid: str) -> dict[str, Any]:
    """An ownerReference to the notebook server's pod, so its deletion removes the cluster.

    blockOwnerDeletion stays false: setting it needs update rights on pods/finalizers, which the
    minimal Role does not grant.
    """
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": pod_name,
        "uid": pod_uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }


def make_secret(
    name: str,
    *,
    namespace: str,
    data: Mapping[str, str],
    labels: Mapping[str, str] | None = None,
    owner_reference: Mapping[str, Any] | None = None,
    redact: bool = False,
) -> dict[str, Any]:
    """An Opaque, immutable Secret; `redact` replaces every value with "<redacted>" for printing."""
    for key in data:
        if not _SECRET_KEY_RE.fullmatch(key):
            raise ValueError(f"secret key {key!r}: use letters, digits, '-', '_' or '.'")
    encoded = {
        key: REDACTED if redact else base64.b64encode(value.encode("utf-8")).decode("ascii")
        for key, value in data.items()
    }
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if owner_reference is not None:
        metadata["ownerReferences"] = [dict(owner_reference)]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "immutable": True,
        "data": encoded,
    }


def redact(docs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `docs` in which every Secret value reads "<redacted>"."""
    result = []
    for doc in docs:
        copied: dict[str, Any] = copy.deepcopy(dict(doc))
        if copied.get("kind") == "Secret":
            for field in ("data", "stringData"):
                if isinstance(copied.get(field), dict):
                    copied[field] = {key: REDACTED for key in copied[field]}
        result.append(copied)
    return result


def _package_version() -> str:
    """This package's version, for pinning `pip install` in pods (source checkouts included)."""
    try:
        return importlib.metadata.version("jupyter-kremote")
    except importlib.metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', _read_or_empty(pyproject), re.MULTILINE)
        return found[1] if found else "0"


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _as_text(key: str | bytes) -> str:
    if isinstance(key, bytes):
        try:
            return key.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(
                "key: must be ASCII text (e.g. a hex token): it reaches the "
                "agent as an environment variable"
            ) from None
    return key


def render_cluster(
    spec: PodSpec,
    *,
    cluster_id: str,
    user: str,
    notebook: str,
    resolver: TemplateResolver,
    namespace: str,
    key: str | bytes | None,
    kube_version: str = DEFAULT_KUBE_VERSION,
    owner_reference: Mapping[str, Any] | None = None,
    gpu_type_label: str = "nvidia.com/gpu.product",
    redact: bool = False,
    agent_secrets: Mapping[str, str] | None = None,
    variables: Mapping[str, Any] | None = None,
    family: str | None = None,
    curve_clients: Iterable[str] | None = None,
    owner_secrets: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Return ``[secret, job]`` for one cluster, validated against Kubernetes `kube_version`.

    The Job is layered in this order: the builtin (or admin-overridden) ``base``, the ``gpu``
    template when ``spec.gpu > 0``, each of ``spec.templates``, then the flags (image, cpu, mem,
    gpu, gpu_type as ``nodeSelector {gpu_type_label: gpu_type}``, env, ttl, count) and the
    cluster's identity (name, namespace, labels, ``KREMOTE_*`` env), which no template can
    override. ``spec.namespace`` wins over `namespace`, the backend's default.

    Pass `owner_reference` (see `make_owner_reference`) only when the notebook server's pod is
    in the same namespace: Kubernetes treats an owner in another namespace as gone and garbage
    collects the cluster at once.

    `family` names the cluster a group belongs to (label ``kremote/family``, default
    `cluster_id`): the groups of one family may reach each other (see `make_network_policy`).
    `curve_clients` are the CURVE public keys (Z85) the agents admit (``KREMOTE_CURVE_CLIENTS``,
    plain env: public keys are no secret). `owner_secrets` (``KREMOTE_*``) go to the Secret
    only, never to the pods: what the owner's side reads back (its CURVE client secret key).

    `key` signs the data plane; it and `agent_secrets` (more ``KREMOTE_*`` values, e.g. CURVE
    keys) and ``spec.secret_env`` go to the Secret. `key` may be None only with ``redact=True``.

    Template variables: ``name`` (the Job's), ``namespace``, ``cluster_id``, ``cluster_label``,
    ``user``, ``user_label``, ``notebook``, ``notebook_label``, ``secret_name``, ``count``,
    ``ttl`` (whole seconds), ``port``, ``version`` (for pip-install), ``gpu`` (only when > 0),
    ``image`` (when given), plus `variables` from the admin (``queue``,
    ``object_storage_secret``, ...), which cannot replace the ones listed here.

    Example:
        >>> secret, job = render_cluster(PodSpec(mem="8Gi", gpu=1), cluster_id="c1", user="ann",
        ...     notebook="a.ipynb", resolver=TemplateResolver(), namespace="ml", key="00ff")
        >>> job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        {'nvidia.com/gpu': 1, 'memory': '8Gi'}
    """
    spec.validate()
    if not isinstance(cluster_id, str) or not cluster_id:
        raise SpecError("cluster_id: expected a non-empty string")
    namespace = check_dns_label(spec.namespace or namespace, "namespace")
    if not key and not redact:
        raise ValueError("key: required unless redact=True (a dry run)")
    if owner_reference is not None:
        check_dns_subdomain(str(owner_reference.get("name", "")), "owner_reference name")
    agent_secrets = dict(agent_secrets or {})
    for name in agent_secrets:
        if not name.startswith("KREMOTE_") or name == KEY_ENV:
            raise ValueError(
                f"agent_secrets {name}: expected a KREMOTE_* name other than {KEY_ENV}"
            )

    the_job_name = job_name(cluster_id)
    the_secret_name = secret_name(cluster_id)
    labels = {
        "app.kubernetes.io/name": "jupyter-kremote-agent",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_CLUSTER: label_value(cluster_id),
        LABEL_USER: label_value(user),
        LABEL_NOTEBOOK: label_value(notebook),
        LABEL_GROUP: spec.group,
        LABEL_FAMILY: label_value(family or cluster_id),
    }
    ttl = max(1, math.ceil(spec.ttl))
    identity: dict[str, Any] = {
        "name": the_job_name,
        "namespace": namespace,
        "cluster_id": cluster_id,
        "cluster_label": labels[LABEL_CLUSTER],
        "user": user,
        "user_label": labels[LABEL_USER],
        "notebook": notebook,
        "notebook_label": labels[LABEL_NOTEBOOK],
        "secret_name": the_secret_name,
        "count": spec.count,
        "ttl": ttl,
        "port": AGENT_PORT,
        "gpu": spec.gpu or None,
        "image": spec.image,
    }
    context = {"version": _package_version(), **dict(variables or {}), **identity}

    job = resolver.load_fragment("base", context)
    names = [n for n in spec.templates if n != "base"]
    if spec.gpu > 0 and "gpu" not in names:
        names.insert(0, "gpu")
    for name in names:
        job = merge(job, resolver.load_fragment(name, context))

    flags = _flags_overlay(
        spec,
        cluster_id=cluster_id,
        namespace=namespace,
        job=the_job_name,
        secret=the_secret_name,
        ttl=ttl,
        labels=labels,
        annotations={"kremote/user-name": user, "kremote/notebook-path": notebook},
        owner_reference=owner_reference,
        agent_secrets=list(agent_secrets),
        gpu_type_label=gpu_type_label,
        curve_clients=list(curve_clients or ()),
    )
    job = merge(job, flags)
    job_labels = job["metadata"].get("labels") or {}
    if spec.priority and not job_labels.get(QUEUE_LABEL):
        raise SpecError(f"--priority {spec.priority}: priorities are Kueue's; name the queue "
                        "with --queue NAME (or -t kueue)")

    owner_secrets = dict(owner_secrets or {})
    for name in owner_secrets:
        if not name.startswith("KREMOTE_") or name == KEY_ENV or name in agent_secrets:
            raise ValueError(f"owner_secrets {name}: expected a KREMOTE_* name of its own")
    secret_data = {KEY_ENV: _as_text(key or ""), **agent_secrets, **owner_secrets,
                   **spec.secret_env}
    secret = make_secret(
        the_secret_name,
        namespace=namespace,
        data=secret_data,
        labels=labels,
        owner_reference=owner_reference,
        redact=redact,
    )
    for doc in (secret, job):
        validate(doc, kube_version)
    return [secret, job]


def _flags_overlay(
    spec: PodSpec,
    *,
    cluster_id: str,
    namespace: str,
    job: str,
    secret: str,
    ttl: int,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    owner_reference: Mapping[str, Any] | None,
    agent_secrets: list[str],
    gpu_type_label: str,
    curve_clients: list[str] | None = None,
) -> dict[str, Any]:
    """The last layer: the flags, and the identity the backend and the agent rely on.

    Env entries carry ``value: None`` / ``valueFrom: None`` so that, merged by name onto a
    template's entry of the same name, the other form is deleted rather than left beside it.
    """

    def secret_ref(env_name: str) -> dict[str, Any]:
        ref = {"secretKeyRef": {"name": secret, "key": env_name}}
        return {"name": env_name, "value": None, "valueFrom": ref}

    env: list[dict[str, Any]] = [
        {"name": "KREMOTE_PORT", "value": str(AGENT_PORT), "valueFrom": None},
        {"name": "KREMOTE_COUNT", "value": str(spec.count), "valueFrom": None},
        {"name": "KREMOTE_TTL", "value": str(ttl), "valueFrom": None},
        {"name": "KREMOTE_CLUSTER", "value": cluster_id, "valueFrom": None},
        {
            "name": "KREMOTE_RANK",
            "value": None,
            "valueFrom": {"fieldRef": {"fieldPath": COMPLETION_INDEX_FIELD}},
        },
        secret_ref(KEY_ENV),
        *(secret_ref(name) for name in agent_secrets),
        # Z85 has "$", "(" and ")": escaped, or the kubelet's $(VAR) expansion would turn a
        # key's "$$" into "$" (about one cluster in 200 would not start)
        *([{"name": "KREMOTE_CURVE_CLIENTS", "value": ",".join(curve_clients).replace("$", "$$"),
            "valueFrom": None}] if curve_clients else []),
        *({"name": k, "value": v, "valueFrom": None} for k, v in spec.env.items()),
        *(secret_ref(name) for name in spec.secret_env),
    ]
    container: dict[str, Any] = {"name": AGENT_CONTAINER, "env": env}
    if spec.image:
        container["image"] = spec.image
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    for resource, value in (("cpu", spec.cpu), ("memory", spec.mem)):
        if value is not None:
            limits[resource] = requests[resource] = value
    if spec.gpu > 0:
        limits[GPU_RESOURCE] = spec.gpu
    if limits:
        container["resources"] = {"limits": limits, **({"requests": requests} if requests else {})}
    pod_spec: dict[str, Any] = {"containers": [container]}
    if spec.gpu_type:
        pod_spec["nodeSelector"] = {gpu_type_label: spec.gpu_type}
    annotations = {**annotations}
    if spec.name:
        annotations["kremote/name"] = spec.name
    metadata: dict[str, Any] = {
        "name": job,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": annotations,
    }
    if owner_reference is not None:
        metadata["ownerReferences"] = [dict(owner_reference)]
    job_spec: dict[str, Any] = {}
    if spec.queue:  # Kueue admits the Job: created suspended, as Kueue's webhook would
        metadata["labels"][QUEUE_LABEL] = spec.queue
        metadata["annotations"][ON_PREEMPT_ANNOTATION] = spec.on_preempt  # for adoption
        job_spec["suspend"] = True
    if spec.priority:
        metadata["labels"][PRIORITY_LABEL] = spec.priority
    flags = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "parallelism": spec.count,
            "completions": spec.count,
            "activeDeadlineSeconds": ttl,
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
            **job_spec,
        },
    }
    return flags


def make_network_policy(
    job: Mapping[str, Any],
    *,
    owner_selector: Mapping[str, str] | None,
    holder_selector: Mapping[str, str] | None = None,
    kube_version: str = DEFAULT_KUBE_VERSION,
) -> dict[str, Any]:
    """The NetworkPolicy of one rendered Job: ingress to its pods only from its owner and peers
    (and from `holder_selector`'s pods: the hub's kremote service, which holds the cluster).

    Peers are the pods of every group of the same family (same user, notebook and family
    labels): ranks talk torch.distributed / NCCL on ports of their own choosing, so no port
    is named. `owner_selector` selects the owner's notebook pod (z2jh labels it
    ``hub.jupyter.org/username=<name>``); None admits the peers only. Egress is left alone.
    Named like the Job and, once the Job exists, owned by it (the backend adds that
    ownerReference), so it goes with the cluster.

    Example:
        >>> secret, job = render_cluster(PodSpec(), cluster_id="c1", user="ann",
        ...     notebook="a.ipynb", resolver=TemplateResolver(), namespace="ml", key="00ff")
        >>> pol = make_network_policy(job, owner_selector={"hub.jupyter.org/username": "ann"})
        >>> pol["spec"]["ingress"][0]["from"][0]["podSelector"]
        {'matchLabels': {'hub.jupyter.org/username': 'ann'}}
    """
    meta = job["metadata"]
    labels = dict(meta["labels"])
    peers = {k: labels[k] for k in ("app.kubernetes.io/managed-by", LABEL_USER, LABEL_NOTEBOOK,
                                    LABEL_FAMILY)}
    sources: list[dict[str, Any]] = []
    if owner_selector:
        sources.append({"podSelector": {"matchLabels": dict(owner_selector)}})
    sources.append({"podSelector": {"matchLabels": peers}})
    if holder_selector:
        sources.append({"podSelector": {"matchLabels": dict(holder_selector)}})
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": {LABEL_CLUSTER: labels[LABEL_CLUSTER],
                                            "app.kubernetes.io/managed-by": MANAGED_BY}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": sources}],
        },
    }
    validate(policy, kube_version)
    return policy


def parse_selector(text: str, option: str = "selector") -> dict[str, str]:
    """``k=v,k2=v2`` as matchLabels; one-line error naming `option` otherwise."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        problem = _label_key_problem(key) if eq else "expected key=value"
        if not problem:
            try:
                check_label_value(value, "")
            except SpecError as exc:
                problem = str(exc).split(": ", 1)[-1]
        if problem:
            raise ValueError(f"{option} {part!r}: {problem}; e.g. hub.jupyter.org/username=ann")
        out[key] = value
    return out


def render_service_rbac(
    *,
    namespace: str,
    service_account: str = "jupyter-kremote-service",
    kueue: bool = False,
    resolver: TemplateResolver | None = None,
    kube_version: str = DEFAULT_KUBE_VERSION,
) -> list[dict[str, Any]]:
    """The hub's kremote service's ServiceAccount, Role and RoleBinding (``service-rbac``),
    plus the Kueue Role and binding with `kueue`; validated for `kube_version`.

    Example:
        >>> [d["kind"] for d in render_service_rbac(namespace="jhub")]
        ['ServiceAccount', 'Role', 'RoleBinding']
    """
    check_dns_label(namespace, "namespace")
    check_dns_subdomain(service_account, "service account")
    docs = (resolver or TemplateResolver()).load(
        "service-rbac", {"namespace": namespace, "service_account": service_account})
    docs = [d for d in docs if kueue or
            (d["metadata"].get("labels") or {}).get("kremote/rbac-part") != "kueue"]
    for doc in docs:
        validate(doc, kube_version)
    return docs


def render_rbac(
    *,
    namespace: str,
    resolver: TemplateResolver | None = None,
    service_account: str = "jupyter-kremote",
    kube_version: str = DEFAULT_KUBE_VERSION,
) -> list[dict[str, Any]]:
    """The ServiceAccount, Role and RoleBinding of the ``rbac`` template for `namespace`."""
    check_dns_label(namespace, "namespace")
    check_dns_subdomain(service_account, "service account")
    docs = (resolver or TemplateResolver()).load(
        "rbac", {"namespace": namespace, "service_account": service_account}
    )
    for doc in docs:
        validate(doc, kube_version)
    return docs


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            text += f".{part}" if text else str(part)
        else:
            text += f"[{str(part)!r}]"
    return text or "(document)"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate(doc: Mapping[str, Any], kube_version: str = DEFAULT_KUBE_VERSION) -> None:
    """Refuse `doc` with `ManifestError` where the API server would, before anything is sent.

    The strict JSON schema of `kube_version` (unknown fields, wrong types) comes first, then
    what the schema cannot express: object names, label keys and values, quantities in
    resources and emptyDir size limits, and container images (required, but not in the schema).
    """
    import kubernetes_validate  # lazy: loading it costs a noticeable fraction of a second

    kind = str(doc.get("kind", "object")) if isinstance(doc, Mapping) else "object"
    metadata = doc.get("metadata") if isinstance(doc, Mapping) else None
    name = str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
    prefix = f"{kind} {name}".rstrip()
    try:
        kubernetes_validate.validate(dict(doc), kube_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        raise ManifestError(
            f"{prefix}: {_path(exc.absolute_path)}: {_one_line(exc.message)}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise ManifestError(f"{prefix}: {exc.message}") from None
    except kubernetes_validate.VersionNotSupportedError as exc:
        raise ManifestError(f"{prefix}: {exc.message}") from None
    except (KeyError, TypeError) as exc:
        raise ManifestError(f"{prefix}: missing or malformed apiVersion/kind: {exc}") from None
    for path, reason in _semantic_problems(doc):
        raise ManifestError(f"{prefix}: {_path(path)}: {reason}")


def _semantic_problems(doc: Mapping[str, Any]) -> Iterable[tuple[list[Any], str]]:
    def check(check_fn: Any, value: Any, path: list[Any]) -> Iterable[tuple[list[Any], str]]:
        try:
            check_fn(value, "")
        except SpecError as exc:
            yield path, f"{value!r} is not valid: {str(exc).split(': ', 1)[1]}"

    metadata = doc.get("metadata") or {}
    if "name" in metadata:
        limit = check_dns_label if doc.get("kind") == "Job" else check_dns_subdomain
        yield from check(limit, metadata["name"], ["metadata", "name"])
    if "namespace" in metadata:
        yield from check(check_dns_label, metadata["namespace"], ["metadata", "namespace"])
    for path, node in _walk(doc, []):
        if path and path[-1] in ("labels", "matchLabels") and isinstance(node, Mapping):
            for key, value in node.items():
                reason = _label_key_problem(str(key))
                if reason:
                    yield [*path, key], f"label key {key!r} is not valid: {reason}"
                yield from check(check_label_value, value, [*path, key])
        is_resources = len(path) >= 2 and path[-2] == "resources"
        if is_resources and path[-1] in ("requests", "limits") and isinstance(node, Mapping):
            for resource, value in node.items():
                yield from _quantity_problem(value, [*path, resource])
        if path and path[-1] == "emptyDir" and isinstance(node, Mapping) and "sizeLimit" in node:
            yield from _quantity_problem(node["sizeLimit"], [*path, "sizeLimit"])
        if path and path[-1] in ("containers", "initContainers") and isinstance(node, list):
            for index, container in enumerate(node):
                if isinstance(container, Mapping) and not container.get("image"):
                    yield [*path, index, "image"], "required: every container needs an image"
                ports = container.get("ports") if isinstance(container, Mapping) else None
                for p_index, port in enumerate(ports or []):
                    name = port.get("name") if isinstance(port, Mapping) else None
                    reason = _port_name_problem(str(name)) if name is not None else ""
                    if reason:
                        yield [*path, index, "ports", p_index, "name"], (
                            f"{name!r} is not valid: {reason}")


def _walk(node: Any, path: list[Any]) -> Iterable[tuple[list[Any], Any]]:
    yield path, node
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _walk(value, [*path, key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, [*path, index])


def _quantity_problem(value: Any, path: list[Any]) -> Iterable[tuple[list[Any], str]]:
    try:
        amount = parse_quantity(value)
    except SpecError:
        yield (
            path,
            (
                f"{value!r} is not valid: not a Kubernetes quantity; use a number with an "
                "optional suffix such as 500m, 512Mi, 8Gi or 4G"
            ),
        )
        return
    if amount < 0:
        yield path, f"{value!r} is not valid: must not be negative"


def _port_name_problem(name: str) -> str:
    """Why Kubernetes refuses a port name (IANA_SVC_NAME: at most 15 characters...)."""
    reasons = []
    if len(name) > 15:
        reasons.append("must be no more than 15 characters")
    if not _PORT_NAME_RE.fullmatch(name):
        reasons.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        reasons.append("must contain at least one letter (a-z)")
    if "--" in name:
        reasons.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        reasons.append("must not begin or end with a hyphen")
    if reasons and name.startswith(SERVICE_PORT_PREFIX):
        reasons.append(f"a service port is {SERVICE_PORT_PREFIX}<name>, <name> at most "
                       f"{15 - len(SERVICE_PORT_PREFIX)} characters")
    return "; ".join(reasons)


def _label_key_problem(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix:
        try:
            check_dns_subdomain(prefix, "")
        except SpecError:
            return "the prefix before '/' must be a DNS subdomain"
    if len(name) > 63 or not _LABEL_NAME_RE.fullmatch(name):
        return "the name must be at most 63 letters, digits, '-', '_' or '.'"
    return ""


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """YAML as kubectl prints it: keys in insertion order, scripts as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def to_yaml(docs: Iterable[Mapping[str, Any]], *, redact_secrets: bool = True) -> str:
    """Multi-document YAML like ``kubectl --dry-run=client -o yaml``; Secrets redacted by default."""
    items = redact(docs) if redact_secrets else [dict(doc) for doc in docs]
    text: str = yaml.dump_all(
        items,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
        allow_unicode=True,
        width=100,
    )
    return text
