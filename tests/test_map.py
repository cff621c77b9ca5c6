"""cluster.map / map_iter over real local agents: load balancing, retries naming the
input, an agent killed mid-map, speculative re-runs, and the async client itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import pytest_asyncio
from conftest import alive, wait_for

from jupyter_kremote import LocalCluster
from jupyter_kremote.errors import ClusterEnded, ClusterTimeout
from jupyter_kremote.mapper import RECENT

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster():
    async with LocalCluster(count=2) as c:
        pids = [row["pid"] for row in c.cluster.status()]
        yield c
    assert await asyncio.to_thread(wait_for, lambda: not any(map(alive, pids)), 10)


async def test_map_returns_every_result_in_input_order(cluster):
    assert await cluster.map(lambda x: x * x, range(500)) == [x * x for x in range(500)]
    assert await cluster.map(str, [], chunksize=3) == []
    got = await cluster.map(lambda x: (x, os.environ["KREMOTE_RANK"]), range(60), chunksize=1)
    assert [x for x, _ in got] == list(range(60))
    assert {r for _, r in got} == {"0", "1"}  # both agents took work
    unordered = await cluster.map(lambda x: -x, iter(range(50)), ordered=False)
    assert sorted(unordered) == sorted(-x for x in range(50))
    streamed = [v async for v in cluster.map_iter(lambda x: x + 1, range(30), ordered=True)]
    assert streamed == list(range(1, 31))
    with pytest.raises(ValueError, match="chunksize must be at least 1"):
        await cluster.map(abs, [1], chunksize=0)


async def test_failing_input_is_retried_on_another_agent_then_raised_naming_it(cluster):
    def flaky(x):
        if x == 1 and os.environ["KREMOTE_RANK"] == "0":  # rank 0 takes 0-3 first
            raise RuntimeError("rank 0 cannot do 1")
        return x

    assert await cluster.map(flaky, range(20), chunksize=4) == list(range(20))
    assert RECENT[-1].retried >= 1 and RECENT[-1].state == "done"

    def broken(x):
        if x == "c":
            raise KeyError(x)
        return x

    with pytest.raises(Exception) as info:
        await cluster.map(broken, ["a", "b", "c", "d"], retries=1)
    err = info.value
    assert type(err).__name__ == "KeyError"
    assert "input 2: 'c'" in str(err) and "failed 2 time(s)" in str(err)
    assert err.input == "c" and err.index == 2
    tb = "".join(err.remote_traceback)
    assert ", in broken" in tb and "KeyError: 'c'" in tb  # the remote frame
    assert RECENT[-1].state == "failed" and RECENT[-1].failed == 2
    # nothing lost: the agents and their variables are still there
    await cluster.push(kept=41)
    assert await cluster.run("kept + 1") == [{"text/plain": "42"}] * 2


async def test_straggler_is_rerun_speculatively_and_the_late_run_interrupted(cluster):
    def slow_on_rank0(x):
        if x == 3 and os.environ["KREMOTE_RANK"] == "0":
            import time as t
            t.sleep(600)
        return x * 10

    # rank 0 takes the first chunk (inputs 0-4): 3 hangs there, rank 1 re-runs it
    assert await cluster.map(slow_on_rank0, range(10), chunksize=5) == [x * 10 for x in range(10)]
    assert RECENT[-1].speculative >= 1
    # the hanging run was interrupted: rank 0 answers again
    assert await asyncio.wait_for(cluster.run("'free'", ranks=[0]), 30) == [
        {"text/plain": "'free'"}]


async def test_cancelled_request_interrupts_the_agent_and_timeout_is_reported(cluster):
    task = asyncio.ensure_future(cluster.run("import time\ntime.sleep(600)", ranks=[1]))
    assert await _until(lambda: cluster.cluster.status()[1]["state"] == "busy")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(cluster.run("2", ranks=[1]), 30) == [{"text/plain": "2"}]
    with pytest.raises(ClusterTimeout, match="timeout of 0.3s"):
        await cluster.run("import time\ntime.sleep(600)", timeout=0.3)
    assert await cluster.run("3") == [{"text/plain": "3"}] * 2


async def test_map_goes_on_when_an_agent_is_killed():
    async with LocalCluster(count=3) as c:
        victim = c.cluster.status()[2]["pid"]
        await c.map(abs, range(6), chunksize=1)  # warm: no late first chunk to re-run

        def work(x):
            if x >= 20 and os.environ["KREMOTE_RANK"] == "2":  # its first chunk is 20-29
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.002)
            return x

        assert await c.map(work, range(120), chunksize=10) == list(range(120))
        assert not alive(victim)
        with pytest.raises(ClusterEnded, match="agent rank 2 was killed by SIGKILL"):
            await c.run("1")  # the cluster says which agent is gone


async def _until(predicate, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.05)
    return False
