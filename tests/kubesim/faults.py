"""Injected API errors: the next N requests matching a verb/method/path answer an error."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import errors


@dataclass
class ErrorRule:
    """Answer `code` to the next `count` matching requests (None fields match anything)."""

    code: int = 500
    count: int = 1
    verb: str | None = None  # get, list, watch, create, update, patch, delete, deletecollection
    method: str | None = None  # GET, POST, ...
    path: str | None = None  # a regular expression searched in the URL path
    resource: str | None = None  # plural, e.g. "pods", "jobs"
    retry_after: int = 1
    message: str | None = None

    def matches(self, method: str, path: str, verb: str | None, resource: str | None) -> bool:
        return ((self.verb is None or self.verb == verb)
                and (self.method is None or self.method.upper() == method)
                and (self.resource is None or self.resource == resource)
                and (self.path is None or re.search(self.path, path) is not None))


class ErrorInjector:
    """The rules still armed, first added first used."""

    def __init__(self) -> None:
        self.rules: list[ErrorRule] = []

    def add(self, rule: ErrorRule) -> ErrorRule:
        if rule.count < 1:
            raise ValueError("count must be at least 1")
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    def check(self, method: str, path: str, verb: str | None, resource: str | None
              ) -> errors.ApiError | None:
        for rule in self.rules:
            if rule.matches(method, path, verb, resource):
                rule.count -= 1
                if rule.count <= 0:
                    self.rules.remove(rule)
                return errors.from_code(rule.code, rule.message, rule.retry_after)
        return None
