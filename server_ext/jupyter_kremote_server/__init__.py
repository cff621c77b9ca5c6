"""jupyter-server extension of jupyter-kremote: a REST API over the clusters of one user.

Enable it with ``jupyter server extension enable jupyter_kremote_server`` (the wheel ships
``etc/jupyter/jupyter_server_config.d/jupyter_kremote_server.json``, which does so).
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .app import KRemoteApp

    return [{"module": "jupyter_kremote_server.app", "app": KRemoteApp}]
