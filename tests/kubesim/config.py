"""`KubeSimConfig`: every setting and knob of the emulator in one place."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field

from .scheduler import NodeSpec


@dataclass
class KubeSimConfig:
    """Settings; the mutable ones (images, timings) may be changed while it runs."""

    host: str = "127.0.0.1"
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    version: str = "v1.31.0"
    # Also serve HTTPS (self-signed, on another port) when `openssl` is there: kubectl sends
    # bearer tokens only to https servers. kubeconfigs point there unless told otherwise.
    tls: bool = True
    nodes: list[NodeSpec] = field(default_factory=lambda: [NodeSpec()])
    # Pods: "shared" gives every pod 127.0.0.1; "unique" gives each its own 127.X.y.z (Linux
    # routes all of 127/8 to lo; X is random per emulator), so several pods can listen on the
    # same port if they bind their own IP (e.g. from the downward API's status.podIP).
    # "ipv6" gives every pod (and host IP) ::1, as on a single-stack IPv6 cluster.
    pod_ips: str = "shared"
    # Commands named python/python3 run with this interpreter.
    python: str = sys.executable
    # Environment every container starts from (before its own env): PATH, HOME and the
    # KUBERNETES_* and KUBESIM_* variables are always set; values may use $(KUBESIM_POD_IP).
    extra_env: dict[str, str] = field(default_factory=dict)
    inherit_env: bool = False
    # Default entrypoints by image (used when a container has no command).
    image_entrypoints: dict[str, list[str]] = field(default_factory=dict)
    unknown_images: set[str] = field(default_factory=set)
    unknown_image_prefixes: list[str] = field(default_factory=lambda: ["unknown/"])
    pull_delay: float = 0.0
    pull_backoff: float = 0.5
    pull_backoff_max: float = 5.0
    crash_backoff: float = 0.5
    crash_backoff_max: float = 5.0
    config_retry: float = 1.0
    scheduler_retry: float = 1.0
    scheduler_retry_max: float = 5.0
    # Longest a deleted pod's processes get between SIGTERM and SIGKILL.
    max_grace_seconds: float = 2.0
    # Creating in a namespace that does not exist: 404 like the real API if strict, else the
    # namespace is made on the fly.
    strict_namespaces: bool = True
    # Enforce RBAC on every request (the kubeconfig's token is cluster-admin; ServiceAccount
    # tokens from TokenRequest get what their Roles grant). Off: any known token may do all.
    rbac: bool = False
    # Serve Kueue (kueue.x-k8s.io/v1beta1 with its CRDs listed, and the visibility API) and
    # run its admission (kueue.py); off, the groups are absent as on a cluster without Kueue.
    kueue: bool = False
    # Kueue's waitForPodsReady.timeout in seconds (0: waitForPodsReady off), and the base of
    # its requeuing backoff after a PodsReady timeout (Kueue's default is 60 s).
    kueue_pods_ready_timeout: float = 0.0
    kueue_backoff_base: float = 1.0
    history_limit: int = 10000
    default_watch_timeout: int = 1800
    bookmark_interval: float = 30.0
    workdir: str | None = None
    keep_workdirs: bool = False
    controller_interval: float = 0.05
