"""The argument types and option checks of ``%%remote`` and ``%remote``: a bad value is one
line that says what to fix (argparse's error or IPython's ``UsageError``), before anything is
created."""

from __future__ import annotations

import argparse
import os

from IPython.core.error import UsageError

from .files import parse_size
from .session import ClusterOptions
from .spec import SpecError, parse_duration

DEFAULT_NAME = "default"


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of agents, got {text!r}")
    if n < 1:
        raise argparse.ArgumentTypeError(f"needs at least 1 agent, got {n}")
    return n


def _seconds(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except SpecError:
        seconds = 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30m, 2h or 1h30m, got {text!r}")
    return seconds


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ranks(text: str) -> list[int]:
    try:
        ranks = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rank such as 0 or 0,2, got {text!r}")
    if not ranks or min(ranks) < 0:
        raise argparse.ArgumentTypeError(f"expected a rank such as 0 or 0,2, got {text!r}")
    return ranks


def _env_pairs(items: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key.isidentifier():
            raise UsageError(f"-e {item}: expected KEY or KEY=VALUE")
        if not sep:
            if key not in os.environ:
                raise UsageError(f"-e {key}: {key} is not set in the kernel's environment; "
                                 f"use -e {key}=VALUE")
            value = os.environ[key]
        env[key] = value
    return env


def cluster_options(args: argparse.Namespace | None, env: dict[str, str]) -> ClusterOptions:
    """Cluster options from %%remote flags, checked before anything is created."""
    backend = getattr(args, "backend", None) or os.environ.get("KREMOTE_BACKEND", "local")
    options = ClusterOptions(backend=backend)
    if args is None:
        return options
    copied = {k for k in (args.env or []) if "=" not in k}  # -e KEY: a Secret on pods
    options.env = {k: v for k, v in env.items() if k not in copied}
    options.secret_env = {k: v for k, v in env.items() if k in copied}
    for attr in ("count", "ttl", "connect_timeout", "image", "cpu", "mem", "gpu",
                 "gpu_type", "namespace", "connect", "queue", "priority", "queue_timeout",
                 "on_preempt"):
        value = getattr(args, attr, None)
        if value is not None:
            setattr(options, attr, value)
    if args.connect_timeout is None and backend == "kubernetes":
        options.connect_timeout = 120.0
    options.templates = list(args.template or [])
    try:
        options.to_spec()
    except SpecError as exc:
        raise UsageError(str(exc)) from None
    return options


def _split(text: str) -> list[str]:
    from IPython.utils.process import arg_split

    return arg_split(text, posix=True)
