"""Hub-wide limits: per user, overridden per JupyterHub group, and the one-line refusals."""

from __future__ import annotations

import pytest
from jupyter_kremote_server.models import ClusterModel, OverLimit
from jupyter_kremote_server.policy import (
    LimitPolicy,
    UserLimits,
    check_lifetime,
    check_start,
    is_admin,
)

from jupyter_kremote.session import ClusterOptions


def held(cluster_id: str, notebook: str = "nb.ipynb", state: str = "running",
         **fields) -> ClusterModel:
    name = fields.pop("name", cluster_id)
    return ClusterModel(id=cluster_id, name=name, notebook=notebook, backend="kubernetes",
                        count=fields.pop("count", 1), state=state, **fields)


def refusal(limits: UserLimits, ask: ClusterOptions, clusters=(), **where) -> str:
    with pytest.raises(OverLimit) as info:
        check_start("alice", limits, ask, list(clusters), **where)
    message = str(info.value)
    assert "\n" not in message and message.startswith("alice: ")
    return message


def test_group_overrides_and_user_entries_take_precedence():
    policy = LimitPolicy(
        {"max_gpus": 1, "max_clusters": 2, "max_cpu": "4", "allowed_images": ["python:*"],
         "max_ttl": "8h"},
        {"gpu-team": {"max_gpus": 4, "max_cpu": "16", "allowed_images": ["nvcr.io/*"]},
         "big": {"max_gpus": 8, "max_cpu": "8000m", "max_ttl": "2d"},
         "free": {"max_clusters": 0}},
        {"carol": {"max_gpus": 2}})
    plain = policy.resolve("bob", [])
    assert (plain.max_gpus, plain.max_clusters, plain.max_cpu, plain.max_ttl) == (
        1, 2, "4", 8 * 3600)
    assert plain.allowed_images == ("python:*",) and plain.max_pods == 0
    # several groups: the most generous value of each limit; lists are joined
    both = policy.resolve("dave", ["big", "gpu-team", "unknown"])
    assert (both.max_gpus, both.max_cpu, both.max_ttl) == (8, "16", 2 * 86400)
    assert both.allowed_images == ("nvcr.io/*",)  # only gpu-team sets it
    assert policy.resolve("erin", ["free"]).max_clusters == 0  # 0 = unlimited wins
    # a user's own entry wins over the groups
    assert policy.resolve("carol", ["big"]).max_gpus == 2
    assert policy.resolve("carol", ["big"]).max_cpu == "8000m"
    assert LimitPolicy({}).resolve("anyone") == UserLimits()


@pytest.mark.parametrize(("setting", "expect"), [
    ({"limits": {"max_gpu": 2}},
     "c.KRemoteService.limits: unknown limit 'max_gpu'; expected one of max_clusters,"),
    ({"limits": {"max_gpus": -1}},
     "c.KRemoteService.limits['max_gpus']: expected a whole number >= 0"),
    ({"limits": {"max_memory": "lots"}},
     "c.KRemoteService.limits['max_memory']: expected a Kubernetes quantity such as 64Gi"),
    ({"limits": {}, "groups": {"gpu-team": {"allowed_images": "nvcr.io/*"}}},
     "c.KRemoteService.group_limits['gpu-team']['allowed_images']: expected a list of names"),
    ({"limits": {}, "users": {"alice": 3}},
     "c.KRemoteService.user_limits['alice']: expected a dict of limits"),
    ({"limits": {"max_ttl": "soon"}}, "c.KRemoteService.limits['max_ttl'] soon:"),
])
def test_bad_config_is_one_line_naming_the_setting(setting, expect):
    with pytest.raises(ValueError) as info:
        LimitPolicy(setting["limits"], setting.get("groups"), setting.get("users"))
    assert str(info.value).startswith(expect) and "\n" not in str(info.value)


def test_refusals_name_the_limit_and_what_is_in_use():
    limits = LimitPolicy({"max_gpus": 2, "max_pods": 3, "max_cpu": "4", "max_memory": "8Gi",
                          "max_clusters": 3}).resolve("alice")
    a = held("nb-a", name="a", gpu=1, cpu="1", mem="2Gi")
    b = held("nb-b", name="b", gpu=1, cpu="1", mem="2Gi")
    gone = held("nb-old", name="old", gpu=4, count=4, state="ended")  # ended: not counted
    assert refusal(limits, ClusterOptions(gpu=1), [a, b, gone]) == (
        "alice: GPU limit 2 reached (2 in use by clusters nb-a, nb-b); this cluster asks "
        "for 1: ask for fewer or shut one down")
    assert refusal(limits, ClusterOptions(gpu=3)) == (
        "alice: GPU limit 2 reached (0 in use); this cluster asks for 3: ask for fewer")
    assert refusal(limits, ClusterOptions(count=2), [a, b]) == (
        "alice: pod limit 3 reached (2 in use by clusters nb-a, nb-b); this cluster asks "
        "for 2: ask for fewer or shut one down")
    assert refusal(limits, ClusterOptions(cpu="2000m", count=2), [a]) == (
        "alice: CPU limit 4 reached (1 in use by cluster nb-a); this cluster asks for 4: "
        "ask for less or shut one down")
    assert refusal(limits, ClusterOptions(mem="7Gi"), [a]) == (
        "alice: memory limit 8Gi reached (2Gi in use by cluster nb-a); this cluster asks "
        "for 7Gi: ask for less or shut one down")
    c = held("nb-c", name="c")
    assert refusal(limits, ClusterOptions(), [a, b, c]) == (
        "alice: cluster limit 3 reached (3 running: clusters nb-a, nb-b, nb-c); "
        "shut one down first")
    # within every limit: no refusal; asking for no GPU passes a full GPU limit
    check_start("alice", limits, ClusterOptions(cpu="1", mem="2Gi"), [a, b])
    check_start("alice", limits, ClusterOptions(), [a, b])


def test_a_new_group_of_a_held_cluster_counts_once():
    limits = UserLimits(max_clusters=1)
    main = held("nb-swimmy", name="swimmy")
    train = held("nb-swimmy-train", name="swimmy-train", group="train")
    check_start("alice", limits, ClusterOptions(group="eval"), [main, train],
                notebook="nb.ipynb", family="swimmy")
    assert refusal(limits, ClusterOptions(), [main, train],
                   notebook="nb.ipynb", family="other") == (
        "alice: cluster limit 1 reached (1 running: cluster nb-swimmy); shut one down first")


def test_templates_images_and_ttl():
    limits = LimitPolicy({"allowed_templates": ["gpu", "shm"], "max_ttl": "1h",
                          "allowed_images": ["python:3.11*", "nvcr.io/nvidia/*"]}
                         ).resolve("alice")
    assert refusal(limits, ClusterOptions(templates=["gpu", "kueue"])) == (
        "alice: template 'kueue' is not allowed; the admin allows gpu, shm")
    assert refusal(limits, ClusterOptions(image="evil/miner:latest")) == (
        "alice: image 'evil/miner:latest' is not allowed; the admin allows python:3.11*, "
        "nvcr.io/nvidia/*")
    assert refusal(limits, ClusterOptions(ttl=7200)) == (
        "alice: TTL limit 1h 00m is less than the 2h 00m asked for; ask for less")
    for image in ("python:3.11-slim", "nvcr.io/nvidia/pytorch:24.01-py3", None):
        check_start("alice", limits, ClusterOptions(image=image, templates=["shm"]), [])
    with pytest.raises(OverLimit) as info:
        check_lifetime("alice", limits, "nb-a", 1800, 5400)
    assert str(info.value) == (
        "alice: TTL limit 1h 00m reached: extending by 30m 00s would give cluster 'nb-a' a "
        "lifetime of 1h 30m; ask for less")
    check_lifetime("alice", limits, "nb-a", 600, 3600)


def test_admins_are_hub_admins_or_holders_of_the_named_scope():
    scope = "custom:kremote:admin"
    assert is_admin({"name": "root", "admin": True, "scopes": []}, scope)
    assert is_admin({"name": "ops", "admin": False, "scopes": ["access:services", scope]},
                    scope)
    assert not is_admin({"name": "bob", "admin": False, "scopes": ["access:services"]}, scope)
    assert not is_admin({"name": "bob", "scopes": [scope]}, "")  # no scope configured
    assert not is_admin({"name": "bob", "admin": "yes"}, scope)


def test_limits_from_a_jupyterhub_style_config_file(tmp_path):
    from jupyter_kremote_server.hub_limits import HubLimits
    from traitlets.config import PyFileConfigLoader

    class KRemoteService(HubLimits):
        """Stands for the hub's service class, which mixes HubLimits in."""

    (tmp_path / "kremote_config.py").write_text(
        'c.KRemoteService.limits = {"max_gpus": 1, "max_ttl": "8h"}\n'
        'c.KRemoteService.group_limits = {"gpu-team": {"max_gpus": 8}}\n'
        'c.KRemoteService.user_limits = {"carol": {"max_gpus": 2}}\n')
    config = PyFileConfigLoader("kremote_config.py", str(tmp_path)).load_config()
    service = KRemoteService(config=config)
    assert service.limits_for({"name": "alice", "groups": ["gpu-team"]}).max_gpus == 8
    assert service.limits_for({"name": "bob", "groups": []}).max_gpus == 1
    assert service.limits_for({"name": "carol", "groups": ["gpu-team"]}).max_gpus == 2
    assert service.limits_for({"name": "bob"}).max_ttl == 8 * 3600
    assert service.is_admin({"name": "ops", "scopes": ["custom:kremote:admin"]})
    service.admin_scope = ""
    assert not service.is_admin({"name": "ops", "scopes": ["custom:kremote:admin"]})

    broken = KRemoteService(config=config)
    broken.group_limits = {"gpu-team": {"gpus": 8}}
    with pytest.raises(ValueError, match=r"^c\.KRemoteService\.group_limits\['gpu-team'\]: "
                                         r"unknown limit 'gpus'; expected one of"):
        broken.limit_policy  # noqa: B018 - the start-up check
