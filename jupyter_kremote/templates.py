"""Find pod templates by name, fill in their `${variables}` and layer them onto each other.

A template is a YAML fragment of a batch/v1 Job (or, for `rbac`, a set of whole objects).
A name resolves, first match wins:

1. a path to a local YAML file (it ends in .yaml/.yml or contains a '/');
2. ``configmap:NAME/KEY``: read through the injected ``configmap_loader(name, key)``, since this
   module never talks to the API server (an admin's ConfigMap can also be mounted as a folder);
3. the admin's template folders, in the order given (``NAME.yaml`` or ``NAME.yml``);
4. the admin's ConfigMap of templates, if one is named (key ``NAME.yaml``;
   ``c.KRemoteApp.template_configmap`` or ``KREMOTE_TEMPLATE_CONFIGMAP``);
5. the builtin templates shipped with the package.

Variables
---------
String values may hold ``${name}`` placeholders, filled from the variables the caller passes
(see `manifests.render_cluster` for the list it provides). The substitution is deliberately
small so that template text can never run code:

* ``${name}`` is replaced by the variable's value; an unknown name is an error listing the
  known ones.
* ``${name:-default}`` uses ``default`` when the variable is not set.
* An unquoted value that is exactly one placeholder keeps the variable's type, so
  ``parallelism: ${count}`` stays an integer and a default there is read as YAML
  (``${gpu:-1}`` -> 1); quote it to get text: ``value: "${count}"`` -> "4".
* ``$${`` writes a literal ``${``. Kubernetes' own ``$(VAR)`` syntax passes through untouched.
* Only values are substituted, after the YAML is parsed, so a value can never inject YAML.
  Inside flow collections (``{a: b}``, ``[a]``) a placeholder must be quoted: YAML reads
  ``{`` there as syntax.

Layering (`merge`)
------------------
Maps merge deeply; a ``null`` in the overlay deletes the key. Lists named in `MERGE_KEYS`
(containers, initContainers, env, volumes, volumeMounts, ports, imagePullSecrets, tolerations)
merge item by item on their key field(s); overlay items without those fields are appended.
Every other list is replaced by the overlay's.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MERGE_KEYS",
    "ConfigMapLoader",
    "TemplateError",
    "TemplateResolver",
    "TemplateSource",
    "builtin_template_dir",
    "merge",
    "parse_documents",
    "substitute",
]

ConfigMapLoader = Callable[[str, str], str]

#: List fields whose items merge by these keys instead of the overlay replacing the list.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("name",),
    "volumeDevices": ("name",),
    "ports": ("name",),
    "imagePullSecrets": ("name",),
    "tolerations": ("key", "effect"),
}

_SUFFIXES = (".yaml", ".yml")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CONFIGMAP_RE = re.compile(r"configmap:([a-z0-9][-a-z0-9.]*)/([-._a-zA-Z0-9]+)")
_PLACEHOLDER_RE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Quoted(str):
    """A quoted YAML string holding a placeholder: its substitution stays a string."""


class _Loader(_BaseLoader):  # type: ignore[misc]
    """Safe YAML loading that remembers which placeholder strings were quoted."""

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:
        value = super().construct_yaml_str(node)
        if node.style in ("'", '"') and "${" in value:
            return _Quoted(value)
        return value  # type: ignore[no-any-return]


_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)


class TemplateError(ValueError):
    """A template cannot be found, parsed or rendered; the message is one line."""


@dataclass(frozen=True)
class TemplateSource:
    """Where a template name resolved to: `origin` is shown in errors (a path or configmap:)."""

    name: str
    origin: str
    text: str


def builtin_template_dir() -> Path:
    """The builtin templates: `_templates` inside an installed wheel, else the repo's templates/."""
    package = Path(__file__).resolve().parent
    wheel_dir = package / "_templates"
    return wheel_dir if wheel_dir.is_dir() else package.parent / "templates"


def _template_names(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {
        p.stem for p in folder.iterdir() if p.suffix in _SUFFIXES and _NAME_RE.fullmatch(p.stem)
    }


class TemplateResolver:
    """Resolve template names to parsed, substituted YAML documents.

    Example:
        >>> resolver = TemplateResolver(folders=["/etc/jupyter/kremote-templates"])
        >>> resolver.load_fragment("gpu", {"gpu": 2})["spec"]["template"]["spec"]["tolerations"]
        [{'key': 'nvidia.com/gpu', 'operator': 'Exists', 'effect': 'NoSchedule'}]
    """

    def __init__(
        self,
        folders: Iterable[str | Path] = (),
        *,
        configmap_loader: ConfigMapLoader | None = None,
        builtin_dir: str | Path | None = None,
        configmap: str | None = None,
    ) -> None:
        self.folders = [Path(f).expanduser() for f in folders]
        self.configmap_loader = configmap_loader
        #: the admin's ConfigMap of templates (key ``<name>.yaml``), searched after the folders
        self.configmap = configmap
        self.builtin_dir = Path(builtin_dir) if builtin_dir else builtin_template_dir()

    def available(self) -> list[str]:
        """Names that resolve without a path: the admin folders' and the builtins'."""
        names: set[str] = set()
        for folder in [*self.folders, self.builtin_dir]:
            names |= _template_names(folder)
        return sorted(names)

    def locate(self, name: str) -> TemplateSource:
        """Find a template's text, following the resolution order in the module docstring."""
        if not isinstance(name, str) or not name.strip():
            raise TemplateError(f"template name {name!r}: expected a name or a path")
        if name.startswith("configmap:"):
            return self._from_configmap(name)
        if name.endswith(_SUFFIXES) or "/" in name or "\\" in name:
            path = Path(name).expanduser()
            if path.is_file():
                return TemplateSource(name, str(path), _read(path))
            if "/" in name or "\\" in name:
                raise TemplateError(f"template file {name} not found")
        stem = name[: -len(Path(name).suffix)] if name.endswith(_SUFFIXES) else name
        if _NAME_RE.fullmatch(stem):
            for folder in [*self.folders, None, self.builtin_dir]:
                if folder is None:  # between the admin's folders and the builtins
                    found = self._from_admin_configmap(name, stem)
                    if found is not None:
                        return found
                    continue
                for suffix in _SUFFIXES:
                    path = folder / f"{stem}{suffix}"
                    if path.is_file():
                        return TemplateSource(name, str(path), _read(path))
        raise TemplateError(
            f"unknown template {name!r}; available: {', '.join(self.available())} "
            "(or a path to a .yaml file)"
        )

    def _from_admin_configmap(self, name: str, stem: str) -> TemplateSource | None:
        if not self.configmap or self.configmap_loader is None:
            return None
        for suffix in _SUFFIXES:
            try:
                text = self.configmap_loader(self.configmap, f"{stem}{suffix}")
            except LookupError:
                continue
            return TemplateSource(name, f"configmap:{self.configmap}/{stem}{suffix}", text)
        return None

    def _from_configmap(self, name: str) -> TemplateSource:
        match = _CONFIGMAP_RE.fullmatch(name)
        if match is None:
            raise TemplateError(f"template {name!r}: expected configmap:NAME/KEY")
        if self.configmap_loader is None:
            raise TemplateError(f"template {name!r}: ConfigMap templates need a Kubernetes backend")
        cm_name, key = match.groups()
        try:
            text = self.configmap_loader(cm_name, key)
        except LookupError as exc:
            raise TemplateError(f"template {name!r}: ConfigMap {cm_name} has no key {key}") from exc
        return TemplateSource(name, name, text)

    def load(self, name: str, variables: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Parse a template into its documents with `${variables}` filled in."""
        source = self.locate(name)
        docs = parse_documents(source.text, source.origin)
        return [substitute(doc, variables or {}, source.origin) for doc in docs]

    def load_fragment(
        self, name: str, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Load a template that layers onto the Job: one mapping, of kind Job if it says a kind."""
        docs = self.load(name, variables)
        kinds = [str(doc.get("kind")) for doc in docs if doc.get("kind") not in (None, "Job")]
        if len(docs) != 1 or kinds:
            what = ", ".join(kinds) if kinds else f"{len(docs)} documents"
            raise TemplateError(
                f"template {name!r} holds {what}, not one Job fragment; apply it with kubectl"
            )
        return docs[0]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template file {path}: cannot read it: {exc}") from exc


def parse_documents(text: str, origin: str) -> list[dict[str, Any]]:
    """Parse YAML text into its non-empty documents; errors name `origin` and the line."""
    try:
        docs = [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise TemplateError(f"template {origin}:{where} invalid YAML: {problem}") from None
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise TemplateError(
                f"template {origin}: document {index + 1} is a {type(doc).__name__}, "
                "expected a mapping such as 'spec: ...'"
            )
    return docs


def substitute(value: Any, variables: Mapping[str, Any], origin: str = "<template>") -> Any:
    """Return a copy of `value` with `${name}` placeholders in strings filled from `variables`."""
    if isinstance(value, dict):
        return {k: substitute(v, variables, origin) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, origin) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(match: re.Match[str]) -> tuple[bool, Any]:
        name, default = match[2], match[3]
        if name in variables and variables[name] is not None:
            return True, variables[name]
        if default is not None:
            return False, default
        known = ", ".join(sorted(k for k, v in variables.items() if v is not None)) or "none"
        raise TemplateError(f"template {origin}: unknown variable ${{{name}}}; known: {known}")

    whole = _PLACEHOLDER_RE.fullmatch(value)
    if whole is not None and not whole[1] and not isinstance(value, _Quoted):
        found, result = lookup(whole)
        return result if found else _scalar(result)

    def replace(match: re.Match[str]) -> str:
        if match[1]:
            return match[0][1:]
        result = lookup(match)[1]
        return result if isinstance(result, str) else str(result)

    return _PLACEHOLDER_RE.sub(replace, value)


def _scalar(text: str) -> Any:
    """Read a default as YAML would read the value had it been written in place."""
    try:
        return yaml.load(text, Loader=_Loader) if text else ""
    except yaml.YAMLError:
        return text


def merge(base: Any, overlay: Any) -> Any:
    """Layer `overlay` onto `base` (see the module docstring); neither argument is changed."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        result = copy.deepcopy(base)
        for key, value in overlay.items():
            if value is None:
                result.pop(key, None)
            elif key in result and isinstance(value, list) and key in MERGE_KEYS:
                result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
            elif key in result:
                result[key] = merge(result[key], value)
            else:
                result[key] = _without_nulls(value)
        return result
    return _without_nulls(overlay)


def _merge_list(base: Any, overlay: list[Any], keys: Sequence[str]) -> list[Any]:
    if not isinstance(base, list):
        return _without_nulls(overlay)  # type: ignore[no-any-return]
    result = copy.deepcopy(base)

    def identity(item: Any) -> tuple[Any, ...] | None:
        if isinstance(item, dict) and any(item.get(k) is not None for k in keys):
            return tuple(item.get(k) for k in keys)
        return None

    for item in overlay:
        ident = identity(item)
        index = next(
            (i for i, old in enumerate(result) if ident is not None and identity(old) == ident),
            None,
        )
        if index is not None:
            result[index] = merge(result[index], item)
        elif _without_nulls(item) not in result:
            result.append(_without_nulls(item))
    return result


def _without_nulls(value: Any) -> Any:
    """A copy without null map values: in an overlay, null means "delete", never "set null"."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value
