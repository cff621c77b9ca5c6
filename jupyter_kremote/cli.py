"""``jupyter kremote render [options]``: print a cluster's manifests without creating them.

Takes the same options as ``%%remote`` (``-t gpu --gpu 1 --mem 8Gi -n 2`` ...).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] != "render":
        print("usage: jupyter kremote render [%%remote options]\n"
              "  prints the Secret and Job a %%remote cell with these options would create",
              file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from IPython.core.error import UsageError

    from .magics import RemoteMagics, _env_pairs, cluster_options
    from .render import render_yaml

    try:
        args = RemoteMagics.remote.parser.parse_args(argv[1:])
        options = cluster_options(args, _env_pairs(args.env))
        sys.stdout.write(render_yaml(args.name, options))
    except (UsageError, ValueError, KeyError) as exc:
        print(f"jupyter kremote render: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
