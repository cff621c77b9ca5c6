"""jupyter-kremote benchmark: kremote against its peers, all on loopback, one run.

    .venv/bin/python bench/run.py [--quick] [--only a,b,c] [--json PATH]

(a) trivial-cell latency, (b) 256 MiB push + pull throughput, (c) cluster start to
first result, (d) a map of 10,000 tiny tasks against dask and ipyparallel, (e) 200
tasks of 50 ms against the ideal, (f) a map during which an agent is killed. Prints a markdown table per section and a summary of the targets. No
assertion anywhere: a MISS is information, not a failure. See bench/README.md.

Only the standard library is imported at the top: multiprocessing (dask's workers)
re-imports this file in every process it spawns.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from typing import Any

SECTIONS = ("a", "b", "c", "d", "e", "f")
ALIASES = {"latency": "a", "trivial": "a", "throughput": "b", "transfer": "b",
           "push": "b", "start": "c", "startup": "c", "map": "d", "tasks": "d",
           "balance": "e", "kill": "f"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions (about a minute instead of about three)")
    p.add_argument("--only", default="",
                   help="comma-separated sections to run: a (latency), b (transfer), "
                        "c (start-up), d (map tasks/s), e (map balance), f (agent killed); "
                        "default all")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--calls", type=int, help="(a) timed calls per peer")
    p.add_argument("--rounds", type=int, help="(b) timed push+pull rounds per peer")
    p.add_argument("--starts", type=int, help="(c) timed starts per peer")
    args = p.parse_args(argv)
    only = [s.strip().lower() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    only = [ALIASES.get(s, s) for s in only]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        p.error(f"unknown section {bad[0]!r} (choose from a, b, c, d, e, f)")
    args.sections = [s for s in SECTIONS if s in only]
    return args


# -- rendering ----------------------------------------------------------------------------------
def ratio_values(sec: Any, ratio: Any) -> tuple[float, float]:
    """(at median, at p99) of a ratio, in the section's shown unit; nan when missing."""
    num = sec.figure(ratio.num)
    den = sec.figure(ratio.den) if ratio.den else None
    if num is None or not num.ok or (ratio.den and (den is None or not den.ok)):
        return math.nan, math.nan
    if den is None:
        return sec.shown(num.median), sec.shown(num.p99)
    return (sec.shown(num.median) / sec.shown(den.median),
            sec.shown(num.p99) / sec.shown(den.p99))


def verdict(value: float, op: str | None, target: float | None) -> str:
    if op is None or target is None:
        return "info"
    if math.isnan(value):
        return "n/a"
    ok = {"<=": value <= target, ">=": value >= target, "<": value < target,
          ">": value > target}[op]
    return "PASS" if ok else "MISS"


def show_ratio(value: float, absolute: bool) -> str:
    from stats import fmt

    if math.isnan(value):
        return "-"
    return fmt(value) + ("" if absolute else "x")


def show_target(ratio: Any) -> str:
    if ratio.op is None:
        return "-"
    from stats import fmt

    return f"{ratio.op} {fmt(ratio.target, 2)}{'' if ratio.den is None else 'x'}"


def render_section(sec: Any) -> str:
    from stats import fmt, table

    out = [f"### {sec.title}", ""]
    if sec.kind == "throughput":
        headers = ["what", "rounds", "median s/round", "p99 s/round",
                   "GB/s at median", "GB/s at p99"]
        rows = [[f.what, f.n, fmt(f.median) if f.ok else "-", fmt(f.p99) if f.ok else "-",
                 fmt(sec.shown(f.median)) if f.ok else "-",
                 fmt(sec.shown(f.p99)) if f.ok else "-"] for f in sec.figures]
    else:
        headers = ["what", "n", f"median {sec.unit}", f"p99 {sec.unit}"]
        rows = [[f.what, f.n, fmt(sec.shown(f.median)) if f.ok else "-",
                 fmt(sec.shown(f.p99)) if f.ok else "-"] for f in sec.figures]
    out.append(table(headers, rows))
    for f in sec.figures:
        if f.error:
            out.append(f"\n- {f.key}: no figure ({f.error})")
    out.append("")
    rows = []
    for r in sec.ratios:
        med, p99 = ratio_values(sec, r)
        rows.append([r.label, show_ratio(med, r.den is None), show_ratio(p99, r.den is None),
                     show_target(r), verdict(med, r.op, r.target)])
    out.append(table(["ratio", "at median", "at p99", "target (on median)", "result"], rows))
    out.extend(f"\n- note: {n}" for n in sec.notes)
    return "\n".join(out)


def render_summary(sections: list[Any]) -> str:
    from stats import table

    rows = []
    for sec in sections:
        for r in sec.ratios:
            if r.op is None:
                continue
            med, p99 = ratio_values(sec, r)
            rows.append([f"({sec.key}) {r.label}", show_target(r),
                         show_ratio(med, r.den is None), show_ratio(p99, r.den is None),
                         verdict(med, r.op, r.target)])
    return "### Summary\n\n" + table(
        ["target", "wanted", "measured (median)", "at p99", "result"], rows)


def environment() -> dict[str, Any]:
    import zmq

    versions = {"python": platform.python_version(), "pyzmq": zmq.__version__,
                "libzmq": zmq.zmq_version()}
    for name in ("numpy", "ipyparallel", "distributed", "jupyter_kremote"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing peer is reported where it is used
            versions[name] = "missing"
    return {"host": platform.node(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), **versions}


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cleanup import Reaper, checkpoint, ignore_interrupts, install_signal_handlers
    from sections import RUNNERS, Config, Shared

    install_signal_handlers()
    cfg = Config.quick() if args.quick else Config()
    for name in ("calls", "rounds", "starts"):
        if getattr(args, name):
            setattr(cfg, name, getattr(args, name))
    reaper = Reaper()
    shared = Shared(reaper)
    done: list[Any] = []
    env = environment()
    status = 0
    t_start = time.monotonic()
    print(f"# jupyter-kremote benchmark ({'quick' if args.quick else 'full'}), "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    print(f"{env['platform']}, {env['cpus']} CPUs, load average at start "
          f"{' '.join(f'{x:.2f}' for x in env['loadavg_start'])}; python {env['python']}, "
          f"pyzmq {env['pyzmq']} (libzmq {env['libzmq']}), ipyparallel {env['ipyparallel']}, "
          f"distributed {env['distributed']}, numpy {env['numpy']}\n", flush=True)
    try:
        for key in args.sections:
            checkpoint()
            sec = RUNNERS[key](cfg, reaper, shared)
            done.append(sec)
            if not {"a", "b"} & set(args.sections[args.sections.index(key) + 1:]):
                shared.close()  # no later section needs the warm ipyparallel cluster
            print("\n" + render_section(sec) + "\n", flush=True)
        checkpoint()
    except KeyboardInterrupt:
        status = 130
        print("\ninterrupted: stopping everything the benchmark started", file=sys.stderr,
              flush=True)
    finally:
        ignore_interrupts()
        killed = reaper.finish()
        left = reaper.left()
    if done:
        print(render_summary(done) + "\n")
    elapsed = time.monotonic() - t_start
    load = os.getloadavg()
    print(f"took {elapsed:.0f} s; load average at end {' '.join(f'{x:.2f}' for x in load)}; "
          f"left running: {'nothing' if not left else len(left)}"
          + (f"; had to terminate {len(killed)}: {killed}" if killed else ""))
    if args.json:
        write_json(args.json, args, cfg, env, done, elapsed, load, status)
        print(f"results written to {args.json}")
    return status


def write_json(path: str, args: Any, cfg: Any, env: dict[str, Any], done: list[Any],
               elapsed: float, load: tuple[float, ...], status: int) -> None:
    from dataclasses import asdict

    out = {"quick": args.quick, "sections_run": [s.key for s in done],
           "interrupted": status != 0, "config": asdict(cfg), "environment": env,
           "elapsed_s": elapsed, "loadavg_end": load, "sections": []}
    for sec in done:
        ratios = []
        for r in sec.ratios:
            med, p99 = ratio_values(sec, r)
            ratios.append({"label": r.label, "num": r.num, "den": r.den, "op": r.op,
                           "target": r.target, "median": None if math.isnan(med) else med,
                           "p99": None if math.isnan(p99) else p99,
                           "result": verdict(med, r.op, r.target)})
        out["sections"].append({
            "key": sec.key, "title": sec.title, "kind": sec.kind, "unit": sec.unit,
            "bytes_per_round": sec.nbytes or None, "notes": sec.notes,
            "figures": [f.to_json() for f in sec.figures], "ratios": ratios})
    with open(path, "w") as fh:
        json.dump(out, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
