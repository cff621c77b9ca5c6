"""Objects that cannot travel: an error in the cell naming the object and the cause, while
the agent and its variables survive (a class in a module the agent lacks, a value that
cannot be pickled, either way)."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture
def with_state(kernel, tmp_path):
    only_here = tmp_path / "kernel-only"
    only_here.mkdir()
    (only_here / "lonely_mod.py").write_text("class Thing:\n    pass\n")
    res = kernel.run(f"import sys, threading\nsys.path.insert(0, {str(only_here)!r})\n"
                     "import lonely_mod\nthing = lonely_mod.Thing()\nok = 5\n"
                     "lock = threading.Lock()")
    assert res.status == "ok", res.outputs
    assert kernel.run("%%remote\nkept = 'still here'").status == "ok"
    return kernel


def _survives(kernel) -> None:
    res = kernel.run("%%remote\nprint(kept)")
    assert res.status == "ok" and res.stdout == "still here\n", res.outputs


def test_push_of_a_class_the_agent_lacks_names_it_and_agent_survives(with_state):
    res = with_state.run("%remote push ok thing")
    assert res.status == "error"
    assert "'thing'" in res.error["evalue"] and "lonely_mod" in res.error["evalue"], res.error
    assert "'ok'" not in res.error["evalue"]
    _survives(with_state)


def test_push_of_an_unpicklable_value_names_it(with_state):
    res = with_state.run("%remote push ok lock")
    assert res.status == "error"
    assert "'lock'" in res.error["evalue"] and "cannot pickle" in res.error["evalue"], res.error
    _survives(with_state)


def test_pull_of_an_unpicklable_value_names_it_and_agent_survives(with_state):
    assert with_state.run("%%remote\nimport threading\nlk = threading.Lock()\ny = 3"
                          ).status == "ok"
    res = with_state.run("%remote pull y lk")
    assert res.status == "error"
    assert "'lk'" in res.error["evalue"] and "cannot pickle" in res.error["evalue"], res.error
    assert "rank 0" in res.error["evalue"]
    _survives(with_state)
    res = with_state.run("%remote pull y --rank 0\nprint(y)")
    assert res.stdout == "3\n", res.outputs


def test_call_with_bad_arguments_or_result_is_an_error_and_agent_survives(tmp_path):
    from jupyter_kremote.errors import RemoteError
    from jupyter_kremote.session import Cluster, ClusterOptions

    cluster = Cluster("bad-call", ClusterOptions(count=1), root=tmp_path)
    try:
        cluster.push({"kept": 1})
        with pytest.raises(RemoteError) as info:
            cluster.call(threading.Lock)
        assert "cannot pickle" in str(info.value) and "result" in str(info.value)
        with pytest.raises(Exception) as info:  # noqa: PT011 - local pickling error
            cluster.call(print, threading.Lock())
        assert "cannot pickle" in str(info.value)
        assert cluster.pull(["kept"]) == {0: {"kept": 1}}
    finally:
        cluster.shutdown()
