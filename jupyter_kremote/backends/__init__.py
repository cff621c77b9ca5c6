"""Backends start and stop the agents of a cluster; the session talks to agents itself."""

from .base import Backend, ClusterHandle, StartRequest

__all__ = ["Backend", "ClusterHandle", "StartRequest", "get_backend"]


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (``local`` or ``kubernetes``)."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "kubernetes":
        try:
            from .kubernetes import KubernetesBackend  # type: ignore[import-not-found]
        except ImportError as exc:
            raise ValueError(
                f"the kubernetes backend is not available here ({exc}); "
                "use --backend local") from None
        return KubernetesBackend()
    raise ValueError(f"unknown backend {name!r}; use --backend local or --backend kubernetes")
