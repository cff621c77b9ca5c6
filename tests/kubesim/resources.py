"""The resource types the emulator serves, and the discovery documents that describe them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it lives (group/version/plural) and what it holds (kind)."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    # The REST default when DeleteOptions names no policy ("Orphan" for batch/v1 Jobs).
    default_propagation: str = "Background"
    # Verbs discovery lists; ("create",) for reviews, which are answered and never stored.
    verbs: tuple[str, ...] = ALL_VERBS
    # Where objects live in the store: two API groups may serve one storage (core/v1 and
    # events.k8s.io/v1 Events), as in the real API server.
    storage: str = ""

    @property
    def bucket(self) -> str:
        return self.storage or self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


PODS = ResourceType("", "v1", "pods", "Pod", "pod", short_names=("po",), categories=("all",),
                    subresources=("status", "log", "eviction", "portforward"))
SECRETS = ResourceType("", "v1", "secrets", "Secret", "secret")
CONFIGMAPS = ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", short_names=("cm",))
EVENTS = ResourceType("", "v1", "events", "Event", "event", short_names=("ev",))
NAMESPACES = ResourceType("", "v1", "namespaces", "Namespace", "namespace", namespaced=False,
                          short_names=("ns",), subresources=("status",))
NODES = ResourceType("", "v1", "nodes", "Node", "node", namespaced=False, short_names=("no",),
                     subresources=("status",))
JOBS = ResourceType("batch", "v1", "jobs", "Job", "job", categories=("all",),
                    subresources=("status",), default_propagation="Orphan")
SERVICEACCOUNTS = ResourceType("", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount",
                               short_names=("sa",), subresources=("token",))
RESOURCEQUOTAS = ResourceType("", "v1", "resourcequotas", "ResourceQuota", "resourcequota",
                              short_names=("quota",), subresources=("status",))
EVENTS_V1 = ResourceType("events.k8s.io", "v1", "events", "Event", "event", short_names=("ev",),
                         storage="events")
_RBAC = "rbac.authorization.k8s.io"
ROLES = ResourceType(_RBAC, "v1", "roles", "Role", "role")
CLUSTERROLES = ResourceType(_RBAC, "v1", "clusterroles", "ClusterRole", "clusterrole",
                            namespaced=False)
ROLEBINDINGS = ResourceType(_RBAC, "v1", "rolebindings", "RoleBinding", "rolebinding")
CLUSTERROLEBINDINGS = ResourceType(_RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding",
                                   "clusterrolebinding", namespaced=False)
_AUTHZ = "authorization.k8s.io"
SELF_ACCESS_REVIEWS = ResourceType(_AUTHZ, "v1", "selfsubjectaccessreviews",
                                   "SelfSubjectAccessReview", "", namespaced=False,
                                   verbs=("create",))
SELF_RULES_REVIEWS = ResourceType(_AUTHZ, "v1", "selfsubjectrulesreviews",
                                  "SelfSubjectRulesReview", "", namespaced=False,
                                  verbs=("create",))
SELF_SUBJECT_REVIEWS = ResourceType("authentication.k8s.io", "v1", "selfsubjectreviews",
                                    "SelfSubjectReview", "", namespaced=False,
                                    verbs=("create",))
ACCESS_REVIEWS = ResourceType(_AUTHZ, "v1", "subjectaccessreviews", "SubjectAccessReview", "",
                              namespaced=False, verbs=("create",))
REVIEWS = (SELF_ACCESS_REVIEWS, SELF_RULES_REVIEWS, SELF_SUBJECT_REVIEWS, ACCESS_REVIEWS)
# Stored without behaviour, for checks that read them (`jupyter kremote doctor`).
NETWORKPOLICIES = ResourceType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy",
                               "networkpolicy", short_names=("netpol",))
CRDS = ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                    "CustomResourceDefinition", "customresourcedefinition", namespaced=False,
                    short_names=("crd", "crds"), subresources=("status",))
KUEUE = "kueue.x-k8s.io"  # served only with KubeSimConfig.kueue (its CRDs installed)
LOCALQUEUES = ResourceType(KUEUE, "v1beta1", "localqueues", "LocalQueue", "localqueue",
                           short_names=("queue", "queues", "lq"), subresources=("status",))
CLUSTERQUEUES = ResourceType(KUEUE, "v1beta1", "clusterqueues", "ClusterQueue", "clusterqueue",
                             namespaced=False, short_names=("cq",), subresources=("status",))
WORKLOADS = ResourceType(KUEUE, "v1beta1", "workloads", "Workload", "workload",
                         short_names=("wl",), subresources=("status",))
WORKLOADPRIORITYCLASSES = ResourceType(KUEUE, "v1beta1", "workloadpriorityclasses",
                                       "WorkloadPriorityClass", "workloadpriorityclass",
                                       namespaced=False)
RESOURCEFLAVORS = ResourceType(KUEUE, "v1beta1", "resourceflavors", "ResourceFlavor",
                               "resourceflavor", namespaced=False, short_names=("flavor", "rf"))
KUEUE_TYPES = (LOCALQUEUES, CLUSTERQUEUES, WORKLOADS, WORKLOADPRIORITYCLASSES, RESOURCEFLAVORS)
# Kueue's visibility API (an aggregated API server of Kueue's): only the pendingworkloads
# subresources are answered.
VISIBILITY = "visibility.kueue.x-k8s.io"
VIS_CLUSTERQUEUES = ResourceType(VISIBILITY, "v1beta1", "clusterqueues", "ClusterQueue",
                                 "clusterqueue", namespaced=False,
                                 subresources=("pendingworkloads",), verbs=("get",))
VIS_LOCALQUEUES = ResourceType(VISIBILITY, "v1beta1", "localqueues", "LocalQueue", "localqueue",
                               subresources=("pendingworkloads",), verbs=("get",))
VISIBILITY_TYPES = (VIS_CLUSTERQUEUES, VIS_LOCALQUEUES)
KUEUE_GROUPS = (KUEUE, VISIBILITY)  # absent until Kueue is "installed"
# Subresources served by another group/kind (discovery names them so, and kubectl drain looks
# for pods/eviction of kind Eviction in group policy).
SUBRESOURCE_KINDS = {"eviction": ("policy", "v1", "Eviction", ["create"]),
                     "token": ("authentication.k8s.io", "v1", "TokenRequest", ["create"]),
                     "log": ("", "", "Pod", ["get"]),
                     "portforward": ("", "", "PodPortForwardOptions", ["create", "get"]),
                     "pendingworkloads": (VISIBILITY, "v1beta1", "PendingWorkloadsSummary",
                                          ["get"])}

ALL: tuple[ResourceType, ...] = (PODS, SECRETS, CONFIGMAPS, EVENTS, NAMESPACES, NODES, JOBS,
                                 SERVICEACCOUNTS, RESOURCEQUOTAS, EVENTS_V1, ROLES, CLUSTERROLES,
                                 ROLEBINDINGS, CLUSTERROLEBINDINGS, *REVIEWS, NETWORKPOLICIES,
                                 CRDS, *KUEUE_TYPES, *VISIBILITY_TYPES)
# What the store holds (EVENTS_V1 is a view of EVENTS; reviews are never stored).
STORED: tuple[ResourceType, ...] = tuple(rt for rt in ALL
                                         if rt is not EVENTS_V1 and rt not in REVIEWS
                                         and rt not in VISIBILITY_TYPES)
_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in ALL}
_BY_KIND = {(rt.api_version, rt.kind): rt for rt in ALL if rt not in VISIBILITY_TYPES}
GROUPS = {"batch": ("v1",), "events.k8s.io": ("v1",), _RBAC: ("v1",), _AUTHZ: ("v1",),
          "authentication.k8s.io": ("v1",), "networking.k8s.io": ("v1",),
          "apiextensions.k8s.io": ("v1",), KUEUE: ("v1beta1",), VISIBILITY: ("v1beta1",)}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(api_version: str, kind: str) -> ResourceType | None:
    return _BY_KIND.get((api_version, kind))


def api_versions(server_address: str) -> dict[str, Any]:
    """GET /api."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def api_group(name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUPS[name]]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": versions,
            "preferredVersion": versions[0]}


def api_group_list(hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    """GET /apis (without the `hidden` groups: CRDs not installed)."""
    groups = [api_group(name) for name in GROUPS if name not in hidden]
    for g in groups:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """GET /api/v1 or /apis/GROUP/VERSION: an APIResourceList, or None if not served."""
    types = [rt for rt in ALL if rt.group == group and rt.version == version]
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular,
                                 "namespaced": rt.namespaced, "kind": rt.kind,
                                 "verbs": list(rt.verbs)}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        resources.append(entry)
        for sub in rt.subresources:
            entry = {"name": f"{rt.plural}/{sub}", "singularName": "",
                     "namespaced": rt.namespaced, "kind": rt.kind,
                     "verbs": ["get", "patch", "update"]}
            if sub in SUBRESOURCE_KINDS:
                sub_group, sub_version, entry["kind"], entry["verbs"] = SUBRESOURCE_KINDS[sub]
                if sub_group:
                    entry.update(group=sub_group, version=sub_version)
            resources.append(entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


def version_info(git_version: str) -> dict[str, Any]:
    """GET /version."""
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {"major": major, "minor": minor, "gitVersion": git_version,
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2024-08-13T07:28:49Z", "goVersion": "go1.22.5", "compiler": "gc",
            "platform": "linux/amd64"}
