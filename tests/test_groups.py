"""Pod groups on local agents: peers' addresses, a channel streaming arrays from a
preprocess group to a train group (Swimmy's shape), add_group, remote functions."""

from __future__ import annotations

import asyncio
import os
import sys

import numpy as np
import pytest
import pytest_asyncio
from conftest import alive, wait_for

import jupyter_kremote as kremote
from jupyter_kremote import LocalCluster, PodSpec

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def swimmy(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    (root / "steps.py").write_text(
        "import jupyter_kremote as kremote\n"
        "import numpy as np\n\n"
        "@kremote.remote\n"
        "def where():\n"
        "    return kremote.group(), kremote.rank()\n\n"
        "def fail(x):\n"
        "    raise ValueError(f'bad {x}')\n")
    async with LocalCluster(root=root, groups={"preprocess": PodSpec(count=2),
                                               "train": PodSpec(count=1)}) as c:
        pids = [row["pid"] for g in c.groups for row in g.cluster.status()]
        yield c, root
    assert await asyncio.to_thread(wait_for, lambda: not any(map(alive, pids)), 10)


async def test_every_agent_knows_every_group(swimmy):
    c, _ = swimmy
    assert c.groups.names() == ["preprocess", "train"]
    seen = await c.call(lambda: (kremote.group(), kremote.groups(), kremote.peers("train"),
                                 os.environ["KREMOTE_GROUP_PREPROCESS_ADDRS"]))
    assert [s[0] for s in seen] == ["preprocess", "preprocess", "train"]
    assert all(s[1] == ["preprocess", "train"] for s in seen)
    train_addrs = {tuple(s[2]) for s in seen}
    assert len(train_addrs) == 1 and len(next(iter(train_addrs))) == 1  # one train rank
    assert all(len(s[3].split(",")) == 2 for s in seen)
    with pytest.raises(ValueError, match="ranks are numbered per group: give group="):
        await c.call(abs, 1, ranks=[0])
    with pytest.raises(ValueError, match="no group 'eval'"):
        await c.run("1", group="eval")
    with pytest.raises(ValueError, match="group name 'Bad_Name'"):
        await c.add_group("Bad_Name", PodSpec())


async def test_preprocess_streams_arrays_to_train_over_a_channel(swimmy):
    """Swimmy's mpi_train shape: CPU ranks prepare batches, the train rank consumes them."""
    c, _ = swimmy

    def train(senders):
        total, n = 0.0, 0
        with kremote.Inbox() as inbox:
            for batch in inbox.stream(senders=senders, timeout=60):
                total += float(batch.sum())
                n += len(batch)
        return n, total

    def preprocess(batches):
        rank = kremote.rank()
        with kremote.Outbox("train", rank=0) as out:
            for i in range(batches):
                out.send(np.full(50_000, rank + 1, dtype=np.float64))  # 400 kB: out of band
        return batches

    consumed, produced = await asyncio.gather(c.call(train, 2, group="train"),
                                              c.call(preprocess, 5, group="preprocess"))
    assert produced == [5, 5]
    assert consumed == [(10 * 50_000, 5 * 50_000 * 1.0 + 5 * 50_000 * 2.0)]


async def test_remote_functions_ship_their_module_and_keep_tracebacks(swimmy):
    c, root = swimmy
    sys.path.insert(0, str(root))
    try:
        import steps

        assert steps.where() == ("main", 0)  # still a plain local function
        assert await steps.where.on(c, group="train")() == [("train", 0)]
        assert await steps.where.on(c, group="preprocess", rank=1)() == ("preprocess", 1)
        assert await steps.where.remote() == [("preprocess", 0), ("preprocess", 1), ("train", 0)]
        with pytest.raises(Exception) as info:
            await c.remote(steps.fail).on(group="train", rank=0)("x")
        assert type(info.value).__name__ == "ValueError" and str(info.value) == "bad x"
        assert "steps.py" in "".join(info.value.remote_traceback)
        big = np.arange(1_000_000, dtype=np.int64)
        doubled = await kremote.remote(np.multiply).on(c, group="train", rank=0)(big, 2)
        assert doubled.dtype == np.int64 and int(doubled[-1]) == 1_999_998
        assert await c.map(steps.where, [()] * 0, group="train") == []
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("steps", None)


async def test_add_group_later_is_announced_to_everyone(swimmy):
    c, _ = swimmy
    ranks = await c.add_group("eval", PodSpec(count=1, files=["steps.py"]))
    assert ranks == [0]
    assert await c.run("import os; os.path.exists('steps.py')", group="eval") == [
        {"text/plain": "True"}]  # the group spec's own files
    addrs = await c.call(lambda: kremote.peers("eval"))
    assert len(addrs) == 4 and len({tuple(a) for a in addrs}) == 1
    assert await c.map(lambda x: x + 1, range(40), group="eval") == list(range(1, 41))
    everywhere = await c.map(lambda x: kremote.group(), range(200), chunksize=1)
    assert set(everywhere) <= {"preprocess", "train", "eval"} and len(everywhere) == 200


async def test_groups_start_all_or_nothing():
    from conftest import agent_pids_of

    before = set(agent_pids_of(os.getpid()))  # this process's agents (other tests' clusters)
    broken = PodSpec(count=1, env={"PYTHONHOME": "/nonexistent"})  # its Python cannot start
    cluster = LocalCluster(groups={"fine": PodSpec(count=2), "broken": broken})
    with pytest.raises(RuntimeError, match="agent rank 0 exited with code 1 before it was ready"):
        await cluster.start()
    # the group that did start was stopped with it: no agent of this process is left
    assert await asyncio.to_thread(
        wait_for, lambda: not set(agent_pids_of(os.getpid())) - before, 10)
    with pytest.raises(RuntimeError, match="the cluster is not started"):
        await cluster.run("1")
