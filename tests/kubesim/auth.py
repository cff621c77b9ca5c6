"""Authentication: who a bearer token is. The kubeconfig's token is the cluster admin;
ServiceAccount tokens come from the TokenRequest subresource (`kubectl create token`).

Issued tokens are JWTs signed (HS256) with a key of this emulator, bound to the account's uid
as the real API server binds them: expired, forged, or outliving their ServiceAccount is 401.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .resources import SERVICEACCOUNTS
from .store import Store
from .util import rfc3339

ISSUER = "https://kubernetes.default.svc.cluster.local"
MIN_EXPIRATION = 600  # the API server refuses shorter tokens
DEFAULT_EXPIRATION = 3600
ADMIN = "kubernetes-admin"


@dataclass(frozen=True)
class UserInfo:
    """An authenticated user, as RBAC and the access reviews see it."""

    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict, hash=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra
        return out


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    return UserInfo(f"system:serviceaccount:{namespace}:{name}",
                    ("system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                     "system:authenticated"), uid)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """Maps bearer tokens to users; issues ServiceAccount tokens."""

    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self.admin_token = admin_token
        self._key = secrets.token_bytes(32)
        self.admin = UserInfo(ADMIN, ("system:masters", "system:authenticated"))

    def authenticate(self, header: str | None) -> UserInfo:
        """The user of an `Authorization` header, or a 401 ApiError."""
        if not header or not header.startswith("Bearer "):
            raise errors.unauthorized()
        token = header[len("Bearer "):].strip()
        if hmac.compare_digest(token, self.admin_token):
            return self.admin
        user = self._verify(token)
        if user is None:
            raise errors.unauthorized()
        return user

    def issue(self, namespace: str, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Answer a TokenRequest for ServiceAccount `namespace/name` (404 if it is missing)."""
        account = self.store.get(SERVICEACCOUNTS, namespace, name)
        spec = dict((request or {}).get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or DEFAULT_EXPIRATION)
        if seconds < MIN_EXPIRATION:
            raise errors.invalid("TokenRequest", "authentication.k8s.io", name, [(
                "spec.expirationSeconds", (f"Invalid value: {seconds}: may not specify a "
                                           "duration less than 10 minutes"))])
        audiences = list(spec.get("audiences") or [ISSUER])
        now = int(time.time())
        uid = account["metadata"]["uid"]
        claims = {"aud": audiences, "exp": now + seconds, "iat": now, "nbf": now,
                  "iss": ISSUER, "sub": f"system:serviceaccount:{namespace}:{name}",
                  "kubernetes.io": {"namespace": namespace,
                                    "serviceaccount": {"name": name, "uid": uid}}}
        head = _b64(json.dumps({"alg": "HS256", "kid": "kubesim"}).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        spec.update(audiences=audiences, expirationSeconds=seconds)
        spec.setdefault("boundObjectRef", None)
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
                "spec": spec, "status": {"token": f"{head}.{body}.{signature}",
                                         "expirationTimestamp": rfc3339(now + seconds)}}

    def _verify(self, token: str) -> UserInfo | None:
        parts = token.split(".")
        if len(parts) != 3:
            return None
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
        try:
            if not hmac.compare_digest(_unb64(parts[2]), expected.digest()):
                return None
            claims = json.loads(_unb64(parts[1]))
            bound = claims["kubernetes.io"]
            namespace, name = bound["namespace"], bound["serviceaccount"]["name"]
            uid = bound["serviceaccount"]["uid"]
            expires = float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        if time.time() >= expires:
            return None
        account = self.store.peek(SERVICEACCOUNTS, namespace, name)
        if account is None or account["metadata"]["uid"] != uid:
            return None  # the account was deleted (or re-made): its tokens die with it
        return service_account_user(namespace, name, uid)
