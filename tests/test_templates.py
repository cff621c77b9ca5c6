"""Templates: resolution, layering, substitution, and the rendered manifests of every builtin.

Every rendered manifest is checked strictly against the Kubernetes 1.33 API schema.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import jupyter_kremote.templates as templates_module
from jupyter_kremote.manifests import (
    ManifestError,
    job_name,
    make_network_policy,
    make_owner_reference,
    parse_selector,
    redact,
    render_cluster,
    render_rbac,
    render_service_rbac,
    secret_name,
    to_yaml,
    validate,
)
from jupyter_kremote.spec import PodSpec, SpecError
from jupyter_kremote.templates import (
    TemplateError,
    TemplateResolver,
    builtin_template_dir,
    merge,
    substitute,
)

KUBE = "1.33.0"
BUILTINS = ["base", "gpu", "kueue", "object-storage", "pip-install", "rbac", "service-rbac",
            "shm", "tensorboard"]
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
REPO = Path(__file__).resolve().parent.parent


def render(spec: PodSpec, resolver: TemplateResolver | None = None, **kwargs: Any) -> list[dict]:
    options: dict[str, Any] = {
        "cluster_id": "c1",
        "user": "ann",
        "notebook": "work/a.ipynb",
        "resolver": resolver or TemplateResolver(),
        "namespace": "ml",
        "key": "0123abcd",
        "kube_version": KUBE,
    }
    options.update(kwargs)
    return render_cluster(spec, **options)


def pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def agent(job: dict) -> dict:
    (container,) = [c for c in pod(job)["containers"] if c["name"] == "agent"]
    return container


def env(job: dict) -> dict[str, dict]:
    return {e["name"]: e for e in agent(job)["env"]}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- builtins ---------------------------------------------------------------------------------


def test_builtins_are_found_in_the_source_checkout() -> None:
    assert builtin_template_dir() == REPO / "templates"
    assert TemplateResolver().available() == BUILTINS


def test_builtins_are_found_inside_an_installed_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "jupyter_kremote"
    write(package / "_templates" / "only.yaml", "spec: {}\n")
    monkeypatch.setattr(templates_module, "__file__", str(package / "templates.py"))
    assert builtin_template_dir() == package / "_templates"
    assert TemplateResolver().available() == ["only"]


def test_base_job() -> None:
    spec = PodSpec(count=3, ttl=5400.5, cpu="2", mem="8Gi", image="ghcr.io/x/agent:1")
    secret, job = render(spec)
    validate(job, KUBE)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == job_name("c1") == "jupyter-kremote-c1"
    assert job["metadata"]["namespace"] == "ml"
    labels = {
        "app.kubernetes.io/name": "jupyter-kremote-agent",
        "app.kubernetes.io/managed-by": "jupyter-kremote",
        "kremote/cluster": "c1",
        "kremote/user": "ann",
        "kremote/notebook": label_of("work/a.ipynb"),
        "kremote/group": "main",
        "kremote/family": "c1",
    }
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"]["kremote/notebook-path"] == "work/a.ipynb"
    s = job["spec"]
    assert (s["backoffLimit"], s["completionMode"], s["parallelism"], s["completions"]) == (
        0,
        "Indexed",
        3,
        3,
    )
    assert s["activeDeadlineSeconds"] == 5401
    assert pod(job)["restartPolicy"] == "Never"
    assert pod(job)["automountServiceAccountToken"] is False
    container = agent(job)
    assert container["image"] == "ghcr.io/x/agent:1"
    assert container["command"] == ["python", "-m", "jupyter_kremote.agent"]
    assert container["ports"] == [{"name": "agent", "containerPort": 5555, "protocol": "TCP"}]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "agent"}
    assert container["resources"] == {
        "limits": {"cpu": "2", "memory": "8Gi"},
        "requests": {"cpu": "2", "memory": "8Gi"},
    }
    e = env(job)
    assert {k: v.get("value") for k, v in e.items() if "value" in v} == {
        "KREMOTE_PORT": "5555",
        "KREMOTE_COUNT": "3",
        "KREMOTE_TTL": "5401",
        "KREMOTE_CLUSTER": "c1",
    }
    assert e["KREMOTE_RANK"] == {
        "name": "KREMOTE_RANK",
        "valueFrom": {
            "fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            }
        },
    }
    assert e["KREMOTE_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": secret_name("c1"), "key": "KREMOTE_KEY"}
    }
    assert secret["metadata"]["name"] == "jupyter-kremote-c1-key"
    assert base64.b64decode(secret["data"]["KREMOTE_KEY"]) == b"0123abcd"


@pytest.mark.parametrize("names", [[], ["gpu"], ["gpu", "shm", "object-storage"]])
def test_base_pod_meets_podsecurity_restricted(names: list[str]) -> None:
    """What PodSecurity "restricted" requires of every container and of the pod."""
    _, job = render(PodSpec(templates=names, gpu=1 if "gpu" in names else 0))
    p = pod(job)
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["runAsUser"] != 0
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in p["containers"] + p.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert not sc.get("privileged") and "add" not in sc["capabilities"]
    assert all(set(v) <= {"name", "emptyDir", "secret", "configMap", "projected",
                          "persistentVolumeClaim", "downwardAPI", "ephemeral", "csi"}
               for v in p.get("volumes", []))  # no hostPath
    assert agent(job)["workingDir"] == "/kremote"  # writable for the non-root user


def label_of(text: str) -> str:
    from jupyter_kremote.spec import label_value

    return label_value(text)


def test_base_default_image_without_flag() -> None:
    _, job = render(PodSpec())
    assert agent(job)["image"] == "python:3.11-slim"
    assert "resources" not in agent(job)


COMBINATIONS = [
    [],
    ["gpu"],
    ["shm"],
    ["kueue"],
    ["object-storage"],
    ["pip-install"],
    ["gpu", "kueue", "object-storage", "shm"],
    ["pip-install", "gpu", "kueue", "object-storage", "shm"],
    ["tensorboard"],
    ["pip-install", "gpu", "kueue", "shm", "tensorboard"],
]


@pytest.mark.parametrize("names", COMBINATIONS, ids=lambda n: "+".join(["base", *n]))
def test_builtin_combinations_validate_strictly(names: list[str]) -> None:
    secret, job = render(PodSpec(templates=names, cpu="500m", mem="1Gi", gpu_type="NVIDIA-L4"))
    validate(secret, KUBE)
    validate(job, KUBE)
    p, container = pod(job), agent(job)
    assert p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    has_shm = {"name": "dshm", "emptyDir": {"medium": "Memory"}} in p.get("volumes", [])
    assert has_shm == ("gpu" in names or "shm" in names)
    if has_shm:
        assert container["volumeMounts"] == [{"name": "kremote-work", "mountPath": "/kremote"},
                                             {"name": "dshm", "mountPath": "/dev/shm"}]
        assert p["volumes"] == [{"name": "kremote-work", "emptyDir": {}},
                                {"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if "gpu" in names:
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert p["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"]
        assert "tolerations" not in p
    if "kueue" in names:
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "default"
        assert job["spec"]["suspend"] is True
    else:
        assert "suspend" not in job["spec"]
    if "object-storage" in names:
        assert container["envFrom"] == [
            {"secretRef": {"name": "kremote-object-storage", "optional": True}}
        ]
    if "pip-install" in names:
        assert container["command"] == ["sh", "-c"]
        (script,) = container["args"]
        assert '"jupyter-kremote==0.1.0"' in script
        assert script.endswith("&& exec python -m jupyter_kremote.agent")
    else:
        assert container["command"] == ["python", "-m", "jupyter_kremote.agent"]


def test_gpu_flag_implies_gpu_template_and_sets_count() -> None:
    _, job = render(PodSpec(gpu=2), gpu_type_label="example.com/gpu")
    assert agent(job)["resources"]["limits"] == {"nvidia.com/gpu": 2}
    assert pod(job)["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nodeSelector" not in pod(job)
    _, job = render(PodSpec(gpu=1, gpu_type="H100"), gpu_type_label="example.com/gpu")
    assert pod(job)["nodeSelector"] == {"example.com/gpu": "H100"}


def test_admin_variables_fill_template_defaults() -> None:
    _, job = render(
        PodSpec(templates=["kueue", "object-storage"]),
        variables={"queue": "team-a", "object_storage_secret": "s3-creds", "name": "ignored"},
    )
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert agent(job)["envFrom"][0]["secretRef"]["name"] == "s3-creds"
    assert job["metadata"]["name"] == "jupyter-kremote-c1"  # identity beats admin variables


def test_rbac_objects_and_minimal_verbs() -> None:
    docs = render_rbac(namespace="ml", kube_version=KUBE)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    for doc in docs:
        validate(doc, KUBE)
        assert doc["metadata"]["namespace"] == "ml"
    role = docs[1]
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert verbs == {
        ("batch", "jobs"): {"create", "list", "watch", "patch", "delete"},
        ("", "pods"): {"list", "watch", "delete"},
        ("", "pods/log"): {"get"},
        ("", "pods/portforward"): {"get", "create"},
        ("", "secrets"): {"create", "get", "list", "patch", "delete"},  # list: orphan sweep
        ("", "configmaps"): {"get"},
        ("", "events"): {"list", "watch"},
        ("", "resourcequotas"): {"list"},  # doctor
        ("networking.k8s.io", "networkpolicies"): {"create", "list"},  # per cluster; doctor
        ("kueue.x-k8s.io", "localqueues"): {"get"},  # doctor, a queued cell's ClusterQueue
        ("kueue.x-k8s.io", "workloads"): {"get", "list"},  # a queued cluster's Workload
        ("visibility.kueue.x-k8s.io", "localqueues/pendingworkloads"): {"get"},  # position
    }
    assert sum(len(rule["verbs"]) for rule in role["rules"]) == 26  # no duplicate rules
    binding = docs[2]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "jupyter-kremote",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "jupyter-kremote", "namespace": "ml"}
    ]
    custom = render_rbac(namespace="ml", service_account="hub-user", kube_version=KUBE)
    assert custom[0]["metadata"]["name"] == custom[2]["subjects"][0]["name"] == "hub-user"


def test_service_rbac_objects_and_optional_kueue_rules() -> None:
    docs = render_service_rbac(namespace="jhub", service_account="hub", kube_version=KUBE)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    assert docs[2]["subjects"] == [{"kind": "ServiceAccount", "name": "hub",
                                    "namespace": "jhub"}]
    groups = {g for rule in docs[1]["rules"] for g in rule["apiGroups"]}
    assert groups == {"", "batch", "networking.k8s.io"}  # no port-forward, doctor or Kueue
    resources = {r for rule in docs[1]["rules"] for r in rule["resources"]}
    assert "pods/portforward" not in resources and "resourcequotas" not in resources
    with_kueue = render_service_rbac(namespace="jhub", kueue=True, kube_version=KUBE)
    assert [d["metadata"]["name"] for d in with_kueue[3:]] == [
        "jupyter-kremote-service-kueue", "jupyter-kremote-service-kueue"]
    with pytest.raises(TemplateError, match="not one Job fragment"):
        render(PodSpec(templates=["service-rbac"]))


def test_rbac_is_not_a_job_fragment() -> None:
    with pytest.raises(TemplateError, match="holds ServiceAccount, Role, RoleBinding, not one Job"):
        render(PodSpec(templates=["rbac"]))


# --- layering ---------------------------------------------------------------------------------


def test_merge_maps_deeply_and_lists_by_name() -> None:
    base = {
        "spec": {
            "containers": [
                {
                    "name": "agent",
                    "image": "a",
                    "command": ["x", "y"],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                },
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
            "tolerations": [{"key": "k", "effect": "NoSchedule", "operator": "Exists"}],
            "nodeSelector": {"zone": "a"},
        }
    }
    overlay = {
        "spec": {
            "containers": [
                {
                    "name": "agent",
                    "command": ["z"],
                    "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                    "volumeMounts": [{"name": "v", "readOnly": True}],
                },
                {"name": "sidecar", "image": "s"},
            ],
            "volumes": [{"name": "w", "emptyDir": {"medium": "Memory"}}],
            "tolerations": [
                {"key": "k", "effect": "NoSchedule", "operator": "Equal", "value": "x"},
                {"key": "gpu", "effect": "NoSchedule"},
            ],
            "nodeSelector": {"disk": "ssd"},
        }
    }
    before = repr(base), repr(overlay)
    result = merge(base, overlay)
    assert (repr(base), repr(overlay)) == before  # inputs untouched
    assert result == {
        "spec": {
            "containers": [
                {
                    "name": "agent",
                    "image": "a",
                    "command": ["z"],
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "B", "value": "20"},
                        {"name": "C", "value": "3"},
                    ],
                    "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": True}],
                },
                {"name": "sidecar", "image": "s"},
            ],
            "volumes": [
                {"name": "v", "emptyDir": {}},
                {"name": "w", "emptyDir": {"medium": "Memory"}},
            ],
            "tolerations": [
                {"key": "k", "effect": "NoSchedule", "operator": "Equal", "value": "x"},
                {"key": "gpu", "effect": "NoSchedule"},
            ],
            "nodeSelector": {"zone": "a", "disk": "ssd"},
        }
    }


def test_merge_replaces_other_lists_and_null_deletes() -> None:
    base = {
        "args": ["a", "b"],
        "probe": {"port": 1},
        "res": {"limits": {"cpu": "1", "m": "2"}},
        "envFrom": [{"secretRef": {"name": "x"}}],
    }
    overlay = {
        "args": ["c"],
        "probe": None,
        "res": {"limits": {"cpu": None}},
        "envFrom": [{"configMapRef": {"name": "y"}}],
        "new": {"keep": 1, "drop": None},
        "absent": None,
    }
    assert merge(base, overlay) == {
        "args": ["c"],
        "res": {"limits": {"m": "2"}},
        "envFrom": [{"configMapRef": {"name": "y"}}],
        "new": {"keep": 1},
    }


def test_merge_env_value_to_value_from() -> None:
    base = {"env": [{"name": "A", "value": "1"}]}
    overlay = {"env": [{"name": "A", "value": None, "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]}
    assert merge(base, overlay) == {
        "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]
    }


def test_user_template_layers_between_builtins_and_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path / "team.yaml",
        """\
        metadata:
          name: evil
          labels: {kremote/cluster: evil, team: vision}
        spec:
          parallelism: 9
          template:
            spec:
              priorityClassName: high
              containers:
                - name: agent
                  image: team/image:2
                  env:
                    - {name: KREMOTE_PORT, value: "1"}
                    - {name: TEAM, value: vision}
                    - {name: A, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
                  resources:
                    limits: {memory: 2Gi}
                    requests: {memory: 2Gi}
                - name: sidecar
                  image: busybox
        """,
    )
    _, job = render(PodSpec(templates=[str(path)], count=2, env={"A": "from-flag"}))
    assert job["metadata"]["name"] == "jupyter-kremote-c1"
    assert job["metadata"]["labels"]["kremote/cluster"] == "c1"
    assert job["metadata"]["labels"]["team"] == "vision"
    assert job["spec"]["parallelism"] == 2
    assert pod(job)["priorityClassName"] == "high"
    assert [c["name"] for c in pod(job)["containers"]] == ["agent", "sidecar"]
    container = agent(job)
    assert container["image"] == "team/image:2"  # template beats base ...
    assert container["resources"]["limits"] == {"memory": "2Gi"}
    e = env(job)
    assert e["KREMOTE_PORT"] == {"name": "KREMOTE_PORT", "value": "5555"}  # ... identity wins
    assert e["TEAM"]["value"] == "vision"
    assert e["A"] == {"name": "A", "value": "from-flag"}  # the template's valueFrom is gone
    _, job = render(PodSpec(templates=[str(path)], image="flag/image", mem="4Gi"))
    assert agent(job)["image"] == "flag/image"  # flags beat templates
    assert agent(job)["resources"]["limits"] == {"memory": "4Gi"}


def test_a_template_that_drops_the_agent_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "spec: {template: {spec: {containers: null}}}\n")
    with pytest.raises(ManifestError) as info:  # the flags re-add the agent, but bare
        render(PodSpec(templates=[str(path)]))
    assert str(info.value) == (
        "Job jupyter-kremote-c1: spec.template.spec.containers[0].image: required: every "
        "container needs an image"
    )
    _, job = render(PodSpec(templates=[str(path)], image="python:3.12"))
    assert agent(job)["image"] == "python:3.12" and "command" not in agent(job)


# --- substitution -----------------------------------------------------------------------------


def test_substitute_rules() -> None:
    variables = {"count": 4, "name": "job", "evil": "x\nkind: Secret"}
    doc = yaml.safe_load('{a: "${count}", b: "${name}-x", c: "$${name}", d: "$(HOME)"}')
    assert substitute(doc, variables) == {"a": 4, "b": "job-x", "c": "${name}", "d": "$(HOME)"}
    assert substitute({"e": "${evil}"}, variables) == {"e": "x\nkind: Secret"}
    assert substitute({"f": "${missing:-3}", "g": "n-${missing:-3}", "h": "${x:-}"}, {}) == {
        "f": 3,
        "g": "n-3",
        "h": "",
    }


def test_quoted_placeholders_stay_text(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "a: ${count}\nb: \"${count}\"\nc: '${count}'\n")
    assert TemplateResolver().load(str(path), {"count": 4}) == [{"a": 4, "b": "4", "c": "4"}]


def test_unknown_variable_lists_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "t.yaml", "a: ${nope}\n")
    with pytest.raises(TemplateError) as info:
        TemplateResolver().load(str(path), {"count": 1, "name": "x"})
    assert str(info.value) == f"template {path}: unknown variable ${{nope}}; known: count, name"


# --- resolution -------------------------------------------------------------------------------


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "admin1", tmp_path / "admin2"
    write(first / "gpu.yaml", "a: first\n")
    write(second / "gpu.yaml", "a: second\n")
    write(second / "extra.yml", "a: extra\n")
    write(tmp_path / "cwd" / "gpu.yaml", "a: local\n")
    monkeypatch.chdir(tmp_path / "cwd")
    resolver = TemplateResolver(folders=[first, second])
    assert resolver.load("gpu.yaml") == [{"a": "local"}]  # a local file beats the folders
    assert resolver.locate("gpu.yaml").origin == "gpu.yaml"
    assert resolver.load("gpu") == [{"a": "first"}]  # the first folder beats later ones
    assert resolver.locate("gpu").origin == str(first / "gpu.yaml")
    assert resolver.load("extra") == [{"a": "extra"}]
    assert resolver.locate("shm").origin == str(builtin_template_dir() / "shm.yaml")
    assert resolver.load(str(second / "gpu.yaml")) == [{"a": "second"}]
    assert TemplateResolver().locate("gpu").origin == str(builtin_template_dir() / "gpu.yaml")
    assert resolver.available() == [*BUILTINS[:1], "extra", *BUILTINS[1:]]


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"^template file .*/nope\.yaml not found$"):
        TemplateResolver().locate(str(tmp_path / "nope.yaml"))


def test_configmap_templates_go_through_the_loader() -> None:
    calls: list[tuple[str, str]] = []

    def loader(name: str, key: str) -> str:
        calls.append((name, key))
        if key != "gpu.yaml":
            raise KeyError(key)
        return "spec:\n  suspend: ${flag:-false}\n"

    resolver = TemplateResolver(configmap_loader=loader)
    assert resolver.load("configmap:kremote-templates/gpu.yaml") == [{"spec": {"suspend": False}}]
    assert calls == [("kremote-templates", "gpu.yaml")]
    with pytest.raises(TemplateError, match="ConfigMap kremote-templates has no key other.yaml"):
        resolver.load("configmap:kremote-templates/other.yaml")
    with pytest.raises(TemplateError, match="expected configmap:NAME/KEY"):
        resolver.load("configmap:no-key")
    with pytest.raises(TemplateError, match="need a Kubernetes backend"):
        TemplateResolver().load("configmap:kremote-templates/gpu.yaml")


def test_unknown_template_lists_what_exists(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as info:
        TemplateResolver().locate("gpux")
    assert str(info.value) == (
        "unknown template 'gpux'; available: base, gpu, kueue, object-storage, pip-install, "
        "rbac, service-rbac, shm, tensorboard (or a path to a .yaml file)"
    )
    write(tmp_path / "big-gpu.yaml", "a: 1\n")
    with pytest.raises(TemplateError, match=r"available: base, big-gpu, gpu,"):
        render(PodSpec(templates=["gpux"]), TemplateResolver(folders=[tmp_path]))


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yaml", "spec:\n  template:\n    - a\n   b: [\n")
    with pytest.raises(TemplateError) as info:
        TemplateResolver().load(str(path))
    message = str(info.value)
    assert message.startswith(f"template {path}: line 4, column ")
    assert "invalid YAML" in message and "\n" not in message
    write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(
        TemplateError, match=r"list\.yaml: document 1 is a list, expected a mapping"
    ):
        TemplateResolver(folders=[tmp_path]).load("list")
    resolver = TemplateResolver(configmap_loader=lambda name, key: "a: [\n")
    with pytest.raises(TemplateError, match=r"^template configmap:cm/k: line 2, column 1"):
        resolver.load("configmap:cm/k")


# --- validation -------------------------------------------------------------------------------


def test_invalid_quantity_is_refused_with_the_field_path() -> None:
    _, job = render(PodSpec(mem="8Gi"))
    agent(job)["resources"]["limits"]["memory"] = "4G1"
    with pytest.raises(ManifestError) as info:
        validate(job, KUBE)
    assert str(info.value).startswith(
        "Job jupyter-kremote-c1: spec.template.spec.containers[0].resources.limits.memory: "
        "'4G1' is not valid: not a Kubernetes quantity"
    )
    with pytest.raises(SpecError, match="--mem 4G1"):
        PodSpec(mem="4G1")


def test_unknown_field_in_a_template_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "typo.yaml",
        "spec: {template: {spec: {containers: [{name: agent, imagee: x}]}}}\n",
    )
    with pytest.raises(ManifestError) as info:
        render(PodSpec(templates=[str(path)]))
    assert str(info.value) == (
        "Job jupyter-kremote-c1: spec.template.spec.containers[0]: Additional properties are "
        "not allowed ('imagee' was unexpected)"
    )


def test_schema_type_error_and_bad_label_are_refused(tmp_path: Path) -> None:
    _, job = render(PodSpec())
    job["spec"]["parallelism"] = "two"
    with pytest.raises(ManifestError, match=r"^Job jupyter-kremote-c1: spec\.parallelism: 'two' "):
        validate(job, KUBE)
    _, job = render(PodSpec())
    job["metadata"]["labels"]["team"] = "a b"
    with pytest.raises(ManifestError, match=r"metadata\.labels\.team: 'a b' is not valid"):
        validate(job, KUBE)
    with pytest.raises(ManifestError, match="Couldn't find schema for kind Foo"):
        validate({"apiVersion": "v1", "kind": "Foo", "metadata": {"name": "x"}}, KUBE)


# --- secrets and labels -----------------------------------------------------------------------

SECRET_VALUE = "hf_SECRETVALUE123"
KEY = "KEYVALUE-abcdef0123"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_secret_values_stay_out_of_the_job_and_printed_yaml() -> None:
    spec = PodSpec(env={"PLAIN": "visible"}, secret_env={"HF_TOKEN": SECRET_VALUE})
    secret, job = render(spec, key=KEY, agent_secrets={"KREMOTE_CURVE": "curve-secret"})
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "KREMOTE_KEY": KEY,
        "KREMOTE_CURVE": "curve-secret",
        "HF_TOKEN": SECRET_VALUE,
    }
    raw_job = to_yaml([job], redact_secrets=False)
    printed = to_yaml([secret, job])
    for text in (raw_job, printed):
        for value in (SECRET_VALUE, KEY, "curve-secret", b64(SECRET_VALUE), b64(KEY)):
            assert value not in text
    assert "visible" in raw_job
    assert printed.count("<redacted>") == 3
    assert b64(SECRET_VALUE) in to_yaml([secret], redact_secrets=False)  # the check can fail
    e = env(job)
    assert e["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "jupyter-kremote-c1-key", "key": "HF_TOKEN"}},
    }
    assert e["PLAIN"] == {"name": "PLAIN", "value": "visible"}
    assert secret["data"]["HF_TOKEN"] == b64(SECRET_VALUE)  # redact() copied, not mutated
    assert redact([secret])[0]["data"] == {k: "<redacted>" for k in secret["data"]}


def test_dry_run_renders_without_a_key() -> None:
    secret, _ = render(PodSpec(secret_env={"T": SECRET_VALUE}), key=None, redact=True)
    assert secret["data"] == {"KREMOTE_KEY": "<redacted>", "T": "<redacted>"}
    for key in (None, ""):
        with pytest.raises(ValueError, match="key: required unless redact=True"):
            render(PodSpec(), key=key)


def test_to_yaml_reads_back_like_kubectl_output() -> None:
    docs = render(PodSpec(templates=["pip-install"]))
    text = to_yaml(docs, redact_secrets=False)
    assert text.startswith("---\napiVersion: v1\nkind: Secret\n")
    assert "\n---\napiVersion: batch/v1\nkind: Job\n" in text
    assert list(yaml.safe_load_all(text)) == docs


def test_labels_are_label_safe_for_odd_names() -> None:
    notebook = "My Notebooks/Ünïcode test (1).ipynb"
    user = "Ann.Example+x@corp.com"
    secret, job = render(PodSpec(), notebook=notebook, user=user, cluster_id="Cluster_1")
    for labels in (
        job["metadata"]["labels"],
        job["spec"]["template"]["metadata"]["labels"],
        secret["metadata"]["labels"],
    ):
        for value in labels.values():
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, value
    labels = job["metadata"]["labels"]
    assert labels["kremote/notebook"].startswith("my-notebooks-unicode-test-1-ipynb-")
    assert labels["kremote/user"].startswith("ann-example-x-corp-com-")
    assert labels["kremote/group"] == "main"
    _, train = render(PodSpec(group="train"))
    assert train["spec"]["template"]["metadata"]["labels"]["kremote/group"] == "train"
    with pytest.raises(SpecError, match=r"--group 'Train X': use 1-20 lowercase letters"):
        PodSpec(group="Train X")
    assert job["metadata"]["annotations"] == {
        "kremote/user-name": user,
        "kremote/notebook-path": notebook,
    }
    assert env(job)["KREMOTE_CLUSTER"]["value"] == "Cluster_1"
    assert re.fullmatch(r"jupyter-kremote-cluster-1-[0-9a-f]{8}", job["metadata"]["name"])
    long_id = "x" * 100
    assert len(job_name(long_id)) == 52 and job_name(long_id) != job_name(long_id + "y")


def test_owner_reference_on_every_object() -> None:
    ref = make_owner_reference("jupyter-ann", "1234-uid")
    assert ref == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "jupyter-ann",
        "uid": "1234-uid",
        "controller": False,
        "blockOwnerDeletion": False,
    }
    secret, job = render(PodSpec(), owner_reference=ref)
    assert secret["metadata"]["ownerReferences"] == job["metadata"]["ownerReferences"] == [ref]
    _, job = render(PodSpec())
    assert "ownerReferences" not in job["metadata"]


def test_network_policy_admits_the_owner_and_the_family_only() -> None:
    _, job = render(PodSpec(group="train"), family="exp")
    pol = make_network_policy(job, owner_selector={"hub.jupyter.org/username": "ann"},
                              kube_version=KUBE)
    validate(pol, KUBE)
    assert pol["metadata"]["name"] == job["metadata"]["name"]
    assert pol["metadata"]["namespace"] == "ml"
    assert pol["spec"] == {
        "podSelector": {"matchLabels": {"kremote/cluster": "c1",
                                        "app.kubernetes.io/managed-by": "jupyter-kremote"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"hub.jupyter.org/username": "ann"}}},
            {"podSelector": {"matchLabels": {
                "app.kubernetes.io/managed-by": "jupyter-kremote", "kremote/user": "ann",
                "kremote/notebook": label_of("work/a.ipynb"), "kremote/family": "exp"}}},
        ]}],
    }
    # every group of the family carries the peers' labels, so ranks reach each other
    peers = pol["spec"]["ingress"][0]["from"][1]["podSelector"]["matchLabels"]
    _, other = render(PodSpec(group="prep"), family="exp", cluster_id="c2")
    assert peers.items() <= other["spec"]["template"]["metadata"]["labels"].items()
    no_owner = make_network_policy(job, owner_selector=None, kube_version=KUBE)
    assert len(no_owner["spec"]["ingress"][0]["from"]) == 1
    with pytest.raises(ManifestError, match=r"matchLabels.*'bad value!' is not valid"):
        make_network_policy(job, owner_selector={"team": "bad value!"}, kube_version=KUBE)


def test_network_policy_admits_the_service_holding_the_cluster() -> None:
    """Behind JupyterHub the kremote service pings, watches and stops the agents itself:
    KREMOTE_HOLDER_SELECTOR (its pods' labels) is admitted besides the owner and the peers."""
    _, job = render(PodSpec())
    pol = make_network_policy(job, owner_selector={"hub.jupyter.org/username": "ann"},
                              holder_selector={"app.kubernetes.io/name": "kremote-service"},
                              kube_version=KUBE)
    validate(pol, KUBE)
    sources = pol["spec"]["ingress"][0]["from"]
    assert len(sources) == 3 and sources[-1] == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kremote-service"}}}


def test_owner_selector_parsing_names_the_setting() -> None:
    assert parse_selector("hub.jupyter.org/username=ann, component=singleuser-server") == {
        "hub.jupyter.org/username": "ann", "component": "singleuser-server"}
    assert parse_selector("") == {}
    with pytest.raises(ValueError, match="KREMOTE_OWNER_SELECTOR 'ann': expected key=value"):
        parse_selector("ann", "KREMOTE_OWNER_SELECTOR")


def test_curve_client_allowlist_is_plain_env() -> None:
    secret, job = render(PodSpec(), curve_clients=["pub1", "pub2"],
                         owner_secrets={"KREMOTE_CURVE_CLIENT_SECRET": "owner-half"})
    assert env(job)["KREMOTE_CURVE_CLIENTS"] == {"name": "KREMOTE_CURVE_CLIENTS",
                                                 "value": "pub1,pub2"}
    # the owner's secret half is kept in the Secret for the owner, never given to a pod
    assert secret["data"]["KREMOTE_CURVE_CLIENT_SECRET"] == b64("owner-half")
    assert "owner-half" not in json.dumps(job) and "KREMOTE_CURVE_CLIENT_SECRET" not in env(job)
    with pytest.raises(ValueError, match="owner_secrets KREMOTE_KEY"):
        render(PodSpec(), owner_secrets={"KREMOTE_KEY": "x"})
    _, job = render(PodSpec())
    assert "KREMOTE_CURVE_CLIENTS" not in env(job)
    # Z85 keys may hold "$$" or "$(NAME)": the pod sees them as they are after the kubelet's
    # $(VAR) expansion (kubesim's, as Kubernetes does it)
    from kubesim.podenv import expand

    key = "ab$$cd$(KREMOTE_CLUSTER)ef" + "x" * 14
    _, job = render(PodSpec(), curve_clients=[key])
    value = env(job)["KREMOTE_CURVE_CLIENTS"]["value"]
    assert expand(value, {"KREMOTE_CLUSTER": "c1"}) == key


def test_spec_namespace_wins_and_is_checked() -> None:
    secret, job = render(PodSpec(namespace="team-a"), namespace="ml")
    assert secret["metadata"]["namespace"] == job["metadata"]["namespace"] == "team-a"
    with pytest.raises(SpecError, match="namespace 'ML'"):
        render(PodSpec(), namespace="ML")


def test_modules_do_not_import_the_kubernetes_client() -> None:
    code = textwrap.dedent(f"""
        import sys, types
        package = types.ModuleType("jupyter_kremote")
        package.__path__ = [{str(REPO / "jupyter_kremote")!r}]
        sys.modules["jupyter_kremote"] = package
        import jupyter_kremote.manifests, jupyter_kremote.templates, jupyter_kremote.spec
        print(sorted(m for m in sys.modules if m.startswith(("kubernetes", "jinja2"))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_admin_configmap_templates_come_after_folders_and_before_builtins(tmp_path) -> None:
    """``c.KRemoteApp.template_configmap``: ``-t NAME`` finds key NAME.yaml in that ConfigMap."""
    calls: list[tuple[str, str]] = []
    data = {"a100.yaml": "spec:\n  template:\n    spec:\n      priorityClassName: gpu-high\n",
            "gpu.yaml": "spec:\n  template:\n    spec:\n      priorityClassName: from-cm\n"}

    def loader(name: str, key: str) -> str:  # what KubernetesBackend reads from the API
        calls.append((name, key))
        if key not in data:
            raise KeyError(key)
        return data[key]

    folder = tmp_path / "admin"
    folder.mkdir()
    (folder / "gpu.yaml").write_text("spec:\n  template:\n    spec:\n"
                                     "      priorityClassName: from-folder\n")
    resolver = TemplateResolver(folders=[folder], configmap_loader=loader,
                                configmap="kremote-templates")
    src = resolver.locate("a100")
    assert src.origin == "configmap:kremote-templates/a100.yaml"
    assert resolver.load_fragment("a100", {})["spec"]["template"]["spec"] == {
        "priorityClassName": "gpu-high"}
    assert resolver.locate("gpu").origin == str(folder / "gpu.yaml")  # folders come first
    assert resolver.locate("shm").origin.endswith("shm.yaml")  # then the builtins
    assert ("kremote-templates", "shm.yaml") in calls
    with pytest.raises(TemplateError, match="unknown template 'nope'"):
        resolver.locate("nope")
