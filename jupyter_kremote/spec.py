"""What a user asks for (`PodSpec`) and the checks that turn bad input into one-line fixes.

Everything here is pure: no Kubernetes client, no I/O. Users type quantities, durations and
names into magics, so every check raises `SpecError` naming the option, the value and what to
type instead, e.g.::

    --mem 4G1: not a Kubernetes quantity; use a number with an optional suffix such as 512Mi, 8Gi or 4G

Kubernetes names and label values come from user names and notebook paths that may contain
spaces, capitals or accents; `dns_safe_name` is the one helper that makes them valid and keeps
distinct inputs distinct.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

__all__ = [
    "OPTION_NAMES",
    "PodSpec",
    "SpecError",
    "check_cpu",
    "check_dns_label",
    "check_dns_subdomain",
    "check_env_name",
    "check_label_value",
    "check_memory",
    "dns_safe_name",
    "format_duration",
    "label_value",
    "parse_duration",
    "parse_quantity",
]


class SpecError(ValueError):
    """A user-supplied value is invalid; the message is one line saying what to fix."""


#: The magic option that sets each `PodSpec` field, so messages name what the user typed.
OPTION_NAMES: dict[str, str] = {
    "image": "--image",
    "cpu": "--cpu",
    "mem": "--mem",
    "gpu": "--gpu",
    "gpu_type": "--gpu-type",
    "count": "--count",
    "env": "--env",
    "secret_env": "--env",
    "files": "--files",
    "templates": "--template",
    "ttl": "--ttl",
    "connect_timeout": "--timeout",
    "namespace": "--namespace",
    "name": "--name",
    "group": "--group",
    "connect": "--connect",
    "queue": "--queue",
    "priority": "--priority",
    "queue_timeout": "--queue-timeout",
    "on_preempt": "--on-preempt",
}
#: what a cluster does after Kueue evicts its Workload (preemption, PodsReady timeout)
ON_PREEMPT = ("requeue", "end")

#: how the kernel reaches the agents (backends/kubernetes.py): None = the configured default
CONNECT_MODES = ("auto", "direct", "port-forward")

# Kubernetes' quantity grammar (k8s.io/apimachinery/pkg/api/resource): a signed decimal number,
# then one binary-SI suffix, one decimal-SI suffix, or a decimal exponent. "E" alone is exa;
# "E3" is an exponent, which the alternation order below resolves the same way Go does.
_QUANTITY_RE = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<binary>[KMGTPE]i)|[eE](?P<exponent>[+-]?\d+)|(?P<decimal>[numkMGTPE]))?"
)
_GROUP_RE = re.compile(r"[a-z]([a-z0-9-]{0,18}[a-z0-9])?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([dhms])")
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}

_DNS_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE_RE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# The portable env-name rule (Kubernetes < 1.34 enforces it); also a valid Secret data key.
_ENV_NAME_RE = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_RESERVED_ENV_PREFIX = "KREMOTE_"
_HASH_LEN = 8


def parse_quantity(text: str | float) -> Decimal:
    """Return the value of a Kubernetes quantity ("200m" -> 0.2, "1Ki" -> 1024, "1e3" -> 1000).

    Raises `SpecError` for anything the API server would refuse, so errors surface before a
    request is sent. Numbers are accepted because YAML manifests often hold `cpu: 2`.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SpecError(f"{text!r}: not a Kubernetes quantity")
    if isinstance(text, (int, float)):
        return Decimal(str(text))
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        raise SpecError(f"{text!r}: not a Kubernetes quantity")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise SpecError(f"{text!r}: not a Kubernetes quantity") from exc
    if match["binary"]:
        return number * Decimal(1024) ** _BINARY[match["binary"]]
    if match["exponent"] is not None:
        return number.scaleb(int(match["exponent"]))
    if match["decimal"]:
        return number.scaleb(_DECIMAL[match["decimal"]])
    return number


def _quantity_error(option: str, text: str, examples: str) -> SpecError:
    return SpecError(
        f"{option} {text}: not a Kubernetes quantity; "
        f"use a number with an optional suffix such as {examples}"
    )


def check_cpu(text: str, option: str = "--cpu") -> str:
    """Check a CPU request ("200m", "0.5", "4") and return it unchanged."""
    try:
        value = parse_quantity(text)
    except SpecError:
        raise _quantity_error(option, str(text), "500m, 2 or 0.5") from None
    if value <= 0:
        raise SpecError(f"{option} {text}: must be more than zero, e.g. 500m or 2")
    if value < Decimal("0.001"):
        raise SpecError(f"{option} {text}: Kubernetes counts CPU in millicores; use at least 1m")
    return str(text)


def check_memory(text: str, option: str = "--mem") -> str:
    """Check a memory request ("512Mi", "8Gi", "4G") and return it unchanged.

    "512m" is a valid quantity but means 0.512 bytes: almost always a typo for 512Mi, so it is
    refused rather than producing a pod that cannot start.
    """
    try:
        value = parse_quantity(text)
    except SpecError:
        raise _quantity_error(option, str(text), "512Mi, 8Gi or 4G") from None
    if value <= 0:
        raise SpecError(f"{option} {text}: must be more than zero, e.g. 512Mi or 8Gi")
    if isinstance(text, str) and text.endswith("m"):
        raise SpecError(f"{option} {text}: 'm' means milli-bytes; use Mi or M, e.g. {text}i")
    if value != value.to_integral_value():
        raise SpecError(f"{option} {text}: is a fraction of a byte; use e.g. 512Mi or 8Gi")
    return str(text)


def parse_duration(text: str | float, option: str = "--ttl") -> float:
    """Return seconds for "90s", "30m", "2h", "1h30m", "1.5h", "1d" or a bare number of seconds."""
    if isinstance(text, bool):
        raise SpecError(f"{option} {text}: expected a duration such as 90s, 30m, 2h or 1h30m")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        compact = str(text).strip().replace(" ", "").lower()
        seconds = -1.0
        try:
            seconds = float(compact)
        except ValueError:
            pos, total = 0, 0.0
            for match in _DURATION_PART_RE.finditer(compact):
                if match.start() != pos:
                    break
                total += float(match[1]) * _DURATION_UNITS[match[2]]
                pos = match.end()
            if compact and pos == len(compact):
                seconds = total
    if not math.isfinite(seconds) or seconds < 0:
        raise SpecError(f"{option} {text}: expected a duration such as 90s, 30m, 2h or 1h30m")
    return seconds


def format_duration(seconds: float) -> str:
    """Short human text for a countdown: "45s", "12m 05s", "1h 02m", "2d 03h"; "-" when overdue."""
    sign = "-" if seconds < 0 else ""
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def check_dns_label(text: str, what: str) -> str:
    """Check an RFC 1123 label (namespaces, cluster names): lowercase, digits, '-', <= 63."""
    if not isinstance(text, str) or len(text) > 63 or not _DNS_LABEL_RE.fullmatch(text):
        raise SpecError(
            f"{what} {text!r}: must be lowercase letters, digits and '-', start and end with a "
            "letter or digit, at most 63 characters"
        )
    return text


def check_dns_subdomain(text: str, what: str) -> str:
    """Check an RFC 1123 subdomain (most object names): a dotted list of labels, <= 253."""
    if not isinstance(text, str) or len(text) > 253 or not _DNS_SUBDOMAIN_RE.fullmatch(text):
        raise SpecError(
            f"{what} {text!r}: must be lowercase letters, digits, '-' and '.', start and end "
            "with a letter or digit, at most 253 characters"
        )
    return text


def check_label_value(text: str, what: str) -> str:
    """Check a Kubernetes label value: empty, or <= 63 of [A-Za-z0-9._-] starting and ending
    alphanumerically."""
    if not isinstance(text, str) or len(text) > 63 or not _LABEL_VALUE_RE.fullmatch(text):
        raise SpecError(
            f"{what} {text!r}: must be at most 63 letters, digits, '-', '_' or '.', starting "
            "and ending with a letter or digit"
        )
    return text


def check_env_name(name: str, option: str = "--env") -> str:
    """Check an environment variable name that the agent may receive.

    `KREMOTE_*` is reserved: the agent reads its port, key and rank from it, and a user value
    would silently break the connection.
    """
    if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
        raise SpecError(
            f"{option} {name}: not a valid variable name; use letters, digits, '_', '-' or '.', "
            "not starting with a digit"
        )
    if name.upper().startswith(_RESERVED_ENV_PREFIX):
        raise SpecError(f"{option} {name}: names starting with KREMOTE_ are reserved for the agent")
    return name


def dns_safe_name(*parts: str, max_len: int = 63) -> str:
    """Join `parts` with '-' into a valid RFC 1123 label (also a valid label value).

    A name that is already valid comes back unchanged, so it stays readable and predictable.
    Otherwise it is lowercased, accents dropped, every other run of characters becomes '-',
    and an 8-hex-digit hash of the original text is appended; that hash keeps "a b" and "a-b"
    (or two long paths sharing a prefix) from colliding after the change.

    Example:
        >>> dns_safe_name("jupyter-kremote", "c1")
        'jupyter-kremote-c1'
        >>> dns_safe_name("My Notebooks/Ünïcode test (1).ipynb")[:33]
        'my-notebooks-unicode-test-1-ipynb'
    """
    if max_len < _HASH_LEN + 1:
        raise ValueError(f"max_len must be at least {_HASH_LEN + 1}")
    joined = "-".join(str(part) for part in parts if part is not None and str(part) != "")
    if len(joined) <= max_len and _DNS_LABEL_RE.fullmatch(joined):
        return joined
    ascii_text = (
        unicodedata.normalize("NFKD", joined).encode("ascii", "ignore").decode("ascii").lower()
    )
    cleaned = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:_HASH_LEN]
    body = cleaned[: max_len - _HASH_LEN - 1].rstrip("-")
    return f"{body}-{digest}" if body else digest


def user_namespace(template: str, username: str) -> str:
    """A namespace from a template such as ``u-{username}``: the user name goes in made
    DNS-safe by :func:`dns_safe_name` (``Alice`` and ``a@b.org`` are no valid names; each gets
    a short hash of the original, so that ``a.b`` and ``a-b`` stay apart), and the result is
    made a valid name as a whole. ``""`` stays ``""`` (the kubeconfig's namespace).

    Example:
        >>> user_namespace("u-{username}", "alice")
        'u-alice'
    """
    if not template:
        return ""
    return dns_safe_name(template.format(username=dns_safe_name(username)))


def label_value(text: str | None) -> str:
    """A label value for arbitrary text: "" stays "" (a valid value), else `dns_safe_name`."""
    if not text:
        return ""
    return dns_safe_name(text, max_len=63)


def _check_int(value: object, option: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{option} {value!r}: expected a whole number")
    if value < minimum:
        raise SpecError(f"{option} {value}: must be at least {minimum}")
    return value


def _check_positive_seconds(value: object, option: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{option} {value!r}: expected seconds; parse text with parse_duration")
    if not math.isfinite(value) or value <= 0:
        raise SpecError(f"{option} {value}: must be more than zero seconds")
    return float(value)


@dataclass
class PodSpec:
    """The pods a user asks for; the template names plus overrides that win over templates.

    Validated on construction (and again by `validate()` after any change), so a backend never
    sends the API server something it would refuse for a reason the user could have fixed.
    `secret_env` values are never written into a manifest: they go to the cluster's Secret and
    reach the pods through `secretKeyRef`.
    """

    image: str | None = None
    cpu: str | None = None
    mem: str | None = None
    gpu: int = 0
    gpu_type: str | None = None
    count: int = 1
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    ttl: float = 3600.0
    connect_timeout: float = 120.0
    namespace: str | None = None
    name: str | None = None
    group: str = "main"  # the pod group (podgroups.py); labels the pods kremote/group
    connect: str | None = None  # auto | direct | port-forward (None: $KREMOTE_CONNECT)
    #: Kueue: the LocalQueue (label kueue.x-k8s.io/queue-name; the Job starts suspended), the
    #: WorkloadPriorityClass, how long to wait in the queue (None: no limit), and what to do
    #: once evicted (ON_PREEMPT)
    queue: str | None = None
    priority: str | None = None
    queue_timeout: float | None = None
    on_preempt: str = "requeue"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `SpecError` naming the first invalid field's option."""
        opt = OPTION_NAMES
        if self.image is not None and (
            not isinstance(self.image, str)
            or not self.image.strip()
            or any(c.isspace() for c in self.image)
        ):
            raise SpecError(
                f"{opt['image']} {self.image!r}: expected an image such as python:3.11-slim"
            )
        if self.cpu is not None:
            check_cpu(self.cpu, opt["cpu"])
        if self.mem is not None:
            check_memory(self.mem, opt["mem"])
        _check_int(self.gpu, opt["gpu"], 0)
        _check_int(self.count, opt["count"], 1)
        if self.gpu_type is not None:
            check_label_value(self.gpu_type, opt["gpu_type"])
            if not self.gpu_type:
                raise SpecError(
                    f"{opt['gpu_type']}: expected a GPU product such as NVIDIA-A100-SXM4-80GB"
                )
        for what, values in (("env", self.env), ("secret_env", self.secret_env)):
            for key, value in values.items():
                check_env_name(key, opt[what])
                if not isinstance(value, str):
                    raise SpecError(
                        f"{opt[what]} {key}: value must be text, not {type(value).__name__}"
                    )
        both = sorted(set(self.env) & set(self.secret_env))
        if both:
            raise SpecError(f"{opt['env']} {both[0]}: given both as a plain and a secret value")
        for what, items in (("files", self.files), ("templates", self.templates)):
            if not all(isinstance(item, str) and item for item in items):
                raise SpecError(f"{opt[what]}: expected a list of non-empty names")
        self.ttl = _check_positive_seconds(self.ttl, opt["ttl"])
        self.connect_timeout = _check_positive_seconds(self.connect_timeout, opt["connect_timeout"])
        if self.namespace is not None:
            check_dns_label(self.namespace, opt["namespace"])
        if self.name is not None:
            check_dns_label(self.name, opt["name"])
        if self.connect is not None and self.connect not in CONNECT_MODES:
            raise SpecError(f"{opt['connect']} {self.connect!r}: expected one of "
                            f"{', '.join(CONNECT_MODES)}")
        for what in ("queue", "priority"):
            value = getattr(self, what)
            if value is not None:
                check_dns_label(value, opt[what])
        if self.queue_timeout is not None:
            self.queue_timeout = _check_positive_seconds(self.queue_timeout,
                                                         opt["queue_timeout"])
        if self.on_preempt not in ON_PREEMPT:
            raise SpecError(f"{opt['on_preempt']} {self.on_preempt!r}: expected "
                            f"{' or '.join(ON_PREEMPT)}")
        if not isinstance(self.group, str) or not _GROUP_RE.fullmatch(self.group):
            raise SpecError(f"{opt['group']} {self.group!r}: use 1-20 lowercase letters, digits "
                            "or '-', starting with a letter: e.g. train")
