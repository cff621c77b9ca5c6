"""Backends start and stop the agents of a cluster; the session talks to agents itself."""

from importlib.util import find_spec

from .base import Backend, ClusterHandle, StartRequest

__all__ = ["Backend", "ClusterHandle", "StartRequest", "get_backend", "require_kubernetes"]

#: what ``pip install 'jupyter-kremote[kubernetes]'`` brings: the API client, the schemas
KUBERNETES_MODULES = ("kubernetes_asyncio", "kubernetes_validate")


def require_kubernetes(*modules: str) -> None:
    """Refuse in one line, naming the extra to install, when a Kubernetes module is missing.

    Both are imported lazily (the client costs ~1.5 s), so without this check their absence
    would surface only as a ``ModuleNotFoundError`` deep in a start or a render.
    """
    missing = [m for m in modules or KUBERNETES_MODULES if not _installed(m)]
    if missing:
        raise ValueError(f"the kubernetes backend needs {' and '.join(missing)}, which is not "
                         "installed: pip install 'jupyter-kremote[kubernetes]'")


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``local`` or ``kubernetes``)."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "kubernetes":
        require_kubernetes()
        from .kubernetes import KubernetesBackend

        return KubernetesBackend()
    raise ValueError(f"unknown backend {name!r}; use --backend local or --backend kubernetes")


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False
