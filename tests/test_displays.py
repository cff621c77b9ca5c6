"""Start-up progress, `%remote status` and `%remote top` as rich displays updated in place
(issue 9, 5): an HTML table in a notebook, aligned text in a terminal."""

from __future__ import annotations

import queue
import re
import time

import pytest
from conftest import kernel_in


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    yield from kernel_in(tmp_path_factory.mktemp("notebooks"))


def test_start_up_is_one_display_that_ends_ready(kernel):
    res = kernel.run("%%remote -n 2\nprint('hi')")
    assert res.status == "ok", res.outputs
    assert "[kremote]" not in res.stderr  # no stderr lines for the start any more
    shown = [o for o in res.outputs if o["type"].endswith("display_data")]
    assert shown and {o["display_id"] for o in shown} == {shown[0]["display_id"]}
    last = shown[-1]["data"]
    assert re.fullmatch(r"cluster 'default': 2 local agent\(s\) ready in [0-9.]+s, "
                        r"TTL 1h 00m", last["text/plain"])
    assert "ready in" in last["text/html"] and last["text/html"].startswith("<div")
    (shown_msg,) = [o for o in res.outputs if o["type"] == "display_data"]
    assert shown_msg["metadata"] == {"jupyter_kremote": "start"}  # tools can set it apart


def test_status_is_an_html_table_with_a_text_fallback(kernel):
    res = kernel.run("%remote status")
    (shown,) = res.of_type("display_data")
    html, text = shown["data"]["text/html"], shown["data"]["text/plain"]
    pids = sorted(kernel.agent_pids())
    for pid in pids:
        assert f"<td>pid {pid} on " in html
    assert html.count("<tr>") == 3 and "<th>STATE</th>" in html
    lines = text.splitlines()
    assert re.fullmatch(r"cluster 'default' \[local\] 2 agent\(s\), TTL .* left", lines[0])
    assert lines[1].split() == ["RANK", "STATE", "WHERE", "DROPPED"]
    assert lines[2].split()[:2] == ["0", "idle"] and lines[3].split()[:2] == ["1", "idle"]
    assert {int(line.split()[3]) for line in lines[2:]} == set(pids)


def test_status_of_a_cluster_that_does_not_exist_says_so(kernel):
    res = kernel.run("%remote status --name nope")
    assert res.reply["ename"] == "UsageError" and "no cluster named 'nope'" in res.stderr


def test_top_watch_updates_in_place_until_stopped(kernel):
    kernel.kc.execute("%remote top --watch 1", stop_on_error=False)
    first, updates = None, []
    end = time.monotonic() + 60
    while len(updates) < 2 and time.monotonic() < end:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["msg_type"] == "display_data" and first is None:
            first = msg["content"]
        elif msg["msg_type"] == "update_display_data":
            updates.append(msg["content"])
    assert first is not None and len(updates) == 2
    ids = {c["transient"]["display_id"] for c in [first, *updates]}
    assert len(ids) == 1  # the same display, changed in place
    for c in [first, *updates]:
        assert ">CPU %</th>" in c["data"]["text/html"]
        assert c["data"]["text/plain"].splitlines()[1].split()[:3] == ["RANK", "POD", "STATE"]
    kernel.km.interrupt_kernel()  # the stop button ends the watch, not in error
    reply = kernel.kc.get_shell_msg(timeout=15)
    assert reply["content"]["status"] == "ok"
    assert kernel.run("%%remote\nprint('still fine')").stdout.count("still fine") == 2
