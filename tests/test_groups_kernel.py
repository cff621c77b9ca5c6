"""Groups and maps from a real notebook kernel: ``%remote group add``, ``%%remote
--group``, a map's live progress line and ``%remote tasks``."""

from __future__ import annotations

import re


def test_group_magics_announce_peers_to_every_group(kernel):
    assert kernel.run("%%remote\nx = 1").status == "ok"
    res = kernel.run("%remote group add prep -n 2")
    assert res.status == "ok", res.outputs
    assert "group 'prep' of cluster 'default': 2 agent(s)" in res.stdout
    res = kernel.run("%%remote --group prep\nimport jupyter_kremote as k\n"
                     "print(k.group(), k.rank(), k.groups())")
    assert "[rank 0] prep 0 ['main', 'prep']" in res.stdout
    assert "[rank 1] prep 1 ['main', 'prep']" in res.stdout
    res = kernel.run("%%remote\nimport jupyter_kremote as k\nprint(k.group(), len(k.peers('prep')), x)")
    assert res.stdout.strip() == "main 2 1"  # the main group kept its variables
    res = kernel.run("%%remote --group nope\n1")
    assert res.status == "error"
    assert "no group 'nope' in cluster 'default'; start it with `%remote group add nope" in (
        _said(res))
    res = kernel.run("%remote group add prep -n 1")
    assert res.status == "error" and "already has a group 'prep'" in _said(res)
    listed = kernel.run("%remote group list").stdout
    assert "group 'prep': 2 agent(s)" in listed and "group 'main': 1 agent(s)" in listed


def test_map_shows_progress_and_remote_tasks_counts(kernel):
    res = kernel.run("from jupyter_kremote import LocalCluster\n"
                     "c = LocalCluster(count=2)\nawait c.start()\n"
                     "out = await c.map(lambda x: x + 1, range(300))\nprint(sum(out))")
    assert res.status == "ok", res.outputs
    assert res.stdout.strip() == str(sum(range(1, 301)))
    shown = [o["data"]["text/plain"] for o in res.outputs
             if o["type"] in ("display_data", "update_display_data")]
    assert len(res.of_type("display_data")) == 1  # one line, updated in place
    # (a cold agent's first chunk may be re-run on another: "N speculative")
    assert re.fullmatch(r"<lambda>: 300/300 done, 0 running, 0 failed(, \d+ speculative)? "
                        r"\([\d.]+s, done\)", shown[-1]), shown[-1]
    tasks = kernel.run("%remote tasks").stdout
    assert "cluster 'default' <lambda>: 300/300 done, 0 running, 0 failed" in tasks
    assert "done)" in tasks
    assert kernel.run("await c.shutdown()").status == "ok"


def _said(res) -> str:
    """An error as the notebook shows it (a UsageError is one line on stderr)."""
    return res.stderr + (res.error["evalue"] if res.error else "")
