"""``%%remote`` and ``%remote``: the notebook user's interface.

The magics only parse arguments and render output; every action is a call on the
kernel's :class:`~jupyter_kremote.session.Session`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import (
    argument,
    magic_arguments,
    parse_argstring,
)

from .client import Message
from .display import StartProgress
from .errors import ClusterEnded, KRemoteError, RemoteError
from .files import DEFAULT_MAX_FILE_SIZE, human_size
from .magic_args import (
    DEFAULT_NAME,
    _count,
    _env_pairs,
    _ranks,
    _seconds,
    _size,
    cluster_options,
)
from .relay import CommRelay, StdinRelay, kernel_parent_id
from .remote_commands import SUBPARSERS, RemoteCommands
from .session import Cluster, ClusterOptions, Session
from .spec import format_duration


class _Result:
    """The remote cell's last value, shown as this cell's Out[n]."""

    def __init__(self, bundle: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> None:
        self.bundle = bundle
        self.errors = errors or []

    def _repr_mimebundle_(self, include=None, exclude=None):
        for content in self.errors:  # a formatter failed on the agent: shown while the
            _show_remote_error(content)  # kernel shows Out[n], so the cell fails as locally
        return self.bundle

    def __repr__(self) -> str:
        return str(self.bundle.get("text/plain", ""))


class _Output:
    """Renders live output of several ranks: streams labelled per line, displays."""

    def __init__(self, label: bool, comms: CommRelay | None = None) -> None:
        self.label = label
        self.comms = comms
        self.line_start: dict[tuple[int, str], bool] = defaultdict(lambda: True)
        self.results: dict[int, dict[str, Any]] = {}
        self.result_errors: list[dict[str, Any]] = []  # formatter errors of the last value
        #: single rank: what came after the last value or the cell's error (figures shown
        #: at the cell's end), shown after Out[n] / the error as a local kernel does
        self.after: list[tuple[int, Message]] = []

    def __call__(self, rank: int, msg: Message) -> None:
        if not self.label and (self.results or msg.content.get("after_error")):
            self.after.append((rank, msg))
        else:
            self.render(rank, msg)

    def replay(self, *_: Any) -> None:
        held, self.after = self.after, []
        for rank, msg in held:
            self.render(rank, msg)

    def render(self, rank: int, msg: Message) -> None:
        from IPython.display import clear_output, publish_display_data

        if msg.kind == "stream":
            name = msg.content.get("name", "stdout")
            stream = sys.stderr if name == "stderr" else sys.stdout
            stream.write(self._labelled(rank, name, msg.content.get("text", "")))
            stream.flush()
        elif msg.kind == "display":
            meta = dict(msg.content.get("metadata") or {})
            data = msg.content.get("data") or {}
            if meta.pop("kremote_result", False):
                self.results[rank] = data
            elif meta.pop("kremote_clear", False):
                clear_output(wait=meta.get("wait", True))
            else:  # transient display_id and update: update_display_data in place
                publish_display_data(data, meta, transient=msg.content.get("transient"),
                                     update=bool(msg.content.get("update")))
        elif msg.kind == "comm" and self.comms is not None:
            self.comms.from_agent(rank, msg)
        elif msg.kind == "error":  # a traceback the remote cell went on after
            if msg.content.get("in_result") and not self.label:
                self.result_errors.append(msg.content)
            else:
                _show_remote_error(msg.content)

    def _labelled(self, rank: int, name: str, text: str) -> str:
        if not self.label:
            return text
        out = []
        for piece in text.splitlines(keepends=True):
            if self.line_start[(rank, name)]:
                out.append(f"[rank {rank}] ")
            out.append(piece)
            self.line_start[(rank, name)] = piece.endswith("\n")
        return "".join(out)


@magics_class
class RemoteMagics(RemoteCommands, Magics):
    """Magics bound to one kernel's :class:`Session`."""

    def __init__(self, shell, session: Session | None = None) -> None:
        super().__init__(shell)
        self.session = session or Session(os.getcwd())
        self.groups: dict[str, Any] = {}  # cluster name -> its GroupFamily (podgroups.py)

    # -- %%remote ------------------------------------------------------------------------
    @magic_arguments()
    @argument("-n", "--count", type=_count, default=None,
              help="number of agents when the cluster starts (default 1)")
    @argument("--rank", type=_ranks, default=None, help="run on these ranks only: 0 or 0,2")
    @argument("--all", action="store_true", help="run on every rank (the default)")
    @argument("--stdin-rank", type=int, default=None, metavar="R",
              help="the rank whose input() and pdb prompts reach the notebook (default: the "
                   "first rank the cell runs on); the other ranks' prompts wait")
    @argument("--files", nargs="+", default=[], metavar="PATH",
              help="files or folders, relative to the notebook folder, to ship first")
    @argument("--no-auto-files", action="store_true",
              help="do not ship the local modules and files the cell references")
    @argument("--max-file-size", type=_size, default=None,
              help=f"largest file to ship (default {human_size(DEFAULT_MAX_FILE_SIZE)})")
    @argument("-e", "--env", action="append", metavar="KEY[=VALUE]",
              help="set an environment variable on the agents; KEY alone copies the kernel's")
    @argument("--timeout", type=_seconds, default=None,
              help="interrupt the cell after this long: 30, 90s, 5m")
    @argument("--name", default=DEFAULT_NAME, help="which of the notebook's clusters")
    @argument("--group", default=None,
              help="run on this group of the cluster (`%%remote group add NAME` starts one)")
    @argument("--backend", choices=["local", "kubernetes"], default=None,
              help="where agents run (default: $KREMOTE_BACKEND, else local)")
    @argument("--ttl", type=_seconds, default=None,
              help="cluster lifetime when it starts (default 1h)")
    @argument("--connect-timeout", type=_seconds, default=None,
              help="how long to wait for agents to start (default 30s local, 120s pods)")
    @argument("-t", "--template", action="append", default=[], metavar="NAME",
              help="kubernetes: pod template to layer on base, in order (repeatable); "
                   "local: only its services (ports named kremote-<name>) are used")
    @argument("--image", default=None, help="kubernetes: the agents' container image")
    @argument("--cpu", default=None, help="kubernetes: CPU per agent: 500m, 4")
    @argument("--mem", default=None, help="kubernetes: memory per agent: 512Mi, 8Gi")
    @argument("--gpu", type=int, default=None, help="kubernetes: GPUs per agent")
    @argument("--gpu-type", default=None, help="kubernetes: GPU model (node selector): a100")
    @argument("--namespace", default=None, help="kubernetes: namespace of the pods")
    @argument("--connect", choices=["auto", "direct", "port-forward"], default=None,
              help="kubernetes: reach agents at their pod IPs (direct) or through the API "
                   "server's port-forward (default: $KREMOTE_CONNECT, else auto)")
    @argument("--queue", default=None,
              help="kubernetes: Kueue LocalQueue to wait in (default: $KREMOTE_QUEUE)")
    @argument("--priority", default=None, help="kubernetes: Kueue WorkloadPriorityClass")
    @argument("--queue-timeout", type=_seconds, default=None,
              help="kubernetes: give up after this long in the queue (default: no limit)")
    @argument("--on-preempt", choices=["requeue", "end"], default=None,
              help="kubernetes: after Kueue preempts the cluster, wait in the queue again "
                   "for the next cell (requeue, the default) or end it")
    @cell_magic
    def remote(self, line: str, cell: str) -> Any:
        """Run the cell on this notebook's cluster, started on first use.

        Examples::

            %%remote -n 2 --files helpers.py data/
            import os, helpers
            print("hello from rank", os.environ["KREMOTE_RANK"])

            %%remote --rank 0 --timeout 5m
            train(model)
        """
        args = parse_argstring(self.remote, line)
        env = _env_pairs(args.env)
        cluster = self._cluster(args, env)
        self._ship(cluster, cell, args.files, args.no_auto_files, args.max_file_size, args.rank)
        ranks = None if args.all else args.rank
        targets = ranks if ranks is not None else cluster.ranks
        stdin_rank = min(targets) if args.stdin_rank is None else args.stdin_rank
        if stdin_rank not in targets:
            raise UsageError(f"--stdin-rank {stdin_rank}: the cell runs on rank(s) "
                             f"{','.join(map(str, targets))}; pick one of them")
        output = _Output(label=len(targets) > 1, comms=self._comms(cluster))
        # a comment stands for the %%remote line, so remote line numbers match the cell's;
        # a cell magic (%%time, %%bash) must stay on the first line, and numbers its body
        code = cell if cell.startswith("%%") else f"# %%remote {line}\n{cell}"
        replies = cluster.run(code, ranks=ranks, on_output=output,
                              timeout=args.timeout, env=env,
                              execution_count=self.shell.execution_count - 1,
                              on_input=StdinRelay(stdin_rank),
                              parent_msg_id=kernel_parent_id(self.shell))
        self._payloads(line, replies)
        errors = [(r, c) for r, c in replies.items() if c.get("status") == "error"]
        for r, c in errors[1:]:
            print(f"[rank {r}] {c.get('ename')}: {c.get('evalue')}", file=sys.stderr)
        if errors:
            if output.after:  # after the kernel has shown the error
                self._after_cell(output.replay)
            raise RemoteError.from_reply(*errors[0])
        if len(targets) == 1:
            bundle = output.results.get(targets[0])
            if output.after:  # after the kernel's displayhook has shown Out[n]
                self._after_cell(output.replay)
            if not bundle:
                for content in output.result_errors:
                    _show_remote_error(content)
                return None
            return _Result(bundle, output.result_errors)
        from IPython.display import publish_display_data

        for r, bundle in sorted(output.results.items()):
            print(f"[rank {r}] Out:")
            publish_display_data(bundle)
        return None

    def _comms(self, cluster: Cluster) -> CommRelay:
        """The cluster's widget relay: comm messages shown as this kernel's own."""
        if cluster.comms is None:
            cluster.comms = CommRelay(cluster, self.shell,
                                      lambda: _Output(label=False, comms=cluster.comms))
        return cluster.comms

    def _after_cell(self, fn: Any) -> None:
        """Call ``fn`` once, when the running cell has ended (post_execute)."""
        events = self.shell.events

        def once() -> None:
            events.unregister("post_execute", once)
            fn()

        events.register("post_execute", once)

    def _payloads(self, line: str, replies: dict[int, dict[str, Any]]) -> None:
        """The first rank's ipykernel payloads: ``%load`` fills the cell (under its
        ``%%remote`` line), the pager (``%prun``, ``obj?``) opens in the notebook."""
        for payload in next((c["payload"] for c in replies.values() if c.get("payload")), []):
            if payload.get("source") == "set_next_input":
                text = payload.get("text", "")
                if payload.get("replace"):
                    text = f"%%remote {line}".rstrip() + "\n" + text
                self.shell.set_next_input(text, replace=bool(payload.get("replace")))
            elif payload.get("source") == "page":
                from IPython.core import page

                page.page(payload.get("data") or {}, payload.get("start", 0))

    def _cluster(self, args: argparse.Namespace | None, env: dict[str, str],
                 name: str = DEFAULT_NAME) -> Cluster:
        """The named cluster, started from ``args`` if it is not running."""
        name = args.name if args is not None else name
        group = getattr(args, "group", None)
        if group not in (None, "main"):  # podgroups.DEFAULT_GROUP
            return self._group(name, group)
        existing = self.session.clusters.get(name)
        if existing is not None:
            count = getattr(args, "count", None)
            backend = getattr(args, "backend", None)
            if count is not None and count != len(existing.ranks):
                hint = "" if name == DEFAULT_NAME else f" --name {name}"
                raise UsageError(
                    f"cluster {name!r} has {len(existing.ranks)} agent(s), not {count}; "
                    f"`%remote restart{hint} -n {count}` starts it anew with {count}")
            if backend is not None and backend != existing.options.backend:
                raise UsageError(f"cluster {name!r} runs on the {existing.options.backend} "
                                 f"backend; use another --name for a {backend} cluster")
            existing.check_usable()
            return existing
        return self._start(name, cluster_options(args, env))

    def _start(self, name: str, options: ClusterOptions) -> Cluster:
        why = self.session.ended.pop(name, None)
        if why:  # it ended while no kernel of this notebook ran (its server stopped, say)
            print(f"[kremote] cluster {name!r} ended: {why}; starting a new one",
                  file=sys.stderr)
        progress = StartProgress(name, options.count, options.backend)
        try:
            cluster = self.session.ensure(name, options, progress=progress)
        except ClusterEnded:
            raise
        except (RuntimeError, TimeoutError, ValueError, KeyError) as exc:
            raise ClusterEnded(f"cluster {name!r} could not start: {exc}") from None
        for warning in cluster.warnings:
            print(f"[kremote] warning: {warning}", file=sys.stderr)
        progress.ready(f"cluster {name!r}: {options.count} {options.backend} agent(s) ready "
                       f"in {progress.elapsed:.2f}s, TTL {format_duration(options.ttl)}")
        return cluster

    def _ship(self, cluster: Cluster, cell: str, explicit: list[str], no_auto: bool,
              max_size: int | None, ranks: list[int] | None) -> None:
        collector = cluster.files
        if max_size is not None:
            collector.max_file_size = max_size
        entries = collector.explicit(explicit)
        if not no_auto:
            code = self.shell.transform_cell(cell) if self.shell else cell
            known = {e.path for e in entries}
            entries += [e for e in collector.referenced(code) if e.path not in known]
        sent = cluster.send_files(entries, ranks=ranks)
        if sent:
            listing = ", ".join(f"{e.path} ({human_size(e.size)})" for e in entries[:8])
            more = f" and {len(entries) - 8} more" if len(entries) > 8 else ""
            print(f"[kremote] files: {listing}{more}; {human_size(sent)} sent", file=sys.stderr)

    # -- %remote -------------------------------------------------------------------------
    @line_magic("remote")
    def remote_line(self, line: str) -> Any:
        """Manage the notebook's clusters and move variables.

        Examples::

            %remote status
            %remote top
            %remote push df model
            %remote pull result --rank 0
            %remote logs --rank 1
            %remote logs --rank 0 --follow
            %remote events
            %remote render -t gpu --gpu 1 --mem 8Gi
            %remote extend 30m
            %remote restart -n 4
            %remote shutdown
            %remote tasks
            %remote group add train --gpu 1 -n 2
            %remote open tb
        """
        words = line.split()
        if not words:
            raise UsageError("usage: %remote status | top | push NAME... | pull NAME... "
                             "[--rank R] | logs [--rank R] [--follow] | events | "
                             "render [options] | extend DURATION | restart | shutdown | tasks | "
                             "group add NAME [options] | open [SERVICE]")
        sub, rest = words[0], " ".join(words[1:])
        handler = getattr(self, f"_cmd_{sub}", None)
        if handler is None:
            raise UsageError(f"%remote {sub}: unknown command; use one of status, top, push, "
                             "pull, logs, events, render, doctor, extend, restart, shutdown, tasks, "
                             "group, open")
        if sub == "group":  # takes %%remote's own options after the group's name
            return handler(argparse.Namespace(rest=rest))
        if sub in ("render", "doctor"):  # take %%remote's own options
            return handler(argparse.Namespace(rest=rest))
        parser = SUBPARSERS[sub]
        return handler(parser.parse_argstring(rest))


def _show_remote_error(content: dict[str, Any]) -> None:
    """An error output for a remote traceback, as the kernel publishes its own."""
    from IPython import get_ipython

    ename = str(content.get("ename") or "RemoteError")
    error = RemoteError.from_reply(0, content)
    stb = list(content.get("traceback") or []) or [f"{ename}: {error.evalue}"]
    shell = get_ipython()
    if shell is not None:
        shell._showtraceback(type(error), error, stb)
    else:
        print("\n".join(stb), file=sys.stderr)


def show_error(shell, etype, value, tb, tb_offset=None):
    """Custom exception display: remote tracebacks as the agent saw them; our own errors
    as one line, without kernel-side frames a user cannot act on."""
    if isinstance(value, RemoteError):
        if value.ename == "UsageError":  # as IPython shows one: the agent's stderr line
            return []                    # ("UsageError: ...") already said it, no error
        stb = list(value.remote_traceback) or [f"{value.ename}: {value.evalue}"]
    else:
        stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def register(shell) -> RemoteMagics:
    magics = RemoteMagics(shell)
    shell.register_magics(magics)
    shell.set_custom_exc((RemoteError, KRemoteError), show_error)
    return magics
