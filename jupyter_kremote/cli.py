"""``jupyter kremote render|doctor [options]``: print a cluster's manifests without creating
them, or check that it can start here.

Both take the same options as ``%%remote`` (``-t gpu --gpu 1 --mem 8Gi -n 2`` ...).
"""

from __future__ import annotations

import sys

USAGE = """usage: jupyter kremote render [%%remote options]
  prints the Secret and Job a %%remote cell with these options would create
usage: jupyter kremote doctor [--namespace NS] [%%remote options]
  checks, with your credentials, that such a cluster can start here: one line per check"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("render", "doctor"):
        print(USAGE, file=sys.stderr if argv and argv[0] not in ("-h", "--help")
              else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from IPython.core.error import UsageError

    from .magics import RemoteMagics, _env_pairs, cluster_options

    try:
        args = RemoteMagics.remote.parser.parse_args(argv[1:])
        options = cluster_options(args, _env_pairs(args.env))
        if argv[0] == "doctor":
            from .doctor import FAIL, report, run_doctor

            checks = run_doctor(args.name, options)
            sys.stdout.write(report(checks))
            return 1 if any(c.status == FAIL for c in checks) else 0
        from .render import render_yaml

        sys.stdout.write(render_yaml(args.name, options))
    except (UsageError, ValueError, KeyError) as exc:
        print(f"jupyter kremote {argv[0]}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
