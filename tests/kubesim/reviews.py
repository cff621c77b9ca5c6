"""Access reviews: SelfSubjectAccessReview (`kubectl auth can-i`), SelfSubjectRulesReview
(`kubectl auth can-i --list`), SelfSubjectReview (`kubectl auth whoami`), and
SubjectAccessReview (may user U do X? asked by a service that acts for users)."""

from __future__ import annotations

from typing import Any

from . import errors
from .auth import UserInfo
from .rbac import Attributes, Authorizer
from .resources import ACCESS_REVIEWS, SELF_ACCESS_REVIEWS, SELF_RULES_REVIEWS, ResourceType


def _answer(rt: ResourceType, body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = dict(body.get("metadata") or {})
    meta.setdefault("creationTimestamp", None)
    out = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta,
           "status": status}
    if "spec" in body:
        out["spec"] = body["spec"]
    return out


def review(rt: ResourceType, body: dict[str, Any], user: UserInfo,
           authorizer: Authorizer | None) -> dict[str, Any]:
    """Answer a self review; with RBAC off (`authorizer` None) everything is allowed."""
    spec = body.get("spec") or {}
    if rt is ACCESS_REVIEWS:
        if not spec.get("user") and not spec.get("groups"):
            raise errors.invalid(rt.kind, rt.group, "", [(
                "spec.user", ('Invalid value: "": at least one of user or group must be '
                              "specified"))])
        user = UserInfo(spec.get("user", ""), tuple(spec.get("groups") or ()),
                        spec.get("uid", ""))
    if rt in (SELF_ACCESS_REVIEWS, ACCESS_REVIEWS):
        res, non_res = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if bool(res) == bool(non_res):
            raise errors.invalid(rt.kind, rt.group, "", [(
                "spec.resourceAttributes", ('Invalid value: "null": exactly one of '
                                            "nonResourceAttributes or resourceAttributes must "
                                            "be specified"))])
        if res:
            attrs = Attributes(user, res.get("verb", ""), True, res.get("group", ""),
                               res.get("version", ""), res.get("resource", ""),
                               res.get("subresource", ""), res.get("namespace", ""),
                               res.get("name", ""))
        else:
            attrs = Attributes(user, non_res.get("verb", ""), False,
                               path=non_res.get("path", ""))
        if authorizer is None:
            return _answer(rt, body, {"allowed": True})
        allowed, reason = authorizer.authorize(attrs)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        return _answer(rt, body, status)
    if rt is SELF_RULES_REVIEWS:
        namespace = spec.get("namespace", "")
        if authorizer is None:
            status = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                         "resources": ["*"]}],
                      "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                      "incomplete": False}
        else:
            status = authorizer.rules_for(user, namespace)
        return _answer(rt, body, status)
    return _answer(rt, body, {"userInfo": user.to_dict()})
