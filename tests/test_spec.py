"""PodSpec and its checks: every message must name the option and say what to type instead."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from jupyter_kremote.spec import (
    PodSpec,
    SpecError,
    check_cpu,
    check_dns_label,
    check_dns_subdomain,
    check_label_value,
    check_memory,
    dns_safe_name,
    format_duration,
    label_value,
    parse_duration,
    parse_quantity,
)

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("200m", Decimal("0.2")),
        ("4", Decimal(4)),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+1", Decimal(1)),
        ("-1", Decimal(-1)),
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1536 * 1024**2)),
        ("8Gi", Decimal(8 * 1024**3)),
        ("1Ei", Decimal(1024**6)),
        ("100n", Decimal("0.0000001")),
        ("3u", Decimal("0.000003")),
        ("1k", Decimal(1000)),
        ("12M", Decimal(12_000_000)),
        ("4G", Decimal(4_000_000_000)),
        ("2E", Decimal(2 * 10**18)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("5e-1", Decimal("0.5")),
        (2, Decimal(2)),
        (0.25, Decimal("0.25")),
    ],
)
def test_parse_quantity_valid(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(
    "text",
    ["4G1", "", "Gi", "1 Gi", "1gi", "1KiB", "1.2.3", "e3", "1e", "1e3.5", "0x10", "1Kk", "ten"],
)
def test_parse_quantity_invalid(text: str) -> None:
    with pytest.raises(SpecError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize("value", [True, None, [1]])
def test_parse_quantity_rejects_non_scalars(value: object) -> None:
    with pytest.raises(SpecError):
        parse_quantity(value)  # type: ignore[arg-type]


def test_check_memory_message_says_what_to_fix() -> None:
    with pytest.raises(SpecError) as info:
        check_memory("4G1")
    assert str(info.value) == (
        "--mem 4G1: not a Kubernetes quantity; use a number with an optional suffix such as "
        "512Mi, 8Gi or 4G"
    )


@pytest.mark.parametrize("text", ["512Mi", "8Gi", "4G", "1e9", "0.5Gi", "1000000"])
def test_check_memory_valid(text: str) -> None:
    assert check_memory(text) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("512m", "'m' means milli-bytes; use Mi or M, e.g. 512mi"),
        ("0", "must be more than zero"),
        ("-1Gi", "must be more than zero"),
        ("1.5", "fraction of a byte"),
    ],
)
def test_check_memory_refuses_likely_mistakes(text: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=re.escape(fragment)):
        check_memory(text)


def test_check_memory_uses_the_callers_option_name() -> None:
    with pytest.raises(SpecError, match=r"^--memory 8GB: not a Kubernetes quantity"):
        check_memory("8GB", "--memory")


@pytest.mark.parametrize("text", ["200m", "4", "0.5", "1m"])
def test_check_cpu_valid(text: str) -> None:
    assert check_cpu(text) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "2 cores",
            (
                "--cpu 2 cores: not a Kubernetes quantity; use a number with an optional "
                "suffix such as 500m, 2 or 0.5"
            ),
        ),
        ("0", "--cpu 0: must be more than zero, e.g. 500m or 2"),
        ("100u", "--cpu 100u: Kubernetes counts CPU in millicores; use at least 1m"),
    ],
)
def test_check_cpu_invalid(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        check_cpu(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h30m", 9000.0),
        ("90s", 90.0),
        ("45", 45.0),
        ("1.5h", 5400.0),
        ("1d", 86400.0),
        ("1h 30m", 5400.0),
        ("1h0m30s", 3630.0),
        ("30M", 1800.0),
        ("0.5", 0.5),
        (600, 600.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "", "1h30", "-5", "h", "1x", "inf", "nan", "1h-5m", True])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(SpecError, match=r"expected a duration such as 90s, 30m, 2h or 1h30m$"):
        parse_duration(text)


def test_parse_duration_message_names_the_option() -> None:
    with pytest.raises(SpecError) as info:
        parse_duration("abc", "--ttl")
    assert str(info.value) == "--ttl abc: expected a duration such as 90s, 30m, 2h or 1h30m"
    with pytest.raises(SpecError, match=r"^--timeout 5y:"):
        parse_duration("5y", "--timeout")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (45, "45s"),
        (59.9, "59s"),
        (725, "12m 05s"),
        (3720, "1h 02m"),
        (3600, "1h 00m"),
        (183600, "2d 03h"),
        (-65, "-1m 05s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_dns_safe_name_keeps_valid_names() -> None:
    assert dns_safe_name("jupyter-kremote", "c1") == "jupyter-kremote-c1"
    assert dns_safe_name("abc") == "abc"


def test_dns_safe_name_odd_notebook_path() -> None:
    name = dns_safe_name("My Notebooks/Ünïcode test (1).ipynb")
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63
    assert re.fullmatch(r"my-notebooks-unicode-test-1-ipynb-[0-9a-f]{8}", name)
    assert name == dns_safe_name("My Notebooks/Ünïcode test (1).ipynb")  # deterministic


@pytest.mark.parametrize(
    "text", ["", "---", "日本語", "x" * 200, "UPPER", "a.b", "-lead", "trail-", "a_b", "ü"]
)
def test_dns_safe_name_is_always_a_dns_label(text: str) -> None:
    for max_len in (9, 20, 63):
        name = dns_safe_name(text, max_len=max_len)
        assert DNS_LABEL.fullmatch(name), name
        assert len(name) <= max_len


def test_dns_safe_name_does_not_collide() -> None:
    assert dns_safe_name("a b") != dns_safe_name("a-b") == "a-b"
    assert dns_safe_name("A") != "a"
    long_a, long_b = "n" * 80 + "a", "n" * 80 + "b"
    assert dns_safe_name(long_a) != dns_safe_name(long_b)
    assert len(dns_safe_name(long_a)) == 63
    assert len(dns_safe_name("jupyter-kremote", "x" * 60, max_len=52)) == 52


def test_dns_safe_name_refuses_a_max_len_without_room_for_the_hash() -> None:
    with pytest.raises(ValueError, match="max_len"):
        dns_safe_name("abc", max_len=8)


def test_label_value() -> None:
    assert label_value("") == ""
    assert label_value(None) == ""
    assert label_value("alice") == "alice"
    value = label_value("Ann.Example+x@corp.com")
    assert check_label_value(value, "label") == value
    assert value.startswith("ann-example-x-corp-com-")


def test_dns_checks() -> None:
    assert check_dns_label("a" * 63, "--namespace") == "a" * 63
    with pytest.raises(SpecError, match=r"^--namespace 'a{64}': must be lowercase"):
        check_dns_label("a" * 64, "--namespace")
    with pytest.raises(SpecError, match="--namespace 'a.b'"):
        check_dns_label("a.b", "--namespace")
    assert check_dns_subdomain("a.b-c.d", "name") == "a.b-c.d"
    for bad in ("Bad", "a..b", "-a", "a_b", ""):
        with pytest.raises(SpecError):
            check_dns_subdomain(bad, "name")
    assert check_label_value("NVIDIA-A100_80GB.v2", "label") == "NVIDIA-A100_80GB.v2"
    with pytest.raises(SpecError):
        check_label_value("-x", "label")


def test_podspec_defaults() -> None:
    spec = PodSpec()
    assert (spec.count, spec.gpu, spec.ttl, spec.connect_timeout) == (1, 0, 3600.0, 120.0)
    assert spec.env == {} and spec.secret_env == {} and spec.templates == [] and spec.files == []
    assert PodSpec(ttl=60).ttl == 60.0 and isinstance(PodSpec(ttl=60).ttl, float)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "--count 0: must be at least 1"),
        ({"count": 2.0}, "--count 2.0: expected a whole number"),
        ({"gpu": -1}, "--gpu -1: must be at least 0"),
        ({"gpu": True}, "--gpu True: expected a whole number"),
        (
            {"mem": "4G1"},
            (
                "--mem 4G1: not a Kubernetes quantity; use a number with an optional "
                "suffix such as 512Mi, 8Gi or 4G"
            ),
        ),
        ({"cpu": "lots"}, "--cpu lots: not a Kubernetes quantity"),
        ({"ttl": 0}, "--ttl 0: must be more than zero seconds"),
        ({"ttl": "2h"}, "--ttl '2h': expected seconds; parse text with parse_duration"),
        ({"connect_timeout": -1}, "--timeout -1: must be more than zero seconds"),
        ({"namespace": "Bad_NS"}, "--namespace 'Bad_NS': must be lowercase"),
        ({"name": "my cluster"}, "--name 'my cluster': must be lowercase"),
        (
            {"env": {"KREMOTE_PORT": "1"}},
            "--env KREMOTE_PORT: names starting with KREMOTE_ are reserved for the agent",
        ),
        ({"env": {"1X": "1"}}, "--env 1X: not a valid variable name"),
        ({"env": {"A": 1}}, "--env A: value must be text, not int"),
        (
            {"env": {"A": "1"}, "secret_env": {"A": "2"}},
            "--env A: given both as a plain and a secret value",
        ),
        ({"image": "has space"}, "--image 'has space': expected an image"),
        ({"gpu_type": "A100 80GB"}, "--gpu-type 'A100 80GB'"),
        ({"templates": [""]}, "--template: expected a list of non-empty names"),
    ],
)
def test_podspec_refuses_invalid_fields(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as info:
        PodSpec(**kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_podspec_validate_catches_later_changes() -> None:
    spec = PodSpec(cpu="2", mem="8Gi", gpu=1, count=4, env={"A": "1"}, secret_env={"T": "s"})
    spec.count = 0
    with pytest.raises(SpecError, match="--count 0"):
        spec.validate()


@pytest.mark.parametrize("user", ["alice", "Alice", "a@b.org", "a.b", "a-b", "x" * 80, "Zoë"])
def test_user_namespaces_are_valid_and_distinct(user: str) -> None:
    import re

    from jupyter_kremote.spec import user_namespace

    ns = user_namespace("u-{username}", user)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", ns) and len(ns) <= 63, ns
    others = {user_namespace("u-{username}", u) for u in
              ("alice", "Alice", "a@b.org", "a.b", "a-b", "x" * 80, "Zoë") if u != user}
    assert ns not in others
    if user == "alice":
        assert ns == "u-alice"  # a valid name stays as it is
    assert user_namespace("", user) == ""
