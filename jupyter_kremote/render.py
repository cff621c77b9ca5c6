"""Dry runs: the manifests a %%remote would create, printed, nothing created."""

from __future__ import annotations

from .backends.base import StartRequest
from .manifests import to_yaml
from .session import ClusterOptions


def render_yaml(name: str, options: ClusterOptions, notebook: str = "") -> str:
    """Multi-document YAML like ``kubectl create --dry-run=client -o yaml``, secrets redacted."""
    from .backends import require_kubernetes

    require_kubernetes("kubernetes_validate")
    from .backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend()
    docs = backend.render(StartRequest(name=name, spec=options.to_spec(), notebook=notebook),
                          key=None, redact=True)
    return to_yaml(docs, redact_secrets=True)
