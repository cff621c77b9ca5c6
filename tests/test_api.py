"""The magic-free API: LocalCluster as an async context manager."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import all_agent_pids, wait_for

from jupyter_kremote import LocalCluster


@pytest.mark.asyncio
async def test_local_cluster_run_call_push_pull(tmp_path, capsys):
    (tmp_path / "helpers.py").write_text("def answer():\n    return 42\n")
    async with LocalCluster(count=2, files=["helpers.py"], root=tmp_path) as c:
        mine = {row["pid"] for row in c.cluster.status()}  # not other test runs' agents
        assert len(mine) == 2 and mine <= all_agent_pids()
        bundles = await c.run("import helpers, os\nprint('hi', os.environ['RANK'])\n"
                              "helpers.answer()")
        assert [b["text/plain"] for b in bundles] == ["42", "42"]
        out = capsys.readouterr().out
        assert "[rank 0] hi 0\n" in out and "[rank 1] hi 1\n" in out
        assert await c.call(pow, 2, 10) == [1024, 1024]
        await c.push(arr=np.arange(4))
        await c.run("arr2 = arr * int(os.environ['RANK'])")
        pulled = await c.pull("arr2")
        assert [a.tolist() for a in pulled] == [[0, 0, 0, 0], [0, 1, 2, 3]]
        with pytest.raises(Exception) as info:
            await c.run("1/0")
        assert type(info.value).__name__ == "ZeroDivisionError"
        assert str(info.value) == "division by zero"
    assert wait_for(lambda: not (all_agent_pids() & mine), 60)


@pytest.mark.asyncio
async def test_local_cluster_call_remote_exception():
    def bad(x):
        return {}[x]

    async with LocalCluster() as c:
        with pytest.raises(Exception) as info:
            await c.call(bad, "k")
    assert type(info.value).__name__ == "KeyError"
    assert "Traceback" in "".join(info.value.remote_traceback)
