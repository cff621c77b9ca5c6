"""Admin routes' core: every user's clusters, and shutting any of them down.

The routes themselves answer through the hub's kremote service (tests/test_hub.py); a
single-user server refuses them (test_server_ext.py's token test).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

try:
    import jupyter_kremote_server  # noqa: F401 - installed with the wheel
except ImportError:  # a source checkout: hatch maps server_ext/ into the wheel only
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server_ext"))

from conftest import agent_pids_of, wait_for
from jupyter_kremote_server.admin import all_clusters, shutdown_for
from jupyter_kremote_server.manager import ClusterManager, Limits
from jupyter_kremote_server.models import NotFound


@pytest.mark.asyncio
async def test_an_admin_lists_every_user_and_shuts_any_cluster_down(tmp_path):
    def agents() -> set[int]:  # this test's own (other runs may share the machine)
        return set(agent_pids_of(os.getpid()))

    managers = {u: ClusterManager(Limits(user=u), root=str(tmp_path)) for u in ("bob", "alice")}
    try:
        await managers["alice"].ensure("default", "a.ipynb", {"count": 1})
        await managers["bob"].ensure("default", "b.ipynb", {"count": 1})
        await managers["bob"].ensure("other", "b.ipynb", {"count": 1})
        listed = [(m.user, m.id, m.state) for m in await all_clusters(managers)]
        assert listed == [("alice", "a-default", "running"), ("bob", "b-default", "running"),
                          ("bob", "b-other", "running")]
        assert len(agents()) == 3

        with pytest.raises(NotFound, match=r"^no cluster 'a-default' \(clusters: b-default, "):
            await shutdown_for(managers, "bob", "a-default")  # alice's id, bob's name: no
        with pytest.raises(NotFound, match=r"^no user 'carol' holds clusters here$"):
            await shutdown_for(managers, "carol", "a-default")
        await shutdown_for(managers, "bob", "b-other")
        assert [(m.user, m.id) for m in await all_clusters(managers)] == [
            ("alice", "a-default"), ("bob", "b-default")]
        assert wait_for(lambda: len(agents()) == 2, 60)
        # the owner sees their cluster gone too
        assert [m.id for m in await managers["bob"].list_clusters()] == ["b-default"]
    finally:
        for manager in managers.values():
            await manager.shutdown_all()
    assert wait_for(lambda: not agents(), 60)
