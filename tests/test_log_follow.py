"""A log follow ends with its client: the stream and its thread do not outlive the reader."""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

try:
    import jupyter_kremote_server  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server_ext"))

from conftest import wait_for
from jupyter_kremote_server.manager import ClusterManager, Limits


def _followers() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kremote-logs-")]


@pytest.mark.asyncio
async def test_log_follow_of_a_quiet_agent_ends_when_its_client_goes(tmp_path):
    manager = ClusterManager(Limits(backend="local", user="u"), root=str(tmp_path))
    try:
        model = await manager.ensure("default", "n.ipynb", {})
        follow = manager.follow_logs(model.id, 0)
        first = await asyncio.wait_for(follow.__anext__(), 30)  # the log so far
        assert "listening on" in first
        assert _followers()
        await follow.aclose()  # the client went away; the agent prints nothing more
        assert await asyncio.to_thread(wait_for, lambda: not _followers(), 5), _followers()
    finally:
        await manager.shutdown_all()
