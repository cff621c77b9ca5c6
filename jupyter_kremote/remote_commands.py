"""``%remote``'s subcommands: status, top, push, pull, logs, events, render, doctor, extend,
restart, shutdown, group, tasks and open.

:class:`RemoteCommands` holds one ``_cmd_<name>`` method per subcommand; the ``%remote`` line
magic (magics.py) parses the flags with ``SUBPARSERS[name]`` and calls it. Like the magics,
these only parse and render: every action is a call on the kernel's session.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser, parse_argstring

from .display import Live, status_table, top_table
from .magic_args import (
    DEFAULT_NAME,
    _count,
    _env_pairs,
    _ranks,
    _seconds,
    _split,
    cluster_options,
)
from .session import Cluster, ClusterOptions, Session
from .spec import format_duration


class RemoteCommands:
    """The ``%remote`` subcommands, mixed into :class:`~jupyter_kremote.magics.RemoteMagics`
    (which holds the session, the shell and the groups, and starts clusters)."""

    session: Session
    shell: Any
    groups: dict[str, Any]  # cluster name -> its GroupFamily (podgroups.py)

    if TYPE_CHECKING:
        remote: Any  # the %%remote cell magic: its flags are parsed for render and doctor

        def _cluster(self, args: argparse.Namespace | None, env: dict[str, str],
                     name: str = DEFAULT_NAME) -> Cluster: ...

        def _start(self, name: str, options: ClusterOptions) -> Cluster: ...

    def _cmd_status(self, args: argparse.Namespace) -> None:
        """Each cluster and its ranks; ``--watch S`` refreshes in place until stopped."""
        if not self.session.clusters:
            print("no clusters; a %%remote cell starts one")
            return
        cluster = self._get(args.name)

        def view() -> dict[str, str]:
            return status_table(cluster).bundle()

        _watch(view, args.watch)

    def _cmd_top(self, args: argparse.Namespace) -> None:
        """CPU, memory and GPUs per agent, like ``arena top node``; ``--watch S`` refreshes
        in place until stopped."""
        if not self.session.clusters:
            print("no clusters; a %%remote cell starts one")
            return
        cluster = self._get(args.name)
        if cluster.telemetry():  # CPU use is over the time since the last sample: measure
            time.sleep(0.5)      # over the next half second, not since whenever that was

        def view() -> dict[str, str]:
            rows = cluster.status()
            return top_table(cluster, rows, cluster.telemetry()).bundle()

        _watch(view, args.watch)

    def _cmd_push(self, args: argparse.Namespace) -> None:
        ns = self.shell.user_ns
        missing = [n for n in args.names if n not in ns]
        if missing:
            raise UsageError(f"%remote push: name {missing[0]!r} is not defined in the kernel")
        cluster = self._cluster(None, {}, args.name)  # starts it if needed
        cluster.push({n: ns[n] for n in args.names}, ranks=args.rank)

    def _cmd_pull(self, args: argparse.Namespace) -> None:
        cluster = self._get(args.name)
        values = cluster.pull(args.names, ranks=args.rank)
        single = args.rank is not None and len(args.rank) == 1
        for n in args.names:
            per_rank = [values[r][n] for r in sorted(values)]
            self.shell.user_ns[n] = per_rank[0] if single else per_rank

    def _cmd_logs(self, args: argparse.Namespace) -> None:
        cluster = self._get(args.name)
        if args.follow:
            ranks = args.rank or [0]
            if len(ranks) != 1:
                raise UsageError("%remote logs --follow: pick one rank with --rank R")
            try:
                cluster.follow_logs(ranks[0], _write_now)
            except KeyboardInterrupt:
                print("\n(stopped following)")
            return
        for r in args.rank or cluster.ranks:
            text = cluster.logs(r, args.tail)
            print(f"--- rank {r} ---")
            print(text if text else "(no output)")

    def _cmd_events(self, args: argparse.Namespace) -> None:
        cluster = self._get(args.name)
        events = cluster.events(args.tail)
        if not events:
            print(f"no events for cluster {cluster.name!r}"
                  + (" (local agents have none)" if cluster.options.backend == "local" else ""))
        for line in events:
            print(line)

    def _cmd_render(self, args: argparse.Namespace) -> None:
        """Print the manifests a %%remote with these options would create; create nothing."""
        opts = parse_argstring(self.remote, args.rest)
        options = cluster_options(opts, _env_pairs(opts.env))
        from .render import render_yaml

        try:
            print(render_yaml(opts.name, options, notebook=self.session.notebook), end="")
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def _cmd_doctor(self, args: argparse.Namespace) -> None:
        """Check, with this kernel's credentials, that such a cluster can start; one line
        per check with its fix."""
        opts = parse_argstring(self.remote, args.rest)
        options = cluster_options(opts, _env_pairs(opts.env))
        from .doctor import report, run_doctor

        try:
            print(report(run_doctor(opts.name, options)), end="")
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    def _cmd_extend(self, args: argparse.Namespace) -> None:
        cluster = self._get(args.name)
        deadline = cluster.extend(args.duration)
        print(f"cluster {cluster.name!r}: TTL now ends in "
              f"{format_duration(deadline - time.time())} ({time.strftime('%H:%M:%S', time.localtime(deadline))})")

    def _cmd_restart(self, args: argparse.Namespace) -> None:
        old = self.session.clusters.get(args.name)
        options = ClusterOptions() if old is None else old.options
        if args.count is not None:
            options = ClusterOptions(**{**options.__dict__, "count": args.count})
        if old is not None:
            self.session.shutdown(args.name)
        self._start(args.name, options)

    def _cmd_shutdown(self, args: argparse.Namespace) -> None:
        names = list(self.session.clusters) if args.all else [args.name]
        for name in names:
            self._get(name)
            self.session.shutdown(name)
            print(f"cluster {name!r} shut down")

    def _group(self, name: str, group: str) -> Cluster:
        family = self.groups.get(name)
        cluster = self.session.clusters.get(family.cluster_name(group)) if family else None
        if cluster is None or family is None or group not in family.members:
            hint = "" if name == DEFAULT_NAME else f" --name {name}"
            raise UsageError(f"no group {group!r} in cluster {name!r}; start it with "
                             f"`%remote group add {group}{hint} -n 2` (and --gpu, --cpu...)")
        cluster.check_usable()
        return cluster

    def _cmd_group(self, args: argparse.Namespace) -> None:
        """``%remote group add NAME [%%remote's options]`` and ``%remote group list``."""
        from .podgroups import DEFAULT_GROUP, GroupFamily, channel_addrs, check_group_name

        words = _split(args.rest)
        if words[:1] == ["list"]:
            for name, family in self.groups.items():
                for g, (c, addrs) in family.members.items():
                    print(f"cluster {name!r} group {g!r}: {len(c.ranks)} agent(s) "
                          f"[{c.options.backend}] channels {', '.join(addrs)}")
            if not self.groups:
                print("no groups; `%remote group add train -n 2` starts one")
            return
        if len(words) < 2 or words[0] != "add":
            raise UsageError("usage: %remote group add NAME [-n COUNT] [--gpu N] [--cpu C] "
                             "[--mem M] [-t TEMPLATE] [--name CLUSTER] | %remote group list")
        try:
            group = check_group_name(words[1])
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        opts = parse_argstring(self.remote, " ".join(words[2:]))
        family = self.groups.setdefault(opts.name, GroupFamily(opts.name))
        if group == DEFAULT_GROUP or family.cluster_name(group) in self.session.clusters:
            raise UsageError(f"cluster {opts.name!r} already has a group {group!r}")
        main = self.session.clusters.get(opts.name)
        if main is not None and DEFAULT_GROUP not in family.members and main.ended is None:
            family.members[DEFAULT_GROUP] = (main, channel_addrs(main.handle.endpoints))
        options = cluster_options(opts, _env_pairs(opts.env))
        options.group = group  # labels its pods, and the panel lists them under it
        if main is not None:  # one TTL for the cluster's groups
            options.ttl = max(main.deadline - time.time(), 1.0)
        cluster = self._start(family.cluster_name(group), options)
        family.add(group, cluster)
        print(f"group {group!r} of cluster {opts.name!r}: {len(cluster.ranks)} agent(s); "
              f"run cells there with `%%remote --group {group}`")

    def _cmd_tasks(self, args: argparse.Namespace) -> None:
        """Done, running and failed counts of this kernel's recent maps."""
        from .mapper import RECENT

        maps = [m for m in RECENT if args.name in (DEFAULT_NAME, m.cluster)]
        if not maps:
            print("no maps yet; `await cluster.map(fn, inputs)` runs one")
        for m in maps:
            print(f"cluster {m.cluster!r} {m.line()}")

    def _cmd_open(self, args: argparse.Namespace) -> None:
        """Links to the cluster's services (ports named kremote-<name>), through the server."""
        from IPython.display import display

        from . import service_links

        cluster = self._get(args.name)
        cluster.check_usable()
        found = service_links.find(cluster, args.service or "")
        if not found:
            have = ", ".join(s.name for s in service_links.links(cluster))
            what = f"no service {args.service!r}" if args.service else "no services"
            raise UsageError(
                f"cluster {args.name!r} has {what}; "
                + (f"its services: {have}" if have else "a template with a container port "
                   "named kremote-<name> declares one (-t tensorboard)"))
        display(service_links.bundle(args.name, found), raw=True)

    def _get(self, name: str) -> Cluster:
        try:
            return self.session.get(name)
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None


class _SubParser(MagicArgumentParser):
    """A subcommand's flags, split as a shell would (quotes keep a path with spaces whole)."""

    def parse_argstring(self, argstring: str, *, partial: bool = False) -> argparse.Namespace:
        return self.parse_args(_split(argstring))


def _parser(prog: str, *specs: tuple[tuple[str, ...], dict[str, Any]]) -> _SubParser:
    p = _SubParser(prog=f"%remote {prog}", add_help=False)
    p.add_argument("--name", default=DEFAULT_NAME)
    for flags, kw in specs:
        p.add_argument(*flags, **kw)
    return p


_RANK = (("--rank",), {"type": _ranks, "default": None})
_WATCH = (("--watch",), {"type": _seconds, "default": None, "nargs": "?", "const": 1.0})
SUBPARSERS: dict[str, _SubParser] = {
    "status": _parser("status", _WATCH),
    "top": _parser("top", _WATCH),
    "push": _parser("push", (("names",), {"nargs": "+"}), _RANK),
    "pull": _parser("pull", (("names",), {"nargs": "+"}), _RANK),
    "logs": _parser("logs", _RANK, (("--tail",), {"type": int, "default": 200}),
                    (("--follow", "-f"), {"action": "store_true"})),
    "events": _parser("events", (("--tail",), {"type": int, "default": 50})),
    "render": _parser("render", (("rest",), {"nargs": argparse.REMAINDER})),
    "doctor": _parser("doctor", (("rest",), {"nargs": argparse.REMAINDER})),
    "extend": _parser("extend", (("duration",), {"type": _seconds})),
    "restart": _parser("restart", (("-n", "--count"), {"type": _count, "default": None})),
    "shutdown": _parser("shutdown", (("--all",), {"action": "store_true"})),
    "tasks": _parser("tasks"),
    "group": _parser("group"),
    "open": _parser("open", (("service",), {"nargs": "?", "default": None})),
}


def _write_now(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _top_table(rows: list[dict[str, Any]], samples: dict[int, dict[str, Any]],
               options: ClusterOptions) -> str:
    """``%remote top``'s rows as text (the table without its title)."""
    cluster = argparse.Namespace(options=options, deadline=0.0, ended="", name="", ranks=[])
    return top_table(cluster, rows, samples).text().split("\n", 1)[1]


def _watch(view: Callable[[], dict[str, str]], every: float | None) -> None:
    """Show ``view()``; with ``every``, refresh it in place until the stop button."""
    live = Live()
    live.show(view())
    if not every:
        return
    try:
        while True:
            time.sleep(every)
            live.show(view())
    except KeyboardInterrupt:
        pass  # the stop button ends the watch; the last table stays
