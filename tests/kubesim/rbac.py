"""RBAC authorization as the real API server's RBAC authorizer does it.

Roles, ClusterRoles and their bindings are ordinary stored objects; every request's attributes
(user, verb, API group, resource/subresource, namespace, name, or a non-resource path) are
checked against the rules bound to the user, its groups or its ServiceAccount. The answers
(403 messages, access-review reasons) are worded like Kubernetes' own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import errors
from .auth import UserInfo
from .resources import CLUSTERROLEBINDINGS, CLUSTERROLES, ROLEBINDINGS, ROLES
from .store import Store


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (k8s.io/apiserver authorizer.Attributes)."""

    user: UserInfo
    verb: str
    resource_request: bool = True
    group: str = ""
    version: str = "v1"
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def combined(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _has(values: list[str] | None, value: str, wildcard: str = "*") -> bool:
    values = values or []
    return wildcard in values or value in values


def rule_allows(attrs: Attributes, rule: dict[str, Any]) -> bool:
    """rbac/v1 RuleAllows: verbs, groups, resources (incl. `*/sub`), names, URLs."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return any(u == "*" or u == attrs.path or
                   (u.endswith("*") and attrs.path.startswith(u[:-1]))
                   for u in rule.get("nonResourceURLs") or [])
    if not _has(rule.get("apiGroups"), attrs.group):
        return False
    resources = rule.get("resources") or []
    if not ("*" in resources or attrs.combined in resources or
            (attrs.subresource and f"*/{attrs.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _describe_subject(subject: dict[str, Any], namespace: str) -> str:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or namespace}"'
    return f'{kind} "{name}"'


def _applies(subject: dict[str, Any], user: UserInfo, namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_ns = subject.get("namespace") or namespace
        return user.name == f"system:serviceaccount:{sa_ns}:{name}"
    return False


class Authorizer:
    """Decides requests from the RBAC objects in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Every decision about a request (not about access reviews), newest last: who did
        # what, allowed or not, so a test can prove a Role is enough (no denial) and minimal.
        self.log: deque[dict[str, Any]] = deque(maxlen=20000)

    def _role_rules(self, ref: dict[str, Any], namespace: str
                    ) -> tuple[list[dict[str, Any]] | None, str]:
        kind, name = ref.get("kind"), ref.get("name", "")
        if kind == "ClusterRole":
            role = self.store.peek(CLUSTERROLES, "", name)
            missing = f'clusterrole.rbac.authorization.k8s.io "{name}" not found'
        else:
            role = self.store.peek(ROLES, namespace, name)
            missing = f'role.rbac.authorization.k8s.io "{name}" not found'
        if role is None:
            return None, missing
        return list(role.get("rules") or []), ""

    def visit(self, user: UserInfo, namespace: str
              ) -> Iterator[tuple[str, list[dict[str, Any]] | None, str]]:
        """(source, rules or None, error) of every binding that applies to `user`."""
        for binding in list(self.store.iter_objects(CLUSTERROLEBINDINGS)):
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                if _applies(subject, user, ""):
                    rules, err = self._role_rules(ref, "")
                    source = (f'ClusterRoleBinding "{binding["metadata"]["name"]}" of '
                              f'{ref.get("kind")} "{ref.get("name")}" to '
                              f"{_describe_subject(subject, '')}")
                    yield source, rules, err
                    break
        if not namespace:
            return
        for binding in list(self.store.iter_objects(ROLEBINDINGS, namespace)):
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                if _applies(subject, user, namespace):
                    rules, err = self._role_rules(ref, namespace)
                    name = f'{binding["metadata"]["name"]}/{namespace}'
                    source = (f'RoleBinding "{name}" of {ref.get("kind")} "{ref.get("name")}" '
                              f"to {_describe_subject(subject, namespace)}")
                    yield source, rules, err
                    break

    def authorize(self, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) with the RBAC authorizer's reason strings."""
        problems: list[str] = []
        for source, rules, err in self.visit(attrs.user, attrs.namespace):
            if rules is None:
                problems.append(err)
                continue
            if any(rule_allows(attrs, rule) for rule in rules):
                return True, f"RBAC: allowed by {source}"
        if not problems:
            return False, ""
        joined = problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]"
        return False, f"RBAC: {joined}"

    def check(self, attrs: Attributes) -> None:
        """Raise the API server's 403 for a request RBAC does not allow."""
        allowed, reason = self.authorize(attrs)
        self.log.append({"user": attrs.user.name, "verb": attrs.verb, "group": attrs.group,
                         "resource": attrs.combined, "namespace": attrs.namespace,
                         "name": attrs.name, "path": attrs.path, "allowed": allowed})
        if not allowed:
            raise forbidden(attrs, reason)

    def rules_for(self, user: UserInfo, namespace: str) -> dict[str, Any]:
        """SelfSubjectRulesReview status: every rule that applies in `namespace`."""
        resource_rules: list[dict[str, Any]] = []
        non_resource: list[dict[str, Any]] = []
        problems: list[str] = []
        for _source, rules, err in self.visit(user, namespace):
            if rules is None:
                problems.append(err)
                continue
            for rule in rules:
                if rule.get("nonResourceURLs"):
                    non_resource.append({"verbs": list(rule.get("verbs") or []),
                                         "nonResourceURLs": list(rule["nonResourceURLs"])})
                else:
                    entry = {"verbs": list(rule.get("verbs") or []),
                             "apiGroups": list(rule.get("apiGroups") or []),
                             "resources": list(rule.get("resources") or [])}
                    if rule.get("resourceNames"):
                        entry["resourceNames"] = list(rule["resourceNames"])
                    resource_rules.append(entry)
        status: dict[str, Any] = {"resourceRules": resource_rules,
                                  "nonResourceRules": non_resource, "incomplete": False}
        if problems:
            status["evaluationError"] = ", ".join(problems)
            status["incomplete"] = True
        return status


def forbidden(attrs: Attributes, reason: str = "") -> errors.ApiError:
    """apierrors.NewForbidden with responsewriters.forbiddenMessage, word for word."""
    user = attrs.user.name
    if not attrs.resource_request:
        message = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
        full = f"forbidden: {message}"
        if reason:
            full += f": {reason}"
        return errors.ApiError(403, "Forbidden", full, {})
    if attrs.namespace:
        message = (f'User "{user}" cannot {attrs.verb} resource "{attrs.combined}" in API group '
                   f'"{attrs.group}" in the namespace "{attrs.namespace}"')
    else:
        message = (f'User "{user}" cannot {attrs.verb} resource "{attrs.combined}" in API group '
                   f'"{attrs.group}" at the cluster scope')
    if reason:
        message += f": {reason}"
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details: dict[str, Any] = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.group:
        details["group"] = attrs.group
    return errors.ApiError(403, "Forbidden", f"{subject} is forbidden: {message}", details)


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping":
                                                   "rbac-defaults"},
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules}


def _cluster_binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping":
                                                   "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}
                         for g in groups]}


def bootstrap_policy() -> list[tuple[Any, dict[str, Any]]]:
    """The default ClusterRoles and bindings the emulator's behaviour relies on: admins can do
    anything; any authenticated user may discover the API and review its own access."""
    read = ["get", "list", "watch"]
    write = ["create", "delete", "deletecollection", "patch", "update"]
    core = ["pods", "pods/log", "secrets", "configmaps", "events", "serviceaccounts",
            "resourcequotas"]
    return [
        (CLUSTERROLES, _cluster_role("cluster-admin", [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}])),
        (CLUSTERROLES, _cluster_role("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
             "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
             "verbs": ["create"]}])),
        (CLUSTERROLES, _cluster_role("system:discovery", [
            {"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                 "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
             "verbs": ["get"]}])),
        (CLUSTERROLES, _cluster_role("edit", [
            {"apiGroups": [""], "resources": core, "verbs": read + write},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": read + write},
            {"apiGroups": [""], "resources": ["pods/eviction", "serviceaccounts/token"],
             "verbs": ["create"]}])),
        (CLUSTERROLES, _cluster_role("view", [
            {"apiGroups": [""], "resources": [r for r in core if r != "secrets"],
             "verbs": read},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": read}])),
        (CLUSTERROLEBINDINGS, _cluster_binding("cluster-admin", "cluster-admin",
                                               ["system:masters"])),
        (CLUSTERROLEBINDINGS, _cluster_binding("system:basic-user", "system:basic-user",
                                               ["system:authenticated"])),
        (CLUSTERROLEBINDINGS, _cluster_binding("system:discovery", "system:discovery",
                                               ["system:authenticated"])),
    ]
